"""The chapter's id and parameters: field defaults are the papers' constants, presets what differs by profile."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from distillbook.core.params import ChapterParams
from distillbook.methods.dataset_distillation import AST_LOSS_RAMP

CHAPTER = "dataset-distillation"
PositiveInt = Annotated[int, Field(ge=1)]


class Params(ChapterParams):
    dataset: Literal["digits", "shapes"] = Field("digits", description="digits (8x8 grey) or procedural 32x32 shapes")
    shapes_classes: Literal[10, 50] = Field(50, description="shapes only: 10 (5 shapes x 2 colours) or 50 classes "
                                            "(5 shapes x 5 colours x 2 positions)")
    shapes_per_class: int = Field(100, ge=10, description="shapes only: training images per class")
    architecture: Literal["mlp", "convnet"] = Field("mlp", description="experts, students and evaluation nets")
    ipcs: list[PositiveInt] = Field(min_length=1, description="images per class; the claims use the smallest and largest")
    hidden: list[PositiveInt] = Field(min_length=1, description="MLP hidden widths, or ConvNet blocks (depth = length, "
                                      "width = first entry), of experts, students and evaluation nets")
    # experts and trajectory matching
    n_experts: int = Field(ge=1)
    expert_epochs: int = Field(ge=2)
    expert_lr: float = Field(gt=0)
    expert_batch: int = Field(ge=1)
    ast_penalty: float = Field(0.1, gt=0, description="weight of the smooth experts' input-gradient penalty")
    ast_loss_ramp: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: list(AST_LOSS_RAMP), description="the smooth experts' CE multipliers for their first "
        "epochs (AST's clipped loss, 1 afterwards); [] turns it off")
    match_iterations: int = Field(ge=1)
    syn_steps: int = Field(ge=1, description="student SGD steps unrolled per matching iteration (N)")
    expert_span: int = Field(ge=1, description="expert epochs ahead the student aims (M)")
    max_start_epoch: int = Field(ge=0)
    image_lr: float = Field(0.01, gt=0)
    syn_lr_init: float = Field(gt=0)
    # evaluation
    eval_nets: int = Field(ge=1)
    eval_steps: int = Field(ge=1)
    eval_lrs: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="SGD learning rates tried by "
                                                           "evaluation nets, picked on validation")
    eval_shift: int = Field(ge=0, le=3, description="random shift augmentation, in pixels")
    # INFER and the SRe2L-like baseline
    teacher_hiddens: list[list[PositiveInt]] = Field(min_length=1, description="BatchNorm teachers to cycle over "
                                                     "(MLP widths or ConvNet blocks, as hidden)")
    teacher_steps: int = Field(ge=1)
    synthesis_steps: int = Field(ge=1)
    synthesis_lr: float = Field(0.05, gt=0)
    bn_weight: float = Field(0.01, ge=0)
    label_temperature: float = Field(4.0, gt=0)

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], ipcs=[1, 2], hidden=[32], n_experts=2, expert_epochs=3, expert_lr=0.05,
                      expert_batch=128, match_iterations=6, syn_steps=2, expert_span=1, max_start_epoch=1,
                      syn_lr_init=0.05, eval_nets=1, eval_steps=10, eval_lrs=[0.05, 0.1], eval_shift=1,
                      teacher_hiddens=[[32]], teacher_steps=20, synthesis_steps=3),
        "cpu": dict(seeds=[0, 1, 2, 3, 4, 5], ipcs=[1, 10], hidden=[128], n_experts=5, expert_epochs=10, expert_lr=0.05,
                    expert_batch=64, match_iterations=300, syn_steps=10, expert_span=2, max_start_epoch=4,
                    syn_lr_init=0.05, eval_nets=2, eval_steps=350, eval_lrs=[0.05, 0.1], eval_shift=1,
                    teacher_hiddens=[[128], [256, 128]], teacher_steps=600, synthesis_steps=200),
        "gpu": dict(seeds=[0, 1, 2, 3, 4], dataset="shapes", architecture="convnet", ipcs=[1, 10],
                    hidden=[128, 128, 128], n_experts=10, expert_epochs=12, expert_lr=0.01, expert_batch=256,
                    match_iterations=500, syn_steps=20, expert_span=2, max_start_epoch=6, syn_lr_init=0.01,
                    eval_nets=3, eval_steps=500, eval_lrs=[0.01, 0.03], eval_shift=2,
                    teacher_hiddens=[[64, 64], [128, 128, 128]], teacher_steps=1500, synthesis_steps=500),
    }

    @model_validator(mode="after")
    def _spans(self):
        if self.max_start_epoch + self.expert_span > self.expert_epochs:
            raise ValueError(f"max_start_epoch + expert_span ({self.max_start_epoch} + {self.expert_span}) must be "
                             f"<= expert_epochs ({self.expert_epochs})")
        if sorted(set(self.ipcs)) != self.ipcs:
            raise ValueError("ipcs must be strictly increasing")
        return self
