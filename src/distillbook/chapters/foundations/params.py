"""The chapter's parameters: the paper's constants as field defaults, and what the profiles change."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from distillbook.core import claims as claims_lib
from distillbook.core.params import ChapterParams

CHAPTER = "foundations"
PositiveInt = Annotated[int, Field(ge=1)]


class Params(ChapterParams):
    # the teacher: Hinton et al.'s MNIST teacher was regularised (dropout, jittered inputs) and made 2.2x fewer
    # errors than its student; here a small ConvNet trained on jittered inputs plays that part
    teacher_width: int = Field(32, ge=1, description="teacher ConvNet channels")
    teacher_depth: int = Field(2, ge=1, le=3, description="teacher ConvNet blocks (8x8 images allow 3)")
    teacher_jitter: int = Field(1, ge=0, le=2, description="teacher's random input shift, in pixels (8x8 images)")
    teacher_steps: int = Field(ge=1, le=100_000)
    teacher_lr: float = Field(3e-3, gt=0.0, le=1.0)
    # the students: unregularised, as the paper's (2x800 units; 2x30 for its small-net temperature remark)
    wide_hidden: list[PositiveInt] = Field(min_length=1, description="the wide student's hidden widths (the "
                                           "paper's 2x800 net, at this scale)")
    small_hidden: list[PositiveInt] = Field(min_length=1, description="the small student's hidden widths (the "
                                            "paper's 2x30 net, 4% of its 2x800 net's width)")
    wide_steps: int = Field(ge=1, le=100_000)
    small_steps: int = Field(ge=1, le=100_000)
    batch_size: int = Field(128, ge=1, le=4096)
    lr: float = Field(3e-3, gt=0.0, le=1.0, description="students' peak AdamW learning rate (cosine decay to 0)")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the soft-target term (1 - alpha on labels)")
    diagnosis_alpha: float = Field(0.9, ge=0.0, le=1.0, description="the headline's diagnosis: the wide student at "
                                   "mnist_temperature with this weight (the paper: a considerably lower weight on "
                                   "the labels works best)")
    # temperatures, fixed in advance from the paper
    mnist_temperature: float = Field(20.0, gt=1.0, description="the paper's MNIST temperature (20)")
    wide_alike_temperature: float = Field(10.0, gt=8.0, description="'all temperatures above 8 gave fairly similar "
                                          "results' for nets of 300+ units: compared with mnist_temperature")
    small_net_temperature: float = Field(4.0, gt=1.0, description="top of the paper's best range for 2x30 nets "
                                         "(2.5-4)")
    temperatures: list[float] = Field(min_length=3, description="the small student's temperature sweep; must include "
                                      "1, small_net_temperature and mnist_temperature")
    # the small-labelled-set experiments (small student) and the omitted digit (wide student)
    labelled_per_class: int = Field(5, ge=1, le=50, description="labelled training images per class in the "
                                    "small-labelled-set experiments")
    omit_class: int = Field(3, ge=0, le=9, description="the digit removed from the omitted-digit (wide) student's data")
    eval_every: int = Field(100, ge=1, description="steps between evaluations on the learning curves")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], teacher_width=8, teacher_steps=40, wide_hidden=[32, 32], small_hidden=[8, 8],
                      wide_steps=30, small_steps=30, temperatures=[1.0, 4.0, 20.0], eval_every=5),
        # cost per seed on this machine (one thread, measured while another job shared the cores): teacher
        # 1,200 steps ~15 s; the seven wide students (one vmapped stack) 1,000 steps ~7 s; the ten small students
        # (one stack) 2,000 steps ~10 s. The learning rate decays on a cosine; evaluations every 50 steps let the
        # convergence check compare the last 150 steps with the 150 before.
        "cpu": dict(seeds=list(range(8)), teacher_steps=1200, wide_hidden=[128, 128], small_hidden=[12, 12],
                    wide_steps=1000, small_steps=2000, temperatures=[1.0, 2.5, 4.0, 8.0, 20.0], eval_every=50),
        "gpu": dict(seeds=list(range(16)), teacher_width=64, teacher_steps=4000, wide_hidden=[800, 800],
                    small_hidden=[12, 12], wide_steps=3000, small_steps=3000, batch_size=256,
                    temperatures=[1.0, 2.0, 2.5, 3.0, 4.0, 8.0, 20.0]),
    }

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, value: list[float]) -> list[float]:
        if any(t <= 0 for t in value):
            raise ValueError("temperatures must all be > 0")
        if 1.0 not in value:
            raise ValueError("temperatures must include 1.0")
        return sorted(set(value))

    @model_validator(mode="after")
    def _claim_temperatures_in_grid(self):
        for name in ("mnist_temperature", "small_net_temperature"):
            if getattr(self, name) not in self.temperatures:
                raise ValueError(f"{name} ({getattr(self, name):g}) must be one of temperatures {self.temperatures}")
        if self.wide_alike_temperature in (self.mnist_temperature, self.small_net_temperature):
            raise ValueError(f"wide_alike_temperature ({self.wide_alike_temperature:g}) must differ from "
                             f"mnist_temperature ({self.mnist_temperature:g}) and small_net_temperature")
        return self

    @model_validator(mode="after")
    def _eval_within_steps(self):
        for name in ("wide_steps", "small_steps"):
            steps = getattr(self, name)
            if steps // self.eval_every < 2 * claims_lib.WINDOW:
                raise ValueError(f"the claims read learning curves: {name} // eval_every ({steps} // "
                                 f"{self.eval_every}) must be >= {2 * claims_lib.WINDOW} evaluations")
        return self

    def wide_temperatures(self) -> list[float]:
        """The wide student's soft-target temperatures: the two the 'alike' claim compares, and the small net's
        best temperature (whether the wide net shares the small net's preference)."""
        return sorted({self.small_net_temperature, self.wide_alike_temperature, self.mnist_temperature})
