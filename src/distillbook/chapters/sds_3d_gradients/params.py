"""The chapter's parameters: the papers' constants as field defaults, and what the profiles change."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from distillbook.core.params import ChapterParams
from distillbook.testbeds import voxel3d as v3

CHAPTER = "sds-3d-gradients"
PositiveInt = Annotated[int, Field(ge=1)]
CURVE_WINDOW = 2  # evaluations averaged at a curve's end; the convergence rule compares them with the 2 before


class Params(ChapterParams):
    # test bed and prior
    resolution: int = Field(ge=8, description="render side in pixels (the prior's image size)")
    grid_size: int = Field(ge=4, description="voxel grid side for single objects")
    ray_samples: int = Field(ge=8, description="samples per ray when optimising")
    views_per_object: int = Field(ge=8, description="ground-truth renders per object for the prior")
    front_share: float = Field(0.7, ge=0, le=1,
                               description="share of training views forced within 45 degrees of the front")
    prior: Literal["mlp", "unet"] = "mlp"
    prior_hidden: list[PositiveInt] = Field(min_length=1, description="MLP prior widths")
    unet_channels: list[PositiveInt] = Field(min_length=1, description="UNet prior block widths")
    prior_steps: int = Field(ge=1)
    prior_batch: int = Field(ge=2)
    prior_lr: float = Field(gt=0)
    colour_dropout: float = Field(0.2, ge=0, lt=1, description="share of training labels that drop the colour word")
    view_dropout: float = Field(0.8, ge=0, lt=1, description="share of training labels that drop the view word")
    label_dropout: float = Field(0.1, ge=0, lt=1, description="share of null labels (for guidance)")
    # single-object optimisation
    iterations: int = Field(ge=1, description="optimisation steps per object")
    views_per_particle: int = Field(ge=1, description="renders per particle and step (every method sees as many "
                                                       "views per representation)")
    grid_lr: float = Field(gt=0, description="Adam learning rate of the voxel grids")
    fake_lr: float = Field(1e-4, gt=0,
                           description="Adam learning rate of the VSD/ESD fake score (a copy of the prior)")
    camera_dropout: float = Field(0.1, ge=0, lt=1, description="share of the fake score's training labels without view")
    low_guidance: float = Field(7.5, ge=1, description="the usual CFG scale (7.5)")
    high_guidance: float = Field(100.0, ge=1, description="DreamFusion's large CFG scale (100)")
    bsd_scale: float = Field(15.0, gt=0,
                             description="BSD's classifier-term scale (15 in PlacidDreamer's train_step_BSD)")
    particles: PositiveInt = Field(description="VSD particles in the diversity runs (and independent SDS runs); "
                                               "the fidelity runs use one, ProlificDreamer's 3-D default")
    esd_lambda: float = Field(0.5, ge=0, lt=1, description="ESD's camera guidance on the fake score (1 is VSD)")
    cds_gap: list[PositiveInt] = Field([20, 80], min_length=2, max_length=2,
                                       description="CDS's t - t' range (timesteps)")
    inversion_steps: int = Field(ge=2, description="DDIM inversion grid of CSM (steps over the schedule)")
    fidelity_objects: list[str] = Field(min_length=1, description="'colour shape' objects of the PSNR claims, e.g. "
                                                                "'green cube' (saturated colours: an empty render "
                                                                "scores low)")
    chroma_objects: list[str] = Field(min_length=1, description="'colour shape' objects of the saturation claims "
                                                              "(a pastel among them leaves room to over-saturate)")
    left_out_arms: list[Literal["cds_fresh", "cds_random", "csd", "csm"]] = Field(
        [], description="PSNR arms a profile leaves out to hold its time budget, with the claims that read them")
    janus_probes: list[str] = Field(min_length=1, description=f"Janus probes optimised without the view word "
                                                              f"(of {', '.join(v3.PROBES)})")
    diversity_shape: str | None = Field(description="the colour-free prompt whose particles are compared, e.g. "
                                                    "'cube'; None leaves the diversity runs (and claims) out")
    variance_draws: int = Field(ge=4, description="noise draws per timestep when measuring gradient variance")
    # amortised generator
    amortised_sizes: list[PositiveInt] = Field(min_length=2, max_length=2, description="prompt counts, small then large")
    amortised_grid: int = Field(ge=4)
    amortised_hidden: PositiveInt
    amortised_steps: int = Field(ge=0, description="generator steps; 0 leaves the amortised runs (and ASD's claim) "
                                                   "out of the profile")
    amortised_batch: int = Field(ge=1, description="prompts (one view each) per generator step")
    amortised_lr: float = Field(1e-3, gt=0)
    asd_shift: list[Annotated[int, Field(ge=0)]] = Field(min_length=2, max_length=2, description="ASD's t shift range")
    # evaluation
    eval_views: int = Field(ge=4, description="turntable views for the metrics (multiple of 4)")
    eval_points: int = Field(ge=1, description="evaluations along each optimisation")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], resolution=8, grid_size=6, ray_samples=12, views_per_object=8,
                      prior_hidden=[32], unet_channels=[16, 32], prior_steps=20, prior_batch=32, prior_lr=2e-3,
                      iterations=4, views_per_particle=1, grid_lr=0.05, particles=2, inversion_steps=4,
                      fidelity_objects=["green cube"], chroma_objects=["green cube"], variance_draws=4,
                      janus_probes=["red-front-cube"], diversity_shape="cube",
                      amortised_sizes=[2, 4], amortised_grid=4,
                      amortised_hidden=16, amortised_steps=4, amortised_batch=2, asd_shift=[0, 100], eval_views=4,
                      eval_points=4),
        "cpu": dict(seeds=[0, 1, 2, 3], resolution=16, grid_size=16, ray_samples=24, views_per_object=96,
                    prior_hidden=[512, 512, 512], unet_channels=[32, 64], prior_steps=2000, prior_batch=128,
                    prior_lr=2e-3, iterations=200, views_per_particle=2, grid_lr=0.1, particles=2, inversion_steps=10,
                    fidelity_objects=["green cube"], chroma_objects=["pink sphere"],
                    left_out_arms=["cds_random", "csd", "csm"], janus_probes=["red-front-cube"],
                    diversity_shape=None, variance_draws=32,
                    amortised_sizes=[4, 16], amortised_grid=12, amortised_hidden=64, amortised_steps=0, amortised_batch=8,
                    asd_shift=[0, 200], eval_views=16, eval_points=8),
        "gpu": dict(seeds=[0, 1, 2], resolution=32, grid_size=32, ray_samples=64, views_per_object=512,
                    prior="unet", prior_hidden=[1024, 1024, 1024], unet_channels=[64, 128], prior_steps=8000,
                    prior_batch=256, prior_lr=1e-3, iterations=1000, views_per_particle=4, grid_lr=0.03, particles=4,
                    inversion_steps=20, fidelity_objects=["green cube", "red sphere", "blue cylinder"],
                    chroma_objects=["green cube", "pink sphere", "pink cone"],
                    janus_probes=list(v3.PROBES), diversity_shape="cube", variance_draws=64,
                    amortised_sizes=[4, 16], amortised_grid=16, amortised_hidden=256,
                    amortised_steps=1000, amortised_batch=16, asd_shift=[0, 200], eval_views=16, eval_points=10),
    }

    @model_validator(mode="after")
    def _checks(self):
        for obj in self.fidelity_objects + self.chroma_objects:
            parse_object(obj)
        if self.diversity_shape is not None and self.diversity_shape not in v3.PRIMITIVES:
            raise ValueError(f"diversity_shape={self.diversity_shape!r}; allowed: {', '.join(v3.PRIMITIVES)} or None")
        for probe in self.janus_probes:
            if probe not in v3.PROBES:
                raise ValueError(f"janus_probes: {probe!r} is not a probe; allowed: {', '.join(v3.PROBES)}")
        if len(set(self.janus_probes)) != len(self.janus_probes):
            raise ValueError(f"janus_probes must not repeat a probe, got {self.janus_probes}")
        if self.eval_views % 4:
            raise ValueError(f"eval_views must be a multiple of 4 (front, sides and back), got {self.eval_views}")
        if self.cds_gap[0] > self.cds_gap[1] or self.asd_shift[0] > self.asd_shift[1]:
            raise ValueError("cds_gap and asd_shift are [low, high] ranges with low <= high")
        small, large = self.amortised_sizes
        if not small < large <= len(v3.PRIMITIVES) * len(v3.COLOURS):
            raise ValueError(f"amortised_sizes must be [small, large] with small < large <= "
                             f"{len(v3.PRIMITIVES) * len(v3.COLOURS)}, got {self.amortised_sizes}")
        if self.iterations % self.eval_points or self.amortised_steps % self.eval_points:
            raise ValueError("iterations and amortised_steps must be multiples of eval_points")
        if self.eval_points + 1 < 2 * CURVE_WINDOW:
            raise ValueError(f"eval_points must be at least {2 * CURVE_WINDOW - 1}: the claims read curves of "
                             f"eval_points + 1 evaluations and their convergence needs {2 * CURVE_WINDOW}")
        return self


def parse_object(text: str) -> tuple[str, str]:
    """'green cube' -> ('cube', 'green'); names a coloured primitive."""
    parts = text.split()
    if len(parts) != 2 or parts[0] not in v3.COLOURS or parts[1] not in v3.PRIMITIVES:
        raise ValueError(f"object {text!r}: write 'colour shape' with colour in {', '.join(v3.COLOURS)} and shape "
                         f"in {', '.join(v3.PRIMITIVES)}")
    return parts[1], parts[0]

