"""The chapter's parameters: the papers' constants as field defaults, and what differs between profiles."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from distillbook.core import claims as cl
from distillbook.core.params import ChapterParams
from distillbook.testbeds.captioned import Captioned

CHAPTER = "clip-prompt-learning"
PositiveInt = Annotated[int, Field(ge=1)]


class Params(ChapterParams):
    # test bed
    shapes: list[str] = Field(min_length=2, description="shape names (captioned test bed)")
    colours: list[str] = Field(min_length=2, description="colour names; classes are shapes x colours")
    image_size: int = Field(ge=16)
    style_share: float = Field(0.1, ge=0, le=0.5, description="share of pretraining images from each non-photo domain")
    test_per_class: int = Field(ge=10, description="test images per class and domain")
    # CLIP
    clip_width: int = Field(ge=16)
    clip_layers: int = Field(ge=1)
    clip_heads: int = Field(ge=1)
    patch_size: int = Field(8, ge=2)
    pretrain_steps: int = Field(ge=1)
    pretrain_batch: int = Field(ge=4)
    pretrain_lr: float = Field(gt=0, description="peak AdamW rate of the one-cycle schedule")
    clip_checkpoint: str | None = Field(None, description="a saved CLIPModel to adapt instead of pretraining one "
                                        "(a local folder, or a hub id when online); it must read this test bed's "
                                        "word ids, so this is for models saved by this chapter")
    # prompt learning
    domain: Literal["photo", "sketch", "medical"] = Field("sketch", description="target domain of CoOp and PromptSRC")
    shots: list[PositiveInt] = Field(min_length=2, description="labelled images per base class")
    prompt_steps: int = Field(ge=1)
    prompt_batch: int = Field(ge=1)
    prompt_lr: float = Field(0.002, gt=0, description="SGD rate (cosine decay) of the prompt vectors (CoOp's 0.002)")
    prompt_evals: int = Field(ge=2 * cl.WINDOW, description="evaluations of base and novel test accuracy during "
                              "each prompt training (equally spaced; the claims read the last ones)")
    ivlp_depth: int = Field(ge=1, description="layers with learned prompts in each tower (IVLP, PromptSRC)")
    vision_tokens: int = Field(ge=1, description="learned visual tokens per layer")
    text_weight: float = Field(25.0, ge=0, description="PromptSRC's L1 text-feature weight (25)")
    image_weight: float = Field(10.0, ge=0, description="PromptSRC's L1 image-feature weight (10)")
    kl_weight: float = Field(1.0, ge=0, description="PromptSRC's KL weight (1)")
    gpa_epochs: int = Field(ge=2, description="epochs the prompt steps are split into for GPA")
    gpa_mean: float = Field(description="GPA's Gaussian mean, in epochs")
    gpa_std: float = Field(1.0, gt=0, description="GPA's Gaussian std, in epochs")
    # BiomedCoOp
    descriptions: int = Field(ge=2, description="descriptions per class (the mock LLM ensemble)")
    wrong_share: float = Field(0.2, ge=0, lt=1, description="share of description indices that are deliberately "
                               "wrong")
    mse_weight: float = Field(1.0, ge=0, description="BiomedCoOp's MSE weight")
    biomed_kl_weight: float = Field(1.0, ge=0, description="BiomedCoOp's KL weight")
    tau: float = Field(1.0, gt=0, description="pruning threshold on the robust z-score")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], shapes=["square", "circle"], colours=["red", "green"], image_size=16,
                      test_per_class=10, clip_width=16, clip_layers=2, clip_heads=2, pretrain_steps=4,
                      pretrain_batch=16, pretrain_lr=1.5e-3, shots=[1, 2], prompt_steps=6, prompt_batch=4,
                      prompt_evals=6, ivlp_depth=2, vision_tokens=2, gpa_epochs=2, gpa_mean=1.5, descriptions=5),
        "cpu": dict(seeds=[0, 1, 2, 3], shapes=["square", "circle", "triangle", "cross", "ring"],
                    colours=["red", "green", "blue", "yellow"], image_size=32, test_per_class=100, clip_width=64,
                    clip_layers=2, clip_heads=4, pretrain_steps=1200, pretrain_batch=64, pretrain_lr=1.5e-3,
                    shots=[1, 4, 16], prompt_steps=160, prompt_batch=32, prompt_evals=10, ivlp_depth=2,
                    vision_tokens=4, gpa_epochs=20, gpa_mean=15.0, descriptions=50),
        "gpu": dict(seeds=[0, 1, 2], shapes=["square", "circle", "triangle", "diamond", "cross", "ring", "bar", "plus"],
                    colours=["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white"], image_size=64,
                    test_per_class=300, clip_width=256, clip_layers=6, clip_heads=8, pretrain_steps=3000,
                    pretrain_batch=256, pretrain_lr=1e-3, shots=[1, 4, 16], prompt_steps=500, prompt_batch=64,
                    prompt_evals=10, ivlp_depth=4, vision_tokens=4, gpa_epochs=20, gpa_mean=15.0, descriptions=200),
    }

    @model_validator(mode="after")
    def _checks(self):
        if self.shots != sorted(set(self.shots)):
            raise ValueError(f"shots must increase, e.g. [1, 4, 16], got {self.shots}")
        if self.ivlp_depth > self.clip_layers:
            raise ValueError(f"ivlp_depth ({self.ivlp_depth}) must be at most clip_layers ({self.clip_layers})")
        if self.prompt_steps % self.prompt_evals:
            raise ValueError(f"prompt_steps ({self.prompt_steps}) must be a multiple of prompt_evals "
                             f"({self.prompt_evals})")
        if self.prompt_steps % self.gpa_epochs:
            raise ValueError(f"prompt_steps ({self.prompt_steps}) must be a multiple of gpa_epochs ({self.gpa_epochs})")
        if self.clip_width % self.clip_heads:
            raise ValueError(f"clip_width ({self.clip_width}) must be divisible by clip_heads ({self.clip_heads})")
        Captioned(tuple(self.shapes), tuple(self.colours), self.image_size)  # names the bad shape or colour
        return self
