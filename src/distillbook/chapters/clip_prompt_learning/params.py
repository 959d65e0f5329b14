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
    extra_shapes: list[str] = Field([], description="shapes outside the class grid that pretraining shows (what "
                                    "wrong descriptions name: concepts the CLIP knows but no class has)")
    extra_colours: list[str] = Field([], description="colours outside the class grid that pretraining shows")
    extra_share: float = Field(0.05, ge=0, le=0.5, description="share of pretraining scenes outside the class grid")
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
    pretrain_threads: int = Field(2, ge=1, le=256, description="torch threads while the CLIP pretrains (alone, "
                                  "before any seed worker starts); fixed, so the CLIP does not depend on the "
                                  "machine's cores")
    clip_checkpoint: str | None = Field(None, description="a saved CLIPModel to adapt instead of pretraining one "
                                        "(a local folder, or a hub id when online); it must read this test bed's "
                                        "word ids, so this is for models saved by this chapter")
    # prompt learning (each learner's steps follow its paper's recipe: epochs over the few-shot set at its batch)
    domain: Literal["photo", "sketch", "medical"] = Field("sketch", description="target domain of CoOp and PromptSRC")
    forgetting_shots: PositiveInt = Field(16, description="labelled images per base class for the forgetting and "
                                                          "PromptSRC experiments (the papers' 16)")
    shots: list[PositiveInt] = Field(min_length=1, description="BiomedCoOp's shot counts, e.g. [1, 16]")
    epoch_scale: float = Field(1.0, gt=0, le=1, description="multiplies every recipe's epochs (1: the papers' "
                                                            "recipes; the smoke profile's shortcut)")
    coop_batch: PositiveInt = Field(32, description="CoOp's batch (32; BiomedCoOp trains with CoOp's recipe)")
    prompt_lr: float = Field(0.002, gt=0, description="CoOp's SGD rate (0.002, cosine decay)")
    src_epochs: PositiveInt = Field(20, description="PromptSRC's epochs (20), also GPA's epoch count")
    src_batch: PositiveInt = Field(4, description="PromptSRC's batch (4)")
    src_lr: float = Field(0.0025, gt=0, description="PromptSRC's SGD rate (0.0025, cosine decay)")
    prompt_evals: int = Field(ge=2 * cl.WINDOW, description="evaluations of base and novel test accuracy during "
                              "each prompt training after the one at step 0 (equally spaced; the claims read the "
                              "last ones)")
    ivlp_depth: int = Field(ge=1, description="layers with learned prompts in each tower (IVLP, PromptSRC)")
    vision_tokens: int = Field(ge=1, description="learned visual tokens per layer (the papers' 4 are 2% of "
                               "ViT-B/16's 197 image tokens; at 32 px and patch 8 this CLIP has 17, so 4 would be a "
                               "quarter and one is 6%)")
    text_weight: float = Field(25.0, ge=0, description="PromptSRC's L1 text-feature weight (25)")
    image_weight: float = Field(10.0, ge=0, description="PromptSRC's L1 image-feature weight (10)")
    kl_weight: float = Field(1.0, ge=0, description="PromptSRC's KL weight (1)")
    promptsrc_rescaled: bool = Field(True, description="run the diagnosis arm of PromptSRC with its L1 weights "
                                                      "rescaled to the feature width")
    reference_width: PositiveInt = Field(512, description="feature width of the papers' CLIP (ViT-B/16: 512); the "
                                         "rescaled-L1 diagnosis multiplies PromptSRC's L1 weights by "
                                         "sqrt(clip_width / reference_width)")
    gpa_mean: float = Field(description="GPA's Gaussian mean, in epochs (of src_epochs)")
    gpa_std: float = Field(1.0, gt=0, description="GPA's Gaussian std, in epochs")
    # BiomedCoOp
    descriptions: int = Field(ge=2, description="descriptions per class (the mock LLM ensemble)")
    wrong_share: float = Field(0.2, ge=0, lt=1, description="share of description indices that are deliberately "
                               "wrong")
    wrong_kind: Literal["confuser", "unseen"] = Field("unseen", description="what a wrong description describes: "
                                                      "another class, or a shape and colour no class has")
    biomed_weights: list[Annotated[float, Field(gt=0)]] = Field(
        [1.0, 10.0, 100.0], min_length=1, description="BiomedCoOp's λ1 = λ2, pre-registered: the paper's 1 first "
        "(its claims), then the sweep that diagnoses them (λ = 1 was set at another logit scale and width)")
    control_arms: bool = Field(True, description="also train BiomedCoOp's control arms: every weight with no "
                               "wrong description (pruning-neutral-without-wrong) and without pruning at the swept "
                               "weights (pruning-helps-sweep)")
    tau: float = Field(1.0, gt=0, description="pruning threshold on the robust z-score")
    restandardise: bool = Field(True, description="standardise the robust z-scores once more before the threshold, "
                                "as BiomedCoOp's code does (False: the paper's equation)")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], shapes=["square", "circle"], colours=["red", "green"], extra_shapes=["ring"],
                      extra_colours=["blue"], image_size=16, test_per_class=10, clip_width=16, clip_layers=2,
                      clip_heads=2, pretrain_steps=4,
                      pretrain_batch=16, pretrain_lr=1.5e-3, forgetting_shots=2, shots=[1, 2], epoch_scale=0.02,
                      prompt_evals=6, ivlp_depth=2, vision_tokens=2, gpa_mean=1.0, descriptions=5,
                      biomed_weights=[1.0, 10.0]),
        "cpu": dict(seeds=[0, 1, 2, 3], shapes=["square", "circle", "triangle", "cross", "ring"],
                    colours=["red", "green", "blue", "yellow"], extra_shapes=["bar"], extra_colours=["magenta"],
                    image_size=32, test_per_class=100, clip_width=64, clip_layers=2, clip_heads=4,
                    pretrain_steps=1200, pretrain_batch=64, pretrain_lr=1.5e-3, shots=[16], prompt_evals=12,
                    ivlp_depth=2, vision_tokens=1, gpa_mean=15.0, descriptions=50,
                    control_arms=False),
        "gpu": dict(seeds=[0, 1, 2], shapes=["square", "circle", "triangle", "diamond", "cross", "ring"],
                    colours=["red", "green", "blue", "yellow", "magenta", "cyan"], extra_shapes=["bar"],
                    extra_colours=["orange"], image_size=64,
                    test_per_class=300, clip_width=256, clip_layers=6, clip_heads=8, pretrain_steps=3000,
                    pretrain_batch=256, pretrain_lr=1e-3, shots=[1, 16], prompt_evals=10, ivlp_depth=4,
                    vision_tokens=4, gpa_mean=15.0, descriptions=200),
    }

    @model_validator(mode="after")
    def _checks(self):
        if self.shots != sorted(set(self.shots)):
            raise ValueError(f"shots must increase, e.g. [1, 4, 16], got {self.shots}")
        if self.ivlp_depth > self.clip_layers:
            raise ValueError(f"ivlp_depth ({self.ivlp_depth}) must be at most clip_layers ({self.clip_layers})")
        if not 0 < self.gpa_mean <= self.src_epochs:
            raise ValueError(f"gpa_mean ({self.gpa_mean}) must lie in (0, src_epochs = {self.src_epochs}]")
        if self.clip_width % self.clip_heads:
            raise ValueError(f"clip_width ({self.clip_width}) must be divisible by clip_heads ({self.clip_heads})")
        bed = Captioned(tuple(self.shapes), tuple(self.colours), self.image_size, extra_shapes=tuple(self.extra_shapes),
                        extra_colours=tuple(self.extra_colours))  # names the bad shape or colour
        if self.wrong_kind == "unseen" and self.wrong_share > 0 and not (self.extra_shapes and self.extra_colours):
            raise ValueError("wrong_kind='unseen' needs extra_shapes and extra_colours (concepts outside the class "
                             "grid that pretraining shows, for wrong descriptions to name), or use "
                             "wrong_kind='confuser'")
        return self
