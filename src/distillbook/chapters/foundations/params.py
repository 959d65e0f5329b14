"""The chapter's parameters: the paper's constants as field defaults, and what the profiles change."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from distillbook.core import claims as claims_lib
from distillbook.core.params import ChapterParams

CHAPTER = "foundations"
PositiveInt = Annotated[int, Field(ge=1)]


class Params(ChapterParams):
    labelled_per_class: int = Field(5, ge=1, le=50,
                                    description="labelled training images per class for the student")
    temperatures: list[float] = Field(min_length=2, description="distillation temperatures; must include 1 and the two below")
    mnist_temperature: float = Field(20.0, gt=1.0,
                                     description="the paper's MNIST temperature (20), used by the §3 claims")
    small_net_temperature: float = Field(4.0, gt=1.0,
                                         description="top of the paper's best range for small students (2.5–4)")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the soft-target term (1 - alpha on labels)")
    teacher_hidden: list[PositiveInt] = Field(min_length=1, description="teacher MLP hidden widths")
    student_hidden: list[PositiveInt] = Field(min_length=1, description="student MLP hidden widths")
    teacher_steps: int = Field(ge=1, le=100_000)
    student_steps: int = Field(ge=1, le=100_000)
    batch_size: int = Field(ge=1, le=4096)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    teacher_dropout: float = Field(ge=0.0, lt=1.0)
    omit_class: int = Field(3, ge=0, le=9, description="the digit removed from the omitted-class student's data")
    eval_every: int = Field(ge=1, description="steps between evaluations on the learning curves")
    ablation_widths: list[PositiveInt] = Field(description="wider students for the soft vs arg-max ablation")
    ablation_steps: list[PositiveInt] = Field(description="longer trainings for the soft vs arg-max ablation")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], temperatures=[1.0, 4.0, 20.0], teacher_hidden=[64], student_hidden=[16],
                      teacher_steps=40, student_steps=30, batch_size=64, teacher_dropout=0.1, eval_every=5,
                      ablation_widths=[32], ablation_steps=[60]),
        "cpu": dict(seeds=[0, 1, 2, 3, 4, 5], temperatures=[1.0, 2.0, 4.0, 8.0, 20.0], teacher_hidden=[256, 256],
                    student_hidden=[32], teacher_steps=1500, student_steps=600, batch_size=128, teacher_dropout=0.2,
                    eval_every=50, ablation_widths=[256], ablation_steps=[1500]),
        # Tiny MLPs are launch-bound on a GPU (about 1 ms a step): the budget is counted in steps,
        # about 30k per seed here, for 10 seeds within 10 minutes.
        "gpu": dict(seeds=list(range(10)), temperatures=[1.0, 2.0, 3.0, 4.0, 8.0, 16.0, 20.0],
                    teacher_hidden=[1024, 1024], student_hidden=[32], teacher_steps=3000, student_steps=1000,
                    batch_size=256, teacher_dropout=0.3, eval_every=100, ablation_widths=[256, 1024],
                    ablation_steps=[3000]),
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
        return self

    @model_validator(mode="after")
    def _eval_within_steps(self):
        if self.eval_every > self.student_steps:
            raise ValueError(f"eval_every ({self.eval_every}) must be <= student_steps ({self.student_steps})")
        if self.student_steps // self.eval_every < 2 * claims_lib.WINDOW:
            raise ValueError(f"the claims read learning curves: student_steps // eval_every "
                             f"({self.student_steps} // {self.eval_every}) must be >= {2 * claims_lib.WINDOW} evaluations")
        return self


def ablation_settings(p: Params) -> list[tuple[str, list[int], int]]:
    """(label, student widths, steps) of the soft vs arg-max ablation, the base setting excluded."""
    return ([(f"width{w}", [w], p.student_steps) for w in p.ablation_widths]
            + [(f"steps{n}", p.student_hidden, n) for n in p.ablation_steps])


def longest_ablation(p: Params) -> int | None:
    """The longest training of the soft vs arg-max ablation (the diagnosis of the base-setting claim), if any."""
    return max(p.ablation_steps) if p.ablation_steps else None
