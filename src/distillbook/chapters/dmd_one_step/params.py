"""The chapter's parameters: the papers' constants as field defaults, and what the profiles change; the arms'
names and the labels the tables and figures give them."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from distillbook.core.claims import WINDOW
from distillbook.core.params import ChapterParams

CHAPTER = "dmd-one-step"
DMD2, SWIFTBRUSH, SID, SIM = 50, 19, 58, 86
PositiveInt = Annotated[int, Field(ge=1)]
TEACHER_LABEL_DROPOUT = 0.1  # null labels in the digit teacher's training, so that guidance is possible
FAKE_LABEL_DROPOUT = TEACHER_LABEL_DROPOUT  # and in the fake score's, as in the teacher's (guidance needs both)
GRID_ARMS = ("dmd", "dmd2")                              # the coverage test bed: TTUR against one fake update
RING_ARMS = ("sid", "sim", "sid_fast", "sim_fast",        # the near-oracle teacher: SIM's robustness
             "weak_dmd2", "weak_dmd2_gan")                # the under-trained teacher: what the GAN term adds
DIGIT_ARMS = ("vsd", "sds", "sid_cfg", "sid_zero", "sid_anti", "sid_anti_mild")
TWO_D_LABELS = {"dmd": "DMD (1 fake update per step)", "dmd2": "DMD2 (TTUR)", "sid": "SiD", "sim": "SIM",
                "weak_dmd2": "DMD2, under-trained teacher", "weak_dmd2_gan": "DMD2 + GAN (sees data), under-trained teacher"}
DIGIT_LABELS = {"vsd": "SwiftBrush (VSD, LoRA fake score)", "sds": "SDS ablation (no fake score)",
                "sid_cfg": "SiD, CFG", "sid_zero": "SiD, Zero-CFG", "sid_anti": "SiD, Anti-CFG",
                "sid_anti_mild": "SiD, Anti-CFG at a quarter of the scale (diagnosis)"}


class Params(ChapterParams):
    # shared
    teacher_nfes: list[PositiveInt] = Field(min_length=1, description="sampling steps for the teacher baselines")
    sampler: Literal["ddim", "euler", "ddpm", "dpm"] = Field("ddim", description="diffusers sampler for the teacher "
                                                             "baselines")
    few_step_sampler: Literal["ddim", "euler", "dpm"] = Field("dpm", description="the strongest few-step sampler, "
                                                              "for the teacher's few-step baselines beside `sampler`")
    ttur_ratio: int = Field(ge=1, description="fake-score updates per generator update for DMD2 (TTUR)")
    sid_alpha: float = Field(1.2, ge=0, description="SiD's alpha")
    sim_c: float = Field(1e-3, gt=0, description="SIM's pseudo-Huber constant, in x0 units")
    # the 2-D test beds: ring2d (8 equal modes) and grid2d (5x5, the corners rare)
    ring_hidden: list[PositiveInt] = Field(min_length=1, description="ring teacher (and so student) MLP widths")
    ring_teacher_steps: int = Field(ge=1, description="ring teacher training steps (cosine-annealed: near the oracle)")
    weak_teacher_steps: int = Field(ge=1, description="training steps of the under-trained ring teacher (constant "
                                    "rate), the GAN claims' teacher only")
    grid_side: int = Field(5, ge=2, description="grid2d: modes per side")
    grid_std: float = Field(0.15, gt=0, description="grid2d: std of each mode (the modes are 1 apart)")
    grid_rare_weight: float = Field(0.1, gt=0, le=1, description="grid2d: weight of the 4 corner modes against 1")
    grid_hidden: list[PositiveInt] = Field(min_length=1, description="grid teacher (and so student) MLP widths")
    grid_fourier_features: int = Field(32, ge=0, description="random Fourier features of x for the grid teacher (an "
                                       "MLP on raw coordinates smears the 25 modes into a disc)")
    grid_teacher_steps: int = Field(ge=1, description="grid teacher training steps (cosine-annealed)")
    ring_batch: int = Field(ge=2, description="batch of every 2-D training")
    ring_steps: int = Field(ge=1, description="generator updates per ring2d student")
    grid_steps: int = Field(ge=1, description="generator updates per grid2d student")
    ring_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the 2-D generators")
    ring_fake_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the 2-D fake scores (and GAN head)")
    lr_multiplier: float = Field(4.0, gt=1, description="the high-learning-rate arms' factor (at 2x SiD's SW "
                                 "did not rise in 3 of 4 seeds of a cpu run; in a one-seed pilot at 4x it collapsed)")
    gan_weight: float = Field(gt=0, description="weight of DMD2's generator GAN term")
    ring_eval_samples: int = Field(ge=64, description="2-D samples per evaluation (SW, modes)")
    sw_directions: int = Field(64, ge=2, description="evenly spaced directions of the 2-D sliced Wasserstein distance")
    pr_samples: int = Field(ge=16, description="of those, the points precision and recall use (k = 5 neighbours)")
    ema_decay: float = Field(ge=0, lt=1, description="EMA of the generator's weights (evaluated); 0 turns it off")
    # digits
    digits_denoiser: Literal["mlp", "unet"] = "mlp"
    teacher_checkpoint: str | None = Field(None, description="distil a saved diffusers UNet2DModel instead of training "
                                           "a digits teacher: a local folder or a hub id (online only); 8x8, 1 channel, "
                                           "11 class embeddings (the last is the null class), v-prediction")
    digits_hidden: list[PositiveInt] = Field(min_length=1, description="MLP teacher widths (mlp denoiser)")
    unet_channels: list[PositiveInt] = Field(min_length=1, description="UNet2DModel block widths (unet denoiser)")
    digits_teacher_steps: int = Field(ge=1)
    digits_batch: int = Field(ge=2)
    digits_steps: int = Field(ge=1, description="generator updates per student")
    digits_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the generators (the papers use 1e-5, at "
                             "which a few hundred updates do not reach the point where these students' recall peaks "
                             "and falls)")
    digits_fake_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the fake scores (full copies)")
    lora_lr: float = Field(1e-3, gt=0, description="Adam learning rate of SwiftBrush's LoRA fake score")
    guidance_scale: float = Field(2.0, ge=1, description="teacher CFG scale for CFG arms and the teacher baselines")
    anti_cfg_scale: float = Field(-1.0, lt=0, description="the fake score's guidance scale in Anti-CFG (negative)")
    lora_rank: int = Field(ge=1, description="SwiftBrush's LoRA rank for the fake score")
    generator_timestep: int = Field(749, ge=1, le=999, description="the timestep at which the one-step generator "
                                    "reads its noise (SiD's init sigma 2.5 is about t = 750 on this cosine schedule)")
    classifier_steps: int = Field(ge=1, description="training steps of the feature classifier")
    digits_eval_samples: int = Field(ge=100, description="generated digits per evaluation (balanced over classes)")
    eval_points: int = Field(ge=2 * WINDOW - 1, description="evaluations along each student's training (with the "
                             "initial one, at least 2 windows: the claims read the curves' tails)")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], teacher_nfes=[1, 4], ttur_ratio=2,
                      ring_hidden=[32, 32], ring_teacher_steps=30, weak_teacher_steps=10, grid_hidden=[32, 32],
                      grid_teacher_steps=30, ring_batch=64, ring_steps=6, grid_steps=6, gan_weight=0.1,
                      ring_eval_samples=128, pr_samples=64, ema_decay=0.9,
                      digits_hidden=[32], unet_channels=[16, 32], digits_teacher_steps=30, digits_batch=32,
                      digits_steps=6, lora_rank=2, classifier_steps=30,
                      digits_eval_samples=100, eval_points=6),
        "cpu": dict(seeds=[0, 1, 2, 3], teacher_nfes=[1, 2, 4, 50], ttur_ratio=5,
                    ring_hidden=[64, 64, 64], ring_teacher_steps=4000, weak_teacher_steps=600,
                    grid_hidden=[128, 128, 128], grid_teacher_steps=4000, ring_batch=256, ring_steps=400, grid_steps=640,
                    gan_weight=0.3, ring_eval_samples=5000, pr_samples=1000, ema_decay=0.98,
                    digits_hidden=[256, 256, 256], unet_channels=[32, 64], digits_teacher_steps=2500, digits_batch=128,
                    digits_steps=150, lora_rank=8, classifier_steps=1000,
                    digits_eval_samples=1000, eval_points=10),
        "gpu": dict(seeds=[0, 1, 2], teacher_nfes=[1, 2, 4, 50], ttur_ratio=5,
                    ring_hidden=[128, 128, 128], ring_teacher_steps=12000, weak_teacher_steps=600,
                    grid_hidden=[256, 256, 256], grid_teacher_steps=12000, ring_batch=1024, ring_steps=1000, grid_steps=1600,
                    gan_weight=0.3, ring_eval_samples=20000, pr_samples=5000, ema_decay=0.995,
                    digits_denoiser="unet", digits_hidden=[512, 512, 512], unet_channels=[64, 128],
                    digits_teacher_steps=8000, digits_batch=256, digits_steps=1000, lora_rank=16,
                    classifier_steps=3000, digits_eval_samples=2000, eval_points=10),
    }

    @model_validator(mode="after")
    def _checks(self):
        if self.pr_samples > self.ring_eval_samples:
            raise ValueError(f"pr_samples ({self.pr_samples}) must be at most ring_eval_samples "
                             f"({self.ring_eval_samples})")
        for name in ("ring_steps", "grid_steps", "digits_steps"):
            if getattr(self, name) % self.eval_points:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of eval_points ({self.eval_points})")
        return self
