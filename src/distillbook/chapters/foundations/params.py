"""The chapter's parameters: the paper's constants as field defaults, and what the profiles change."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from distillbook.core import claims as claims_lib
from distillbook.core.params import ChapterParams

CHAPTER = "foundations"
PositiveInt = Annotated[int, Field(ge=1)]


class Params(ChapterParams):
    # the teacher: Hinton et al.'s MNIST teacher was 2x1200 units trained with dropout on jittered inputs
    teacher_hidden: list[PositiveInt] = Field(min_length=1, description="teacher MLP hidden widths")
    teacher_dropout: float = Field(0.3, ge=0.0, lt=1.0)
    teacher_jitter: int = Field(1, ge=0, le=2, description="teacher's random input shift, in pixels (8x8 images)")
    teacher_steps: int = Field(ge=1, le=100_000)
    teacher_lr: float = Field(1e-3, gt=0.0, le=1.0)
    # the students: unregularised, as the paper's (2x800 units; 2x30 for its small-net temperature remark)
    wide_hidden: list[PositiveInt] = Field(min_length=1, description="the wide student's hidden widths (the "
                                           "paper's 2x800 net, at this scale)")
    small_hidden: list[PositiveInt] = Field(min_length=1, description="the small student's hidden widths (the "
                                            "paper's 2x30 net)")
    wide_steps: int = Field(ge=1, le=100_000)
    small_steps: int = Field(ge=1, le=100_000)
    batch_size: int = Field(128, ge=1, le=4096)
    lr: float = Field(3e-3, gt=0.0, le=1.0, description="students' AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the soft-target term (1 - alpha on labels)")
    # temperatures, fixed in advance from the paper
    mnist_temperature: float = Field(20.0, gt=1.0, description="the paper's MNIST temperature (20)")
    wide_alike_temperature: float = Field(8.0, gt=1.0, description="'all temperatures above 8 gave fairly similar "
                                          "results' for nets of 300+ units: compared with mnist_temperature")
    small_net_temperature: float = Field(4.0, gt=1.0, description="top of the paper's best range for 2x30 nets "
                                         "(2.5-4)")
    temperatures: list[float] = Field(min_length=3, description="the small student's temperature sweep; must include "
                                      "1, small_net_temperature and mnist_temperature")
    # the small-labelled-set and omitted-digit experiments
    labelled_per_class: int = Field(5, ge=1, le=50, description="labelled training images per class in the "
                                    "small-labelled-set experiments")
    omit_class: int = Field(3, ge=0, le=9, description="the digit removed from the omitted-digit student's data")
    eval_every: int = Field(100, ge=1, description="steps between evaluations on the learning curves")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], teacher_hidden=[64, 64], teacher_steps=40, wide_hidden=[32, 32],
                      small_hidden=[8, 8], wide_steps=30, small_steps=30, temperatures=[1.0, 4.0, 20.0], eval_every=5),
        # cost per seed on this machine (one thread): teacher 1,200 steps ~9 s; the three wide students
        # (one vmapped stack) 1,200 steps ~7 s; the ten small students (one stack) 2,000 steps ~11 s.
        # Pilots: the wide and small curves are flat well before these lengths (tail drift < 1%).
        "cpu": dict(seeds=list(range(8)), teacher_hidden=[512, 512], teacher_steps=1200, wide_hidden=[256, 256],
                    small_hidden=[32, 32], wide_steps=1200, small_steps=2000, temperatures=[1.0, 4.0, 20.0]),
        "gpu": dict(seeds=list(range(16)), teacher_hidden=[1200, 1200], teacher_steps=6000, wide_hidden=[800, 800],
                    small_hidden=[30, 30], wide_steps=4000, small_steps=4000, batch_size=256,
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
        if self.wide_alike_temperature == self.mnist_temperature:
            raise ValueError(f"wide_alike_temperature ({self.wide_alike_temperature:g}) must differ from "
                             f"mnist_temperature ({self.mnist_temperature:g})")
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
        """The wide student's soft-target temperatures (the two the 'alike' claim compares)."""
        return sorted({self.wide_alike_temperature, self.mnist_temperature})
