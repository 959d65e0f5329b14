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
RING_ARMS = ("dmd", "dmd2", "dmd2_gan", "sid", "sim", "dmd_fast", "sid_fast", "sim_fast")
DIGIT_ARMS = ("vsd", "sds", "sid_cfg", "sid_zero", "sid_anti", "sid_4step")
RING_LABELS = {"dmd": "DMD (1 fake update per step)", "dmd2": "DMD2 (TTUR)", "dmd2_gan": "DMD2 + GAN (sees data)",
               "sid": "SiD", "sim": "SIM"}
DIGIT_LABELS = {"vsd": "SwiftBrush (VSD, LoRA fake score)", "sds": "SDS ablation (no fake score)",
                "sid_cfg": "SiD, CFG", "sid_zero": "SiD, Zero-CFG", "sid_anti": "SiD, Anti-CFG",
                "sid_4step": "SiD, 4 steps (CFG)"}


class Params(ChapterParams):
    # shared
    teacher_nfes: list[PositiveInt] = Field(min_length=1, description="sampling steps for the teacher baselines")
    sampler: Literal["ddim", "euler", "ddpm"] = Field("ddim", description="diffusers sampler for the teacher baselines")
    ttur_ratio: int = Field(ge=1, description="fake-score updates per generator update for DMD2 (TTUR)")
    sid_alpha: float = Field(1.2, ge=0, description="SiD's alpha")
    sim_c: float = Field(1.0, gt=0, description="SIM's pseudo-Huber constant, in eps units")
    # ring2d
    ring_hidden: list[PositiveInt] = Field(min_length=1, description="teacher (and so student) MLP widths")
    ring_teacher_steps: int = Field(ge=1, description="teacher training steps (few on purpose: an imperfect teacher)")
    ring_batch: int = Field(ge=2)
    ring_steps: int = Field(ge=1, description="generator updates per student")
    ring_lr: float = Field(gt=0, description="Adam learning rate of the generators")
    ring_fake_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the fake scores (and GAN head)")
    lr_multiplier: float = Field(2.0, gt=1, description="the high-learning-rate arms' factor")
    gan_weight: float = Field(gt=0, description="weight of DMD2's generator GAN term")
    ring_eval_samples: int = Field(ge=64)
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
    digits_lr: float = Field(1e-5, gt=0, description="Adam learning rate of the generators")
    digits_fake_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the fake scores (full copies)")
    lora_lr: float = Field(1e-3, gt=0, description="Adam learning rate of SwiftBrush's LoRA fake score")
    guidance_scale: float = Field(2.0, ge=1, description="teacher CFG scale for CFG arms and the teacher baselines")
    anti_cfg_scale: float = Field(-1.0, lt=0, description="the fake score's guidance scale in Anti-CFG (negative)")
    lora_rank: int = Field(ge=1, description="SwiftBrush's LoRA rank for the fake score")
    generator_timestep: int = Field(749, ge=1, le=999, description="the timestep at which the one-step generator "
                                    "reads its noise (SiD's init sigma 2.5 is about t = 750 on this cosine schedule)")
    few_step_timesteps: list[Annotated[int, Field(ge=0, le=999)]] = Field(min_length=2)
    classifier_steps: int = Field(ge=1, description="training steps of the feature classifier")
    digits_eval_samples: int = Field(ge=100, description="generated digits per evaluation (balanced over classes)")
    eval_points: int = Field(ge=2 * WINDOW - 1, description="evaluations along each student's training (with the "
                             "initial one, at least 2 windows: the claims read the curves' tails)")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], teacher_nfes=[1, 4], ttur_ratio=2,
                      ring_hidden=[32, 32], ring_teacher_steps=30, ring_batch=64, ring_steps=5, ring_lr=1e-3,
                      gan_weight=0.1, ring_eval_samples=128, ema_decay=0.9,
                      digits_hidden=[32], unet_channels=[16, 32], digits_teacher_steps=30, digits_batch=32,
                      digits_steps=5, lora_rank=2, few_step_timesteps=[749, 249], classifier_steps=30,
                      digits_eval_samples=100, eval_points=5),
        "cpu": dict(seeds=[0, 1, 2, 3], teacher_nfes=[1, 2, 4, 50], ttur_ratio=5,
                    ring_hidden=[128, 128, 128], ring_teacher_steps=1500, ring_batch=256, ring_steps=320, ring_lr=3e-4,
                    gan_weight=0.3, ring_eval_samples=2000, ema_decay=0.98,
                    digits_hidden=[256, 256, 256], unet_channels=[32, 64], digits_teacher_steps=2500, digits_batch=128,
                    digits_steps=250, lora_rank=8, few_step_timesteps=[749, 499, 249, 99], classifier_steps=1000,
                    digits_eval_samples=1000, eval_points=10),
        "gpu": dict(seeds=[0, 1, 2], teacher_nfes=[1, 2, 4, 50], ttur_ratio=5,
                    ring_hidden=[256, 256, 256], ring_teacher_steps=3000, ring_batch=1024, ring_steps=1000,
                    ring_lr=3e-4, gan_weight=0.3, ring_eval_samples=10000, ema_decay=0.99,
                    digits_denoiser="unet", digits_hidden=[512, 512, 512], unet_channels=[64, 128],
                    digits_teacher_steps=8000, digits_batch=256, digits_steps=1000, lora_rank=16,
                    few_step_timesteps=[749, 499, 249, 99], classifier_steps=3000, digits_eval_samples=2000,
                    eval_points=10),
    }

    @model_validator(mode="after")
    def _checks(self):
        if self.few_step_timesteps != sorted(set(self.few_step_timesteps), reverse=True):
            raise ValueError("few_step_timesteps must be strictly decreasing, e.g. [999, 749, 499, 249]")
        for name in ("ring_steps", "digits_steps"):
            if getattr(self, name) % self.eval_points:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of eval_points ({self.eval_points})")
        return self
