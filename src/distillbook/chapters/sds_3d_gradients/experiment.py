"""Score distillation for 3-D, the gradient fixes: VSD (60), ESD (14), Consistent3D (49), PlacidDreamer (68),
TV-3DG (12), ScaleDreamer (15).

A 2-D diffusion prior, trained here on renders of the ``voxel3d`` scenes, is the only source of 3-D knowledge.
A voxel grid is optimised so that its renders from random cameras look likely to the prior: each render x is
diffused, the prior's noise predictions give an image-space gradient g (``methods/score_distillation.py``), and
g flows into the grid through the differentiable renderer.

- **The prior** is a denoiser over flat 16x16 renders (an MLP at cpu, diffusers' ``UNet2DModel`` at gpu),
  conditioned on a prompt and on DreamFusion's view word (front / side / back / none), with a null label
  for classifier-free guidance. Prompts name a shape and a colour ("a green cube"), only a shape ("a cube",
  trained on every colour), or one of two Janus probes whose front differs from their back. Its training
  views are front-biased, as web photos are: that bias is what makes Janus objects.
- **Single objects.** SDS at low and high guidance, SDS without the view word, VSD with several particles and
  a fake score (a copy of the prior fine-tuned online, camera-conditioned by the view word), ESD (the fake
  score guided over the camera), CDS (fixed noise, one ODE step), BSD (min-norm mix of the classifier and
  denoising terms), CSD (the classifier term alone) and CSM (the classifier term at DDIM-inverted noise);
  beside a reconstruction from ground-truth renders (the ceiling).
- **Amortised.** A prompt -> grid generator trained by ASD or by VSD with a shared fake score, on 4 and on
  16 prompts (ScaleDreamer's scaling claim).

Seeds vary the grids' initialisation, the cameras, the noise and the fake scores; the prior is trained once
per run with the first seed, as the papers distil one given prior.

Claims are judged per object (and per Janus probe): a verdict holds only if every object agrees. PSNR arms are
read off their optimisation curves (the mean of the last ``CURVE_WINDOW`` evaluations, with the convergence
rule), against the reconstruction from ground-truth renders as their ceiling; chroma lies in [0, 1].
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMInverseScheduler
from pydantic import Field, model_validator
from torchmetrics.functional.image import structural_similarity_index_measure

from distillbook.core.claims import Claim, mean_std_text, relative_change, verdict_text
from distillbook.core.claims import curve as as_curve
from distillbook.core.claims import curve_difference
from distillbook.methods.diffusion import Schedule
from distillbook.methods import score_distillation as sd
from distillbook.methods.distribution_matching import denoising_loss
from distillbook.models.denoiser import MLPDenoiser, UNetDenoiser, train_denoiser
from distillbook.methods.diffusion import guided
from distillbook.models.mlp import mlp
from distillbook.core.params import ChapterParams
from distillbook.core.runtime import derived_seed
from distillbook.core.plotting import mean_std_band
from distillbook.core.results import Run
from distillbook.testbeds import voxel3d as v3

CHAPTER = "sds-3d-gradients"
PROLIFIC, ESD_PAPER, CONSISTENT3D, PLACID, TV3DG, SCALE = 60, 14, 49, 68, 12, 15
PositiveInt = Annotated[int, Field(ge=1)]
NO_VIEW = 3  # the view slot of a label without a view word
PROBE_COLOURS = {"head": "yellow", "red-front-cube": "blue"}
SHAPE_WORD = {"cube": "cube", "sphere": "sphere", "cylinder": "cylinder", "cone": "cone",
              "head": "head", "red-front-cube": "cube with a red front"}
OBJECT_ARMS = ("reconstruction", "sds_low", "sds_high", "vsd", "bsd", "cds", "cds_random", "csd", "csm")
DIVERSITY_ARMS = ("sds_low", "vsd")
JANUS_ARMS = ("sds", "sds_noview", "vsd_noview", "esd_noview")
AMORTISED_ARMS = ("asd", "vsd")
CURVE_WINDOW = 2  # evaluations averaged at a curve's end; the convergence rule compares them with the 2 before
PRIOR_SAMPLES_PER_VIEW = 4  # prior samples per view word (front, side, back) for the prior's chroma


class Params(ChapterParams):
    # test bed and prior
    resolution: int = Field(ge=8, description="render side in pixels (the prior's image size)")
    grid_size: int = Field(ge=4, description="voxel grid side for single objects")
    ray_samples: int = Field(ge=8, description="samples per ray when optimising")
    views_per_object: int = Field(ge=8, description="ground-truth renders per object for the prior")
    front_share: float = Field(ge=0, le=1, description="share of training views forced within 45 degrees of the front")
    prior: Literal["mlp", "unet"] = "mlp"
    prior_hidden: list[PositiveInt] = Field(min_length=1, description="MLP prior widths")
    unet_channels: list[PositiveInt] = Field(min_length=1, description="UNet prior block widths")
    prior_steps: int = Field(ge=1)
    prior_batch: int = Field(ge=2)
    prior_lr: float = Field(gt=0)
    colour_dropout: float = Field(ge=0, lt=1, description="share of training labels that drop the colour word")
    view_dropout: float = Field(ge=0, lt=1, description="share of training labels that drop the view word")
    label_dropout: float = Field(ge=0, lt=1, description="share of null labels (for guidance)")
    # single-object optimisation
    iterations: int = Field(ge=1, description="optimisation steps per object")
    views_per_step: int = Field(ge=1, description="renders per step (shared among particles)")
    grid_lr: float = Field(gt=0, description="Adam learning rate of the voxel grids")
    fake_lr: float = Field(gt=0, description="Adam learning rate of the VSD/ESD fake score (a copy of the prior)")
    camera_dropout: float = Field(ge=0, lt=1, description="share of the fake score's training labels without view")
    low_guidance: float = Field(ge=1, description="the usual CFG scale (7.5)")
    high_guidance: float = Field(ge=1, description="DreamFusion's large CFG scale (100)")
    bsd_scale: float = Field(gt=0, description="BSD's classifier-term scale (15 in PlacidDreamer's train_step_BSD)")
    particles: PositiveInt = Field(description="VSD particles (and independent SDS runs for diversity)")
    esd_lambda: float = Field(ge=0, lt=1, description="ESD's camera guidance on the fake score (1 is VSD)")
    cds_gap: list[PositiveInt] = Field(min_length=2, max_length=2, description="CDS's t - t' range (timesteps)")
    inversion_steps: int = Field(ge=2, description="DDIM inversion grid of CSM (steps over the schedule)")
    fidelity_objects: list[str] = Field(min_length=1, description="'colour shape' objects for fidelity, e.g. 'green cube'")
    diversity_shape: str = Field(description="the colour-free prompt whose particles are compared, e.g. 'cube'")
    variance_draws: int = Field(ge=4, description="noise draws per timestep when measuring gradient variance")
    # amortised generator
    amortised_sizes: list[PositiveInt] = Field(min_length=2, max_length=2, description="prompt counts, small then large")
    amortised_grid: int = Field(ge=4)
    amortised_hidden: PositiveInt
    amortised_steps: int = Field(ge=1)
    amortised_batch: int = Field(ge=1, description="prompts (one view each) per generator step")
    amortised_lr: float = Field(gt=0)
    asd_shift: list[Annotated[int, Field(ge=0)]] = Field(min_length=2, max_length=2, description="ASD's t shift range")
    # evaluation
    eval_views: int = Field(ge=4, description="turntable views for the metrics (multiple of 4)")
    eval_points: int = Field(ge=1, description="evaluations along each optimisation")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], resolution=8, grid_size=6, ray_samples=12, views_per_object=8, front_share=0.7,
                      prior_hidden=[32], unet_channels=[16, 32], prior_steps=20, prior_batch=32, prior_lr=2e-3,
                      colour_dropout=0.2, view_dropout=0.8, label_dropout=0.1, iterations=4, views_per_step=2,
                      grid_lr=0.05, fake_lr=1e-4, camera_dropout=0.1, low_guidance=7.5, high_guidance=100.0,
                      bsd_scale=15.0, particles=2, esd_lambda=0.5, cds_gap=[20, 80], inversion_steps=4,
                      fidelity_objects=["green cube"], diversity_shape="cube", variance_draws=4,
                      amortised_sizes=[2, 4], amortised_grid=4, amortised_hidden=16, amortised_steps=4,
                      amortised_batch=2, amortised_lr=1e-3, asd_shift=[0, 100], eval_views=4, eval_points=4),
        "cpu": dict(seeds=[0, 1, 2, 3], resolution=16, grid_size=16, ray_samples=24, views_per_object=96,
                    front_share=0.7, prior_hidden=[512, 512, 512], unet_channels=[32, 64], prior_steps=2000,
                    prior_batch=128, prior_lr=2e-3, colour_dropout=0.2, view_dropout=0.8, label_dropout=0.1,
                    iterations=200, views_per_step=4, grid_lr=0.05, fake_lr=1e-4, camera_dropout=0.1,
                    low_guidance=7.5, high_guidance=100.0, bsd_scale=15.0, particles=4, esd_lambda=0.5,
                    cds_gap=[20, 80], inversion_steps=10, fidelity_objects=["green cube", "red sphere"],
                    diversity_shape="cube", variance_draws=32, amortised_sizes=[4, 16], amortised_grid=12,
                    amortised_hidden=64, amortised_steps=250, amortised_batch=8, amortised_lr=1e-3,
                    asd_shift=[0, 200], eval_views=16, eval_points=5),
        "gpu": dict(seeds=[0, 1, 2], resolution=32, grid_size=32, ray_samples=64, views_per_object=512,
                    front_share=0.7, prior="unet", prior_hidden=[1024, 1024, 1024], unet_channels=[64, 128],
                    prior_steps=8000, prior_batch=256, prior_lr=1e-3, colour_dropout=0.2, view_dropout=0.8,
                    label_dropout=0.1, iterations=1000, views_per_step=8, grid_lr=0.03, fake_lr=1e-4,
                    camera_dropout=0.1, low_guidance=7.5, high_guidance=100.0, bsd_scale=15.0, particles=4,
                    esd_lambda=0.5, cds_gap=[20, 80], inversion_steps=20,
                    fidelity_objects=["green cube", "red sphere", "blue cylinder"], diversity_shape="cube",
                    variance_draws=64, amortised_sizes=[4, 16], amortised_grid=16, amortised_hidden=256,
                    amortised_steps=1000, amortised_batch=16, amortised_lr=1e-3, asd_shift=[0, 200], eval_views=16,
                    eval_points=10),
    }

    @model_validator(mode="after")
    def _checks(self):
        for obj in self.fidelity_objects:
            parse_object(obj)
        if self.diversity_shape not in v3.PRIMITIVES:
            raise ValueError(f"diversity_shape={self.diversity_shape!r}; allowed: {', '.join(v3.PRIMITIVES)}")
        if self.eval_views % 4:
            raise ValueError(f"eval_views must be a multiple of 4 (front, sides and back), got {self.eval_views}")
        if self.cds_gap[0] > self.cds_gap[1] or self.asd_shift[0] > self.asd_shift[1]:
            raise ValueError("cds_gap and asd_shift are [low, high] ranges with low <= high")
        small, large = self.amortised_sizes
        if not small < large <= len(v3.PRIMITIVES) * len(v3.COLOURS):
            raise ValueError(f"amortised_sizes must be [small, large] with small < large <= "
                             f"{len(v3.PRIMITIVES) * len(v3.COLOURS)}, got {self.amortised_sizes}")
        if self.views_per_step % self.particles:
            raise ValueError(f"views_per_step ({self.views_per_step}) must be a multiple of particles ({self.particles})")
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


# ---------------------------------------------------------------- prompts, renders and the prior


@dataclass(frozen=True)
class Prompts:
    """Every object (a primitive in a colour, or a probe in its colour) and every colour-free primitive.

    Prompt ids: objects first, then "a <shape>" for each primitive. A prior label is prompt * 4 + view, with
    view 0/1/2 for DreamFusion's front/side/back words and 3 for none; the null label is n_prompts * 4.
    """

    objects: tuple[tuple[str, str], ...] = tuple((s, c) for s in v3.PRIMITIVES for c in v3.COLOURS) + \
        tuple(PROBE_COLOURS.items())

    @property
    def n_prompts(self) -> int:
        return len(self.objects) + len(v3.PRIMITIVES)

    @property
    def n_labels(self) -> int:
        return 4 * self.n_prompts

    def object_id(self, shape: str, colour: str) -> int:
        return self.objects.index((shape, colour))

    def shape_id(self, shape: str) -> int:
        return len(self.objects) + v3.PRIMITIVES.index(shape)

    def caption(self, prompt: int) -> str:
        if prompt >= len(self.objects):
            return f"a {v3.PRIMITIVES[prompt - len(self.objects)]}"
        shape, colour = self.objects[prompt]
        return f"a {SHAPE_WORD[shape]}" if shape in v3.PROBES else f"a {colour} {shape}"


def labels(prompt: torch.Tensor | int, azimuth: torch.Tensor | None) -> torch.Tensor:
    """Prior labels prompt * 4 + view word; ``azimuth`` None means no view word."""
    prompt = torch.as_tensor(prompt, device=None if azimuth is None else azimuth.device)
    view = torch.full_like(prompt, NO_VIEW) if azimuth is None else v3.view_of(azimuth)
    return prompt * 4 + view


def to_model(images: torch.Tensor) -> torch.Tensor:
    """Renders (n, 3, H, W) in [0, 1] -> the prior's flat vectors in [-1, 1]."""
    return (2 * images - 1).reshape(len(images), -1)


@dataclass
class Bed:
    prompts: Prompts
    schedule: Schedule
    prior: torch.nn.Module
    renders: torch.Tensor        # (objects, views, 3, H, W) ground-truth training renders
    azimuths: torch.Tensor       # (objects, views)
    truth: dict[str, torch.Tensor]  # object key -> turntable renders (eval_views, 3, H, W)
    truth_alpha: dict[str, torch.Tensor]  # object key -> their opacity (eval_views, H, W)


def object_key(shape: str, colour: str) -> str:
    return f"{colour} {shape}"


def render_objects(prompts: Prompts, n_views: int, resolution: int, front_share: float,
                   generator: torch.Generator, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Front-biased ground-truth renders of every object: (objects, views, 3, H, W) and their azimuths."""
    renders, azimuths = [], []
    for shape, colour in prompts.objects:
        cams = v3.orbit(n_views, generator, front_share)
        renders.append(v3.render_field(v3.scene_field(shape, colour), cams, resolution, device=device))
        azimuths.append(cams.azimuth)
    return torch.stack(renders), torch.stack(azimuths)


def make_prior(p: Params, prompts: Prompts) -> torch.nn.Module:
    dim = 3 * p.resolution ** 2
    if p.prior == "unet":
        return UNetDenoiser(p.resolution, 3, prompts.n_labels, p.unet_channels)
    return MLPDenoiser(dim, p.prior_hidden, prompts.n_labels)


def build_bed(run: Run) -> Bed:
    """Render the scenes and train the prior (first seed; checkpointed like any ``fit``)."""
    p = run.params
    prompts = Prompts()
    gen = torch.Generator().manual_seed(derived_seed(run.seeds[0], 1))
    renders, azimuths = render_objects(prompts, p.views_per_object, p.resolution, p.front_share, gen, run.device)
    flat, n_views = to_model(renders.flatten(0, 1)), renders.shape[1]
    object_ids = torch.arange(len(prompts.objects)).repeat_interleave(n_views)
    shape_ids = torch.tensor([prompts.shape_id(s) if s in v3.PRIMITIVES else -1 for s, _ in prompts.objects]
                             ).repeat_interleave(n_views)
    views = v3.view_of(azimuths.flatten())

    def sample(g):
        i = torch.randint(0, len(flat), (p.prior_batch,), generator=g)
        prompt = object_ids[i]
        drop_colour = (torch.rand(len(i), generator=g) < p.colour_dropout) & (shape_ids[i] >= 0)
        prompt = torch.where(drop_colour, shape_ids[i], prompt)
        view = torch.where(torch.rand(len(i), generator=g) < p.view_dropout, NO_VIEW, views[i])
        return flat[i], prompt * 4 + view  # on the CPU; fit moves the batch to the prior's device

    schedule = Schedule()
    torch.manual_seed(derived_seed(run.seeds[0], 2))
    prior = make_prior(p, prompts).to(run.device)
    prior = train_denoiser(run, "prior", prior, schedule, sample, p.prior_steps, p.label_dropout, p.prior_lr)
    cams = v3.turntable(p.eval_views)
    truth, truth_alpha = {}, {}
    for s, c in prompts.objects:
        field = v3.scene_field(s, c)
        truth[object_key(s, c)] = v3.render_field(field, cams, p.resolution)
        truth_alpha[object_key(s, c)] = v3.opacity(truth[object_key(s, c)], v3.render_field(field, cams, p.resolution,
                                                                                              background=0.0))
    return Bed(prompts, schedule, prior, renders, azimuths, truth, truth_alpha)


def prior_samples(bed: Bed, prompt: int, view: int, n: int, guidance: float, steps: int = 50, seed: int = 0):
    """DDIM samples of the prior for one prompt and view word: what it believes a view looks like."""
    dim = bed.prior.dim
    device = next(bed.prior.parameters()).device
    lab = torch.full((n,), prompt * 4 + view, dtype=torch.long, device=device)
    noise = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)).to(device)
    out = bed.schedule.sample(lambda x, t: guided(bed.prior, x, t, lab, guidance), noise, steps)
    return ((out.reshape(n, 3, *(2 * [int(math.sqrt(dim // 3))])) + 1) / 2).clamp(0, 1)


# ---------------------------------------------------------------- single-object optimisation


@dataclass(frozen=True)
class Method:
    """One way of turning the prior into a gradient for renders."""

    kind: Literal["reconstruction", "sds", "vsd", "bsd", "cds", "csd", "csm", "asd"]
    guidance: float = 7.5
    view_prompt: bool = True
    particles: int = 1
    esd_lambda: float = 1.0
    annealed: bool = True  # CDS: t' falls over the run with one fixed noise (False: random t, fresh noise)


class Scene(torch.nn.Module):
    """The particles (voxel grids), the fake score when the method has one, CDS's fixed noise and a step
    counter: one module, so one checkpoint holds the whole optimisation."""

    def __init__(self, p: Params, method: Method, prior: torch.nn.Module, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.grids = torch.nn.ModuleList(v3.VoxelGrid(p.grid_size) for _ in range(method.particles))
        with torch.no_grad():
            for grid in self.grids:  # a random colour field per particle, so particles can part ways
                grid.colour.normal_(0, 0.5)
        self.fake = None
        if method.kind == "vsd":
            self.fake = copy.deepcopy(prior).requires_grad_(True)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("fixed_noise", torch.randn(1, 3 * p.resolution ** 2, generator=gen))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


def _cameras_batch(p: Params, n: int, gen: torch.Generator) -> dict:
    """Uniform azimuths (the object has no front yet), elevations in [0, 30] degrees."""
    return {"azimuth": (torch.rand(n, generator=gen) * 2 - 1) * math.pi,
            "elevation": torch.rand(n, generator=gen) * math.radians(30)}


def step_batch(p: Params, schedule: Schedule, method: Method, truth: torch.Tensor | None = None):
    """Everything random in one optimisation step, from the loop's generator (exact resume)."""
    dim = 3 * p.resolution ** 2

    def batch(gen):
        n = p.views_per_step
        out = _cameras_batch(p, n, gen)
        out["t"] = schedule.sample_timesteps(n, gen)
        out["noise"] = torch.randn(n, dim, generator=gen)
        out["t_fake"] = schedule.sample_timesteps(n, gen)
        out["noise_fake"] = torch.randn(n, dim, generator=gen)
        out["drop_camera"] = torch.rand(n, generator=gen) < p.camera_dropout
        out["gap"] = torch.randint(p.cds_gap[0], p.cds_gap[1] + 1, (n,), generator=gen)
        out["inversion"] = int(torch.randint(1, p.inversion_steps, (), generator=gen))
        return out
    return batch


def _eps(schedule: Schedule, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return schedule.convert(out, x_t, t, "epsilon")


def ddim_invert(net, schedule: Schedule, x0: torch.Tensor, lab: torch.Tensor, n_grid: int, k: int):
    """Deterministic DDIM inversion of x0 with the unconditional prediction, k steps up a grid of ``n_grid``
    (diffusers' ``DDIMInverseScheduler``); returns (x_t, t) with t the grid's k-th timestep."""
    inverse = DDIMInverseScheduler.from_config(schedule.scheduler.config, set_alpha_to_one=True)
    inverse.set_timesteps(n_grid)
    x = x0
    for t in inverse.timesteps[:k]:
        t_batch = torch.full((len(x),), int(t), dtype=torch.long, device=x.device)
        x = inverse.step(net(x, t_batch, torch.full_like(lab, net.n_classes)), t, x).prev_sample
    return x, torch.full((len(x),), int(inverse.timesteps[k - 1]), dtype=torch.long, device=x.device)


def image_gradient(p: Params, schedule: Schedule, prior, method: Method, x: torch.Tensor, lab: torch.Tensor,
                   batch: dict, fake=None, fake_lab=None) -> torch.Tensor:
    """The method's gradient g on flat renders ``x`` (model space), with w(t) = sigma_t^2 (threestudio's
    'sds' weighting). ``lab`` labels the prior, ``fake_lab`` the fake score (prompt and the camera's view,
    whatever the prior is told). Computed without a graph; only the renderer is differentiated."""
    t, noise = batch["t"], batch.get("noise")
    with torch.no_grad():
        if method.kind == "cds":
            # one ODE step from t = t' + gap down to t', from x + sigma_t eps* with the run's fixed noise eps*
            t_next = batch["t_next"]
            t = t_next + batch["gap"]
            abar, abar_next = schedule.coefficients(t, 1)[0] ** 2, schedule.coefficients(t_next, 1)[0] ** 2
            sigma = ((1 - abar) / abar).sqrt()[:, None]          # variance-exploding sigma
            sigma_next = ((1 - abar_next) / abar_next).sqrt()[:, None]
            z_t = x + sigma * batch["fixed_noise"]
            x_t = z_t / (1 + sigma ** 2).sqrt()                  # back to the VP input of the prior
            eps_t = _eps(schedule, guided(prior, x_t, t, lab, method.guidance), x_t, t)
            z_next = sd.euler_step(z_t, eps_t, sigma, sigma_next)
            x_next = z_next / (1 + sigma_next ** 2).sqrt()
            eps_next = _eps(schedule, guided(prior, x_next, t_next, lab, method.guidance), x_next, t_next)
            return sd.cds(eps_t, eps_next, sigma, sigma_next, weight=(1 - abar)[:, None])
        if method.kind == "csm":
            x_t, t = ddim_invert(prior, schedule, x, lab, p.inversion_steps, batch["inversion"])
        else:
            x_t = schedule.add_noise(x, noise, t)
        _, sigma = schedule.coefficients(t, 2)
        w = sigma ** 2
        both = prior(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([lab, torch.full_like(lab, prior.n_classes)]))
        eps_cond, eps_uncond = (_eps(schedule, o, x_t, t) for o in both.chunk(2))
        eps_cfg = sd.cfg(eps_uncond, eps_cond, method.guidance)
        if method.kind == "sds":
            return sd.sds(eps_cfg, noise, w)
        if method.kind in ("csd", "csm"):
            return sd.csd(eps_uncond, eps_cond, method.guidance, w)
        if method.kind == "bsd":
            # PlacidDreamer's train_step_BSD: c = s_c (eps_y - eps_0), d = eps_0 (no noise subtracted; E[eps] = 0),
            # g = sqrt(abar_t) (a c + (1 - a) d), a the min-norm mix
            g, _ = sd.bsd(method.guidance * (eps_cond - eps_uncond), eps_uncond)
            alpha, _ = schedule.coefficients(t, 2)
            return alpha * g
        if method.kind == "vsd":
            eps_fake_camera = _eps(schedule, fake(x_t, t, fake_lab), x_t, t)
            eps_fake = eps_fake_camera
            if method.esd_lambda != 1.0:  # the camera-free fake score: the same prompt, no view
                eps_fake_free = _eps(schedule, fake(x_t, t, fake_lab - fake_lab % 4 + NO_VIEW), x_t, t)
                eps_fake = sd.esd_fake(eps_fake_free, eps_fake_camera, method.esd_lambda)
            return sd.vsd(eps_cfg, eps_fake, w)
        if method.kind == "asd":
            t_shift = (t + batch["shift"]).clamp(max=schedule.num_train_timesteps - 1)
            x_shift = schedule.add_noise(x, noise, t_shift)
            eps_shift = _eps(schedule, prior(x_shift, t_shift, lab), x_shift, t_shift)
            return sd.asd(eps_cfg, eps_shift, w)
    raise ValueError(f"method {method.kind!r} has no image gradient here")


def fake_score_loss(schedule: Schedule, fake, x: torch.Tensor, lab: torch.Tensor, batch: dict):
    """The fake score's denoising loss on detached renders, camera-conditioned with some labels camera-free."""
    x = x.detach()
    camera_free = lab - lab % 4 + NO_VIEW
    fake_lab = torch.where(batch["drop_camera"], camera_free, lab)
    x_t = schedule.add_noise(x, batch["noise_fake"], batch["t_fake"])
    return denoising_loss(fake(x_t, batch["t_fake"], fake_lab), schedule.target(x, batch["noise_fake"], batch["t_fake"]))


def object_loss(scene: Scene, batch: dict, p: Params, bed: Bed, method: Method, prompt: int,
                truth_field=None) -> tuple[torch.Tensor, dict]:
    """One step: render every particle's share of the views, get the method's image gradient, and (VSD) fit the
    fake score to the same renders. Returns the surrogate loss (its gradient is g through the renderer)."""
    n, k = p.views_per_step, len(scene.grids)
    # particle i renders views i, i + k, ...; everything below follows that order
    order = torch.cat([torch.arange(i, n, k) for i in range(k)])
    cams = _subset(v3.Cameras(batch["azimuth"], batch["elevation"]), order)
    images = torch.cat([scene.grids[i].render(_subset(cams, slice(i * (n // k), (i + 1) * (n // k))), p.resolution,
                                              p.ray_samples) for i in range(k)])
    progress = float(scene.step) / p.iterations
    scene.step += 1
    if method.kind == "reconstruction":
        target = v3.render_field(truth_field, cams, p.resolution, device=images.device).to(images.device)
        return 0.5 * ((images - target) ** 2).reshape(n, -1).sum(1).mean(), {}
    x = to_model(images)
    azimuth = cams.azimuth if method.view_prompt else None
    prompts = torch.full((n,), prompt, device=images.device)
    lab = labels(prompts, azimuth)
    fake_lab = labels(prompts, cams.azimuth.to(images.device))
    if method.annealed:  # CDS: t' falls linearly over the run (Consistent3D's schedule), t = t' + gap
        hi = round(0.98 * bed.schedule.num_train_timesteps) - p.cds_gap[1]  # t <= 0.98 T, as the other methods
        batch = {**batch, "fixed_noise": scene.fixed_noise,
                 "t_next": torch.full_like(batch["t"], round(hi - (hi - 20) * progress))}
    else:  # the ablation: SDS's random t and fresh noise, only the gradient is CDS's
        batch = {**batch, "fixed_noise": batch["noise"], "t_next": (batch["t"] - batch["gap"]).clamp(min=1)}
    g = image_gradient(p, bed.schedule, bed.prior, method, x, lab, batch, fake=scene.fake, fake_lab=fake_lab)
    loss = sd.surrogate(x, g)
    if scene.fake is not None:
        loss = loss + fake_score_loss(bed.schedule, scene.fake, x, fake_lab, batch)
    return loss, {"grad_norm": g.norm(dim=1).mean().item()}


def _subset(cams: v3.Cameras, index) -> v3.Cameras:
    return v3.Cameras(cams.azimuth[index], cams.elevation[index])


# ---------------------------------------------------------------- measures


PALETTE = {name: torch.tensor(rgb) for name, rgb in v3.COLOURS.items()}


def object_colour(images: torch.Tensor, white: float = 0.9) -> torch.Tensor:
    """Mean rgb over the object's pixels (not near the white background) of turntable renders."""
    mask = (images.amin(1, keepdim=True) < white).float()
    return (images * mask).sum((0, 2, 3)) / mask.sum().clamp_min(1.0)


def colour_name(rgb: torch.Tensor) -> str:
    """The palette colour nearest in hue to ``rgb`` (both normalised to unit sum, so brightness is ignored)."""
    unit = lambda c: c / c.sum().clamp_min(1e-6)  # noqa: E731
    return min(PALETTE, key=lambda name: float(((unit(rgb) - unit(PALETTE[name])) ** 2).sum()))


def sample_chroma(images: torch.Tensor, white: float = 0.9) -> float:
    """Mean chroma, max(rgb) - min(rgb), over the object pixels of 2-D images (n, 3, H, W) on a white
    background: the pixels whose darkest channel is below ``white`` (as ``object_colour``); 0 with none.
    Prior samples have no opacity, so this is their counterpart of ``voxel3d.saturation``."""
    chroma = images.amax(1) - images.amin(1)
    mask = images.amin(1) < white
    return float(chroma[mask].mean()) if mask.any() else 0.0


def prior_chroma(bed: Bed, prompt: int, guidance: float, seed: int) -> float:
    """Chroma of the prior's own DDIM samples for ``prompt`` at ``guidance``, over the three view words."""
    samples = torch.cat([prior_samples(bed, prompt, view, PRIOR_SAMPLES_PER_VIEW, guidance,
                                       seed=derived_seed(seed, 88, view)) for view in range(3)])
    return sample_chroma(samples.cpu())


def turntable_renders(grid_density, grid_colour, p: Params, background: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        return v3.render_grid(grid_density, grid_colour, v3.turntable(p.eval_views), p.resolution,
                              p.ray_samples, background).clamp(0, 1).cpu()


def image_metrics(renders: torch.Tensor, alpha: torch.Tensor, truth: torch.Tensor, truth_alpha: torch.Tensor,
                  probe: str | None = None) -> dict[str, float]:
    """PSNR and SSIM at the best azimuth alignment, saturation (chroma of opaque pixels) and its error against
    the truth's, and (probes) the Janus measure."""
    psnr, shift = v3.aligned_psnr(renders, truth)
    ssim = structural_similarity_index_measure(renders.roll(shift, 0), truth, data_range=1.0)
    saturation, true_saturation = v3.saturation(renders, alpha), v3.saturation(truth, truth_alpha)
    out = {"psnr": float(psnr), "ssim": float(ssim), "saturation": float(saturation),
           "saturation_error": float((saturation - true_saturation).abs())}
    if probe is not None:
        out["janus"] = float(v3.janus_score(renders, truth, v3.turntable(len(truth)), probe))
    return out


def scene_metrics(scene: Scene, p: Params, truth: tuple[torch.Tensor, torch.Tensor] | None,
                  probe: str | None = None) -> dict[str, float]:
    """Metrics averaged over the particles against ``truth`` (renders, opacity), plus their colours' spread."""
    renders = [turntable_renders(g.density, g.colour, p) for g in scene.grids]
    out: dict[str, float] = {}
    if truth is not None:
        alphas = [v3.opacity(r, turntable_renders(g.density, g.colour, p, 0.0)) for r, g in zip(renders, scene.grids)]
        rows = [image_metrics(r, a, *truth, probe) for r, a in zip(renders, alphas)]
        out = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
    colours = [object_colour(r) for r in renders]
    out["distinct_colours"] = float(len({colour_name(c) for c in colours}))
    out["colour_spread"] = float(torch.stack(colours).std(0, unbiased=False).norm()) if len(colours) > 1 else 0.0
    return out


# ---------------------------------------------------------------- single objects


def arm_method(p: Params, arm: str) -> Method:
    low, high = p.low_guidance, p.high_guidance
    return {"reconstruction": Method("reconstruction"), "sds_low": Method("sds", low), "sds": Method("sds", low),
            "sds_high": Method("sds", high), "sds_noview": Method("sds", low, view_prompt=False),
            "sds_particles": Method("sds", low, particles=p.particles),
            "vsd": Method("vsd", low, particles=p.particles),
            "vsd_noview": Method("vsd", low, view_prompt=False),
            "esd_noview": Method("vsd", low, view_prompt=False, esd_lambda=p.esd_lambda),
            "bsd": Method("bsd", p.bsd_scale),
            "cds": Method("cds", low), "cds_random": Method("cds", low, annealed=False), "csd": Method("csd", low),
            "csm": Method("csm", low)}[arm]


def _optimizer(scene: Scene, p: Params) -> torch.optim.Optimizer:
    groups = [{"params": list(scene.grids.parameters()), "lr": p.grid_lr}]
    if scene.fake is not None:
        groups.append({"params": list(scene.fake.parameters()), "lr": p.fake_lr})
    return torch.optim.Adam(groups)


def optimise_object(run: Run, bed: Bed, seed: int, name: str, method: Method, prompt: int,
                    truth: tuple[torch.Tensor, torch.Tensor] | None, shape: str,
                    colour: str) -> tuple[Scene, dict[str, float], list[float]]:
    """Optimise one object's particles; return the scene, its final metrics and its PSNR at ``eval_points`` + 1
    points (empty without a ground truth)."""
    p = run.params
    scene = Scene(p, method, bed.prior, derived_seed(seed, prompt, len(name), sum(map(ord, name)))).to(run.device)
    probe = shape if shape in v3.PROBES else None
    field = v3.scene_field(shape, colour)

    def psnr(s: Scene) -> dict[str, float]:  # the cheap measure along the way: one render per particle
        return {"psnr": float(np.mean([v3.aligned_psnr(turntable_renders(g.density, g.colour, p), truth[0])[0]
                                       for g in s.grids]))}

    evaluate = None if truth is None else psnr
    curve = [] if truth is None else [psnr(scene)["psnr"]]
    result = run.fit(name, seed, scene, lambda s, b: object_loss(s, b, p, bed, method, prompt, field),
                     step_batch(p, bed.schedule, method), steps=p.iterations, optimizer=_optimizer(scene, p),
                     evaluate=evaluate, eval_every=None if truth is None else p.iterations // p.eval_points)
    curve += result.column("psnr")[:p.eval_points]
    with torch.no_grad():
        final = scene_metrics(scene, p, truth, probe)
    return scene, final, curve


def gradient_variance(bed: Bed, p: Params, scene: Scene, prompt: int, seed: int, timesteps: list[int]) -> dict:
    """E || g - E g ||^2 over noise draws at fixed renders, per timestep: SDS (fresh noise each draw) against
    CDS (the noise fixed per draw, one ODE step of ``cds_gap`` mean length), both at the low guidance."""
    gen = torch.Generator().manual_seed(derived_seed(seed, 77))
    cams = v3.Cameras(torch.tensor([0.0, math.pi / 2, math.pi, -math.pi / 2]), torch.full((4,), math.radians(15)))
    with torch.no_grad():
        x = to_model(scene.grids[0].render(cams, p.resolution, p.ray_samples)).to(run_device(bed))
    lab = labels(torch.full((4,), prompt), cams.azimuth).to(x.device)
    gap = (p.cds_gap[0] + p.cds_gap[1]) // 2
    out = {"sds": [], "cds": []}
    for t in timesteps:
        grads = {"sds": [], "cds": []}
        for _ in range(p.variance_draws):
            noise = torch.randn(x.shape, generator=gen).to(x.device)
            tt = torch.full((4,), t, dtype=torch.long, device=x.device)
            batch = {"t": tt, "noise": noise}
            grads["sds"].append(image_gradient(p, bed.schedule, bed.prior, Method("sds", p.low_guidance), x, lab, batch))
            # CDS from t down to t' = t - gap, its fixed noise being this draw
            batch = {"t": tt, "t_next": tt - gap, "gap": torch.full_like(tt, gap), "fixed_noise": noise}
            grads["cds"].append(image_gradient(p, bed.schedule, bed.prior, Method("cds", p.low_guidance), x, lab,
                                               batch))
        for kind, gs in grads.items():
            g = torch.stack(gs)  # (draws, views, dim)
            out[kind].append(float(((g - g.mean(0)) ** 2).sum(-1).mean()))
    return out


def run_device(bed: Bed) -> torch.device:
    return next(bed.prior.parameters()).device


VARIANCE_TIMESTEPS = [200, 400, 600, 800]


def run_objects(run: Run, seed: int, bed: Bed) -> dict:
    """Every single-object arm for one seed; records metrics and returns the final renders."""
    p = run.params
    prompts, shown, metrics = bed.prompts, {}, {}
    jobs = []
    for obj in p.fidelity_objects:
        shape, colour = parse_object(obj)
        jobs += [(arm, obj, shape, colour, prompts.object_id(shape, colour)) for arm in OBJECT_ARMS]
    for probe, colour in PROBE_COLOURS.items():
        jobs += [(arm, probe, probe, colour, prompts.object_id(probe, colour)) for arm in JANUS_ARMS]
    shape = p.diversity_shape
    jobs += [(arm, f"a {shape}", shape, "blue", prompts.shape_id(shape)) for arm in ("sds_particles", "vsd")]
    for arm, key, shape, colour, prompt in jobs:
        method = arm_method(p, arm)
        colour_free = key.startswith("a ")
        truth = None if colour_free else (bed.truth[object_key(shape, colour)], bed.truth_alpha[object_key(shape, colour)])
        tag = f"{key.replace(' ', '-')}/{arm}"
        scene, final, curve = optimise_object(run, bed, seed, tag, method, prompt, truth, shape, colour)
        for name, value in final.items():
            metrics[f"{tag}/{name}"] = value
        if curve:
            metrics[f"{tag}/curve_psnr"] = curve
        shown[tag] = [turntable_renders(g.density, g.colour, p) for g in scene.grids]
        if arm == "sds_low" and key == p.fidelity_objects[0]:
            variance = gradient_variance(bed, p, scene, prompt, seed, VARIANCE_TIMESTEPS)
            metrics["variance_sds"], metrics["variance_cds"] = variance["sds"], variance["cds"]
        if arm == "reconstruction":  # the ceiling's own start and convergence (the test-bed health table)
            metrics[f"{tag}/psnr_start"] = curve[0]
            metrics[f"{tag}/psnr_drift"] = relative_change(curve, CURVE_WINDOW)
    for obj in p.fidelity_objects:  # the truth's chroma and the prior's own, at both guidance scales (cheap)
        shape, colour = parse_object(obj)
        key, prompt = obj.replace(" ", "-"), prompts.object_id(shape, colour)
        metrics[f"{key}/truth_saturation"] = float(v3.saturation(bed.truth[object_key(shape, colour)],
                                                                 bed.truth_alpha[object_key(shape, colour)]))
        metrics[f"{key}/prior/chroma_low"] = prior_chroma(bed, prompt, p.low_guidance, seed)
        metrics[f"{key}/prior/chroma_high"] = prior_chroma(bed, prompt, p.high_guidance, seed)
    run.record(seed, **metrics)
    return shown


# ---------------------------------------------------------------- amortised generator (ScaleDreamer)


def amortised_prompts(n: int) -> list[tuple[str, str]]:
    """The first ``n`` coloured primitives in an order that spreads shapes and colours: (shape k, colour k + j)."""
    shapes, colours = v3.PRIMITIVES, list(v3.COLOURS)
    order = [(shapes[k], colours[(k + j) % len(colours)]) for j in range(len(colours)) for k in range(len(shapes))]
    return order[:n]


class PromptToGrid(torch.nn.Module):
    """An amortised generator: a prompt's one-hot shape and colour -> MLP -> raw density and colour of a grid.
    Shared weights, so prompts compete for capacity as their number grows."""

    def __init__(self, size: int, hidden: int):
        super().__init__()
        self.size = size
        self.net = mlp(len(v3.PRIMITIVES) + len(v3.COLOURS), [hidden, hidden], 4 * size ** 3)
        last = self.net[-1]
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.zero_()
            last.bias[:size ** 3] = -2.0  # start nearly empty, like a fresh VoxelGrid

    def forward(self, shape_ids: torch.Tensor, colour_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = torch.cat([F.one_hot(shape_ids, len(v3.PRIMITIVES)), F.one_hot(colour_ids, len(v3.COLOURS))], -1)
        out = self.net(code.float()).reshape(len(code), 4, self.size, self.size, self.size)
        return out[:, :1], out[:, 1:]


class Amortised(torch.nn.Module):
    def __init__(self, p: Params, kind: str, prior: torch.nn.Module, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.generator = PromptToGrid(p.amortised_grid, p.amortised_hidden)
        self.fake = copy.deepcopy(prior).requires_grad_(True) if kind == "vsd" else None
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


def amortised_loss(model: Amortised, batch: dict, p: Params, bed: Bed, method: Method, pool: list[tuple[str, str]]):
    shapes = torch.tensor([v3.PRIMITIVES.index(pool[i][0]) for i in batch["prompt"]])
    colours = torch.tensor([list(v3.COLOURS).index(pool[i][1]) for i in batch["prompt"]])
    density, colour = model.generator(shapes.to(batch["t"].device), colours.to(batch["t"].device))
    cams = v3.Cameras(batch["azimuth"], batch["elevation"])
    images = torch.cat([v3.render_grid(density[i:i + 1], colour[i:i + 1], _subset(cams, slice(i, i + 1)),
                                       p.resolution, p.ray_samples) for i in range(len(shapes))])
    prompt_ids = torch.tensor([bed.prompts.object_id(*pool[i]) for i in batch["prompt"]], device=images.device)
    x = to_model(images)
    lab = labels(prompt_ids, cams.azimuth)
    g = image_gradient(p, bed.schedule, bed.prior, method, x, lab, batch, fake=model.fake, fake_lab=lab)
    loss = sd.surrogate(x, g)
    if model.fake is not None:
        loss = loss + fake_score_loss(bed.schedule, model.fake, x, lab, batch)
    model.step += 1
    return loss


def amortised_batch(p: Params, schedule: Schedule, n_prompts: int):
    dim = 3 * p.resolution ** 2

    def batch(gen):
        n = p.amortised_batch
        out = _cameras_batch(p, n, gen)
        out["prompt"] = torch.randint(0, n_prompts, (n,), generator=gen)
        out["t"] = schedule.sample_timesteps(n, gen)
        out["noise"] = torch.randn(n, dim, generator=gen)
        out["shift"] = torch.randint(p.asd_shift[0], p.asd_shift[1] + 1, (n,), generator=gen)
        out["t_fake"] = schedule.sample_timesteps(n, gen)
        out["noise_fake"] = torch.randn(n, dim, generator=gen)
        out["drop_camera"] = torch.rand(n, generator=gen) < p.camera_dropout
        return out
    return batch


def amortised_psnr(model: Amortised, p: Params, bed: Bed, evaluated: list[tuple[str, str]]) -> float:
    """Mean aligned PSNR over ``evaluated`` prompts (the small set, shared by both sizes)."""
    shapes = torch.tensor([v3.PRIMITIVES.index(s) for s, _ in evaluated])
    colours = torch.tensor([list(v3.COLOURS).index(c) for _, c in evaluated])
    device = next(model.parameters()).device
    density, colour = model.generator(shapes.to(device), colours.to(device))
    return float(np.mean([float(v3.aligned_psnr(turntable_renders(density[i:i + 1], colour[i:i + 1], p),
                                                 bed.truth[object_key(*evaluated[i])])[0])
                          for i in range(len(evaluated))]))


def run_amortised(run: Run, seed: int, bed: Bed) -> dict:
    """ASD and VSD generators on the small and the large prompt set; PSNR on the small set's prompts."""
    p = run.params
    small = amortised_prompts(p.amortised_sizes[0])
    metrics, shown = {}, {}
    for kind in AMORTISED_ARMS:
        method = Method(kind, p.low_guidance)
        for size in p.amortised_sizes:
            pool = amortised_prompts(size)
            model = Amortised(p, kind, bed.prior, derived_seed(seed, 500 + size)).to(run.device)
            groups = [{"params": list(model.generator.parameters()), "lr": p.amortised_lr}]
            if model.fake is not None:
                groups.append({"params": list(model.fake.parameters()), "lr": p.fake_lr})
            evaluate = lambda m: {"psnr": amortised_psnr(m, p, bed, small)}  # noqa: E731
            initial = evaluate(model)["psnr"]
            result = run.fit(f"amortised/{kind}-{size}", seed, model,
                             lambda m, b: amortised_loss(m, b, p, bed, method, pool),
                             amortised_batch(p, bed.schedule, size), steps=p.amortised_steps,
                             optimizer=torch.optim.Adam(groups), evaluate=evaluate,
                             eval_every=p.amortised_steps // p.eval_points)
            curve = [initial] + result.column("psnr")[:p.eval_points]
            metrics[f"amortised/{kind}-{size}/psnr"] = curve[-1]
            metrics[f"amortised/{kind}-{size}/curve_psnr"] = curve
            with torch.no_grad():
                shapes = torch.tensor([v3.PRIMITIVES.index(s) for s, _ in small], device=run.device)
                colours = torch.tensor([list(v3.COLOURS).index(c) for _, c in small], device=run.device)
                density, colour = model.generator(shapes, colours)
            shown[f"amortised/{kind}-{size}"] = [turntable_renders(density[i:i + 1], colour[i:i + 1], p)
                                                 for i in range(len(small))]
    run.record(seed, **metrics)
    return shown


def run_seed(run: Run, seed: int, bed: Bed) -> dict:
    """Everything for one seed (``distillbook.core.parallel.map_seeds`` runs seeds side by side)."""
    return {**run_objects(run, seed, bed), **run_amortised(run, seed, bed)}


# ---------------------------------------------------------------- claims

ARM_LABELS = {"reconstruction": "reconstruction (ceiling)", "sds_low": "SDS, low CFG", "sds_high": "SDS, high CFG",
              "vsd": "VSD", "bsd": "BSD", "cds": "CDS", "cds_random": "CDS, random t and fresh noise (ablation)",
              "csd": "CSD (classifier term)",
              "csm": "CSM (classifier term, DDIM-inverted noise)", "sds_noview": "SDS, no view word",
              "sds": "SDS with the view word", "vsd_noview": "VSD, no view word", "esd_noview": "ESD, no view word",
              "sds_particles": "SDS, independent runs"}


def _tag(obj: str, arm: str) -> str:
    return f"{obj.replace(' ', '-')}/{arm}"


def object_mean(run: Run, arm: str, metric: str) -> np.ndarray:
    """Per-seed mean of a metric over the fidelity objects (for the figures; claims are per object)."""
    return np.mean([run.values(f"{_tag(o, arm)}/{metric}") for o in run.params.fidelity_objects], axis=0)


def _grouped(names, value):
    """``{name: value(name)}`` over two or more groups; the bare value when there is one (the smoke profile)."""
    names = list(names)
    return {n: value(n) for n in names} if len(names) > 1 else value(names[0])


def closest_palette_pair() -> tuple[str, str, float]:
    """The two palette colours nearest each other in rgb, and their distance."""
    names = list(v3.COLOURS)
    rgb = {n: np.array(v3.COLOURS[n]) for n in names}
    return min(((a, b, float(np.linalg.norm(rgb[a] - rgb[b]))) for i, a in enumerate(names) for b in names[i + 1:]),
               key=lambda x: x[2])


def palette_margin(particles: int) -> float:
    """The colour spread that one of ``particles`` particles taking the nearest other palette colour adds:
    the std over particles of their mean rgb (as ``scene_metrics``) is sqrt(k - 1) / k * d, d the smallest
    distance between two palette colours (renders of the flat-coloured scenes keep the palette colour)."""
    return float(math.sqrt(particles - 1) / particles * closest_palette_pair()[2])


CHROMA_MARGIN = 0.02
CHROMA_RATIONALE = ("0.02 of the chroma range [0, 1] (five levels of 8-bit colour) is the smallest saturation "
                    "change worth calling a change")
PSNR_MARGIN = 0.5
PSNR_RATIONALE = ("0.5 dB, the smallest PSNR gain customarily reported as an improvement: a 12% change of MSE "
                  "(10^0.05)")
JANUS_MARGIN = 0.05
JANUS_RATIONALE = ("1/16 of a second full front (about 0.8 by voxel3d.janus_score's construction); the head's "
                   "measure moves in steps of about 0.02 (a pixel of eye in a back view), so 0.05 is two to three "
                   "pixels")


def claims(p: Params) -> tuple[Claim, ...]:
    lo, hi = f"{p.low_guidance:g}", f"{p.high_guidance:g}"
    k = p.particles
    spread = palette_margin(k)
    near_a, near_b, near_d = closest_palette_pair()
    spread_why = (f"one of {k} particles in the nearest other palette colour adds sqrt({k}-1)/{k} x {near_d:.3f} "
                  f"(the closest palette pair, {near_a} and {near_b}) = {spread:.3f} to the colour spread: less "
                  "than that is not a second colour")
    chroma = dict(margin=CHROMA_MARGIN, rationale=CHROMA_RATIONALE, floor=0.0, ceiling=1.0,
                  saturation_tol=CHROMA_MARGIN)
    psnr = dict(margin=PSNR_MARGIN, rationale=PSNR_RATIONALE, saturation_tol=PSNR_MARGIN)
    janus = dict(margin=JANUS_MARGIN, rationale=JANUS_RATIONALE, floor=0.0, saturation_tol=JANUS_MARGIN,
                 region=("<", 0.0))
    first, last = _tag(p.fidelity_objects[0], ""), _tag(p.fidelity_objects[-1], "")
    oversaturation_why = ("the first guess, that 3-D SDS inherits the prior's own over-saturation at high guidance, is "
                          "what the 2-D mechanism check tests: if the prior's samples are not more saturated at the "
                          "high scale for an object whose 3-D result is, the over-saturation comes from the 3-D "
                          "optimisation (mode-seeking gradients on a shared grid), which no run here tests; a red "
                          "truth near the top of the chroma range leaves little room to over-saturate")
    return (
        Claim("sds-high-cfg-oversaturates", PROLIFIC, statement=f"SDS at CFG {hi} makes a more saturated object "
              f"(chroma) than SDS at CFG {lo}, per object", a=f"chroma, SDS {hi}", b=f"chroma, SDS {lo}", **chroma,
              paper_figure="ProlificDreamer Fig. 1 / Section 5", paper_value="SDS over-saturates at CFG 100",
              explanation=oversaturation_why, diagnosis="prior-high-cfg-more-chroma"),
        Claim("sds-high-cfg-above-vsd", PROLIFIC, statement=f"...and than VSD at CFG {lo}, per object",
              a=f"chroma, SDS {hi}", b=f"chroma, VSD {lo}", **chroma,
              paper_figure="ProlificDreamer Section 5", paper_value="VSD works at CFG 7.5",
              explanation=oversaturation_why, diagnosis="prior-high-cfg-more-chroma"),
        Claim("prior-high-cfg-more-chroma", None, reference="mechanism check (2-D) for the over-saturation claims",
              statement=f"The prior's own DDIM samples are more saturated at CFG {hi} than at CFG {lo}, per object",
              a=f"chroma of prior samples, CFG {hi}", b=f"chroma of prior samples, CFG {lo}", **chroma,
              explanation="guidance extrapolates the prior's shape more than its colour for a prompt with one sharp "
                          "mode, and samples are clamped to [0, 1], so a colour near the range's edge cannot grow"),
        Claim("vsd-higher-fidelity", PROLIFIC, statement=f"VSD at CFG {lo} reaches a higher PSNR than SDS at CFG "
              f"{lo}, per object (at convergence)", a=f"PSNR (dB), VSD {lo}", b=f"PSNR (dB), SDS {lo}", **psnr,
              paper_figure="ProlificDreamer Table / user study", paper_value="higher fidelity than SDS",
              explanation=f"low-CFG SDS is not blurry on this prior (one sharp mode per prompt), so VSD has nothing "
                          f"to fix, and its {k} particles share the views of a step, so each converges later: its "
                          "PSNR curve is the test",
              diagnosis=f"{first}vsd/curve_psnr"),
        Claim("vsd-diverse", PROLIFIC, statement=f"VSD's {k} particles for the colour-free prompt "
              f"'a {p.diversity_shape}' spread their colours more than VSD's particles for the one-colour prompt "
              f"'{p.fidelity_objects[0]}' (the spread of one colour)", a="colour spread, VSD, colour-free prompt",
              b="colour spread, VSD, one-colour prompt", margin=spread, rationale=spread_why,
              paper_figure="ProlificDreamer Fig. 6 (particles)", paper_value="diverse samples from one prompt",
              explanation="each particle keeps the colour mode nearest its random start; the fake score, a copy "
                          "of the prior that knows every colour, does not push particles apart",
              diagnosis="vsd-more-diverse-than-sds"),
        Claim("vsd-more-diverse-than-sds", PROLIFIC, statement=f"...and more than {k} independent SDS runs'",
              a="colour spread, VSD particles", b="colour spread, SDS runs", margin=spread, rationale=spread_why,
              paper_figure="ProlificDreamer Section 5", paper_value="SDS is mode-seeking",
              explanation="independent SDS runs from random colour fields already settle in different colour "
                          "modes of the colour-free prompt, so SDS is not collapsed to one colour here",
              diagnosis=f"a-{p.diversity_shape}/sds_particles/distinct_colours"),
        Claim("esd-less-janus-than-vsd", ESD_PAPER, statement=f"Without the view word, ESD (camera guidance "
              f"{p.esd_lambda:g} on the fake score) has a lower Janus measure than VSD (1), per probe",
              a="Janus, ESD", b="Janus, VSD", **janus, paper_figure="ESD Table 1 (Janus rate)",
              paper_value="fewer Janus artefacts",
              explanation="the fake score is a copy of the prior, so it starts knowing the view words: its "
                          "camera-conditioned and camera-free predictions barely differ and λ changes little (the "
                          "papers start the camera branch untrained)"),
        Claim("vsd-less-janus-than-sds", ESD_PAPER, statement="...and VSD a lower one than SDS (no view word), "
              "per probe", a="Janus, VSD", b="Janus, SDS", **janus, paper_figure="ESD Table 1",
              paper_value="SDS is the most mode-collapsed",
              explanation="with one particle, the camera-conditioned fake score learns the particle's own views, "
                          "its second face included, and follows it rather than correcting it"),
        Claim("cds-lower-variance", CONSISTENT3D, statement="CDS's image gradient varies less over noise draws than "
              "SDS's at the same renders and timesteps (ratio of variances, mean over t)",
              a="gradient variance ratio, CDS / SDS", statistic="value", region=("<", 1.0), margin=0.1,
              rationale="a 10% variance reduction: less would be matched by a 5% smaller SDS step (the gradient's "
                        "noise scales as the square root of its variance)",
              paper_figure="Consistent3D Section 3", paper_value="deterministic sampling prior",
              explanation="one ODE step from t carries the same noise at both ends only when the gap is small "
                          "against t"),
        Claim("cds-higher-fidelity", CONSISTENT3D, statement=f"CDS reaches a higher PSNR than SDS (CFG {lo}), per "
              "object (at convergence)", a="PSNR (dB), CDS", b=f"PSNR (dB), SDS {lo}", **psnr,
              paper_figure="Consistent3D Table 1", paper_value="higher fidelity than SDS",
              explanation="Consistent3D's schedule (one fixed noise, t' annealed over the run) leaves a bias that "
                          "vanishes only as t' reaches 0, so the grid never settles; SDS's random t and fresh "
                          "noise under the same CDS gradient should recover the gap",
              diagnosis="cds-ablation-recovers"),
        Claim("cds-ablation-recovers", None, reference="diagnosis of cds-higher-fidelity (ablation)",
              statement="CDS's gradient with SDS's random t and fresh noise reaches a higher PSNR than with "
              "Consistent3D's fixed noise and annealed t, per object", a="PSNR (dB), CDS random t, fresh noise",
              b="PSNR (dB), CDS", **psnr,
              explanation="the CDS gradient itself, not its schedule, is what the prior cannot use at this scale"),
        Claim("bsd-closest-saturation", PLACID, statement="BSD has the smallest saturation error of all the "
              "SDS-family methods, per object (per seed: BSD's error minus the smallest other one)",
              a="|chroma - truth|, BSD", b="smallest other |chroma - truth|", region=("<", 0.0),
              margin=CHROMA_MARGIN, rationale=CHROMA_RATIONALE, floor=0.0, saturation_tol=CHROMA_MARGIN,
              paper_figure="PlacidDreamer Fig. 5 / Table 2", paper_value="balanced saturation",
              explanation="the reference code's BSD (a 15x classifier term mixed with ε_∅, no noise subtracted) "
                          "does not balance the chroma: its denoising term pulls colours toward the unconditional "
                          "mean, so it washes out the green cube (its signed chroma against the truth's is the test)",
              diagnosis=f"{first}bsd/saturation"),
        Claim("csm-beats-sds", TV3DG, statement=f"CSM (classifier term at DDIM-inverted noise) reaches a higher "
              f"PSNR than SDS (CFG {lo}), per object (at convergence)", a="PSNR (dB), CSM",
              b=f"PSNR (dB), SDS {lo}", **psnr, paper_figure="TV-3DG Table 1", paper_value="stable, higher quality",
              explanation="the classifier term alone has no denoising term to hold the render near the prior's "
                          "images; SDS is that classifier term plus the denoising term at the same noise",
              diagnosis="denoising-term-needed"),
        Claim("denoising-term-needed", None, reference="diagnosis of csm-beats-sds (ablation)",
              statement=f"SDS (CFG {lo}) reaches a higher PSNR than its classifier term alone (CSD), per object",
              a=f"PSNR (dB), SDS {lo}", b="PSNR (dB), CSD", **psnr,
              explanation="the classifier term alone already carries the prompt's image at this scale"),
        Claim("csm-beats-csd", TV3DG, statement="CSM reaches a higher PSNR than CSD (the classifier term at random "
              "noise), per object (at convergence)", a="PSNR (dB), CSM", b="PSNR (dB), CSD", **psnr,
              paper_figure="TV-3DG ablation", paper_value="inverted noise beats random noise",
              explanation="on some objects CSM's curve stays flat for its first evaluations (the inversion of an "
                          "empty grid's render lands near the unconditional mode) and is still rising at the end",
              diagnosis=f"{last}csm/curve_psnr"),
        Claim("asd-scales", SCALE, statement=f"From {p.amortised_sizes[0]} to {p.amortised_sizes[1]} prompts, the "
              "amortised generator loses less PSNR with ASD than with VSD (at convergence)", a="PSNR drop, ASD",
              b="PSNR drop, VSD", region=("<", 0.0), margin=PSNR_MARGIN, rationale=PSNR_RATIONALE,
              paper_figure="ScaleDreamer Fig. 1 / Table 1", paper_value="stable up to 100k prompts",
              explanation="the generators on the large prompt set are still climbing when training stops, so "
                          "their PSNR drop is not settled",
              diagnosis=f"amortised/asd-{p.amortised_sizes[1]}/curve_psnr"),
    )


def evaluate_claims(run: Run) -> list[dict]:
    p = run.params
    c = {claim.id: claim for claim in claims(p)}
    objects = p.fidelity_objects
    value = lambda obj, arm, metric: np.asarray(run.values(f"{_tag(obj, arm)}/{metric}"), float)  # noqa: E731
    chroma = lambda arm: _grouped(objects, lambda o: value(o, arm, "saturation"))  # noqa: E731
    psnr = lambda arm: _grouped(objects, lambda o: as_curve(run.values(f"{_tag(o, arm)}/curve_psnr"),  # noqa: E731
                                                             CURVE_WINDOW))
    ceiling = _grouped(objects, lambda o: value(o, "reconstruction", "psnr"))  # the PSNR claims' room to move
    error = lambda arm: _grouped(objects, lambda o: value(o, arm, "saturation_error"))  # noqa: E731
    others = _grouped(objects, lambda o: np.min([value(o, a, "saturation_error") for a in OBJECT_ARMS
                                                 if a not in ("reconstruction", "bsd", "cds_random")], axis=0))
    prior = lambda level: _grouped(objects, lambda o: np.asarray(  # noqa: E731
        run.values(f"{o.replace(' ', '-')}/prior/chroma_{level}"), float))
    janus = lambda arm: _grouped(PROBE_COLOURS, lambda q: np.asarray(run.values(f"{q}/{arm}/janus"), float))  # noqa: E731
    variance_ratio = np.mean(np.asarray(run.values("variance_cds")) / np.asarray(run.values("variance_sds")), axis=1)
    small, large = p.amortised_sizes
    # the drop: tail(small set) - tail(large set) per seed; converged only if both curves are
    drop = lambda kind: curve_difference(run.values(f"amortised/{kind}-{small}/curve_psnr"),  # noqa: E731
                                         run.values(f"amortised/{kind}-{large}/curve_psnr"), CURVE_WINDOW)
    diversity = f"a-{p.diversity_shape}"
    return [
        c["sds-high-cfg-oversaturates"].evaluate(chroma("sds_high"), chroma("sds_low")),
        c["sds-high-cfg-above-vsd"].evaluate(chroma("sds_high"), chroma("vsd")),
        c["prior-high-cfg-more-chroma"].evaluate(prior("high"), prior("low")),
        c["vsd-higher-fidelity"].evaluate(psnr("vsd"), psnr("sds_low"), ceiling=ceiling),
        c["vsd-diverse"].evaluate(run.values(f"{diversity}/vsd/colour_spread"),
                                  run.values(f"{_tag(objects[0], 'vsd')}/colour_spread")),
        c["vsd-more-diverse-than-sds"].evaluate(run.values(f"{diversity}/vsd/colour_spread"),
                                                run.values(f"{diversity}/sds_particles/colour_spread")),
        c["esd-less-janus-than-vsd"].evaluate(janus("esd_noview"), janus("vsd_noview")),
        c["vsd-less-janus-than-sds"].evaluate(janus("vsd_noview"), janus("sds_noview")),
        c["cds-lower-variance"].evaluate(variance_ratio),
        c["cds-higher-fidelity"].evaluate(psnr("cds"), psnr("sds_low"), ceiling=ceiling),
        c["cds-ablation-recovers"].evaluate(psnr("cds_random"), psnr("cds"), ceiling=ceiling),
        c["bsd-closest-saturation"].evaluate(error("bsd"), others),
        c["csm-beats-sds"].evaluate(psnr("csm"), psnr("sds_low"), ceiling=ceiling),
        c["denoising-term-needed"].evaluate(psnr("sds_low"), psnr("csd"), ceiling=ceiling),
        c["csm-beats-csd"].evaluate(psnr("csm"), psnr("csd"), ceiling=ceiling),
        c["asd-scales"].evaluate(drop("asd"), drop("vsd")),
    ]


def record_health(run: Run) -> None:
    """The test-bed health rows: the grid and renderer against the truth, the prior's colour and view word."""
    p = run.params
    for obj in p.fidelity_objects:
        key, tag = obj.replace(" ", "-"), _tag(obj, "reconstruction")
        run.health(f"grid + renderer, {obj} (reconstruction)", "PSNR (dB) at the turntable views", f"{tag}/psnr",
                   lower_is_better=False, references={"start (random grid)": f"{tag}/psnr_start"},
                   note="the ceiling of every PSNR claim on this object")
        run.health(f"grid + renderer, {obj} (reconstruction)", "relative PSNR change, last window vs the one before",
                   f"{tag}/psnr_drift", lower_is_better=True, references={"convergence tolerance": 0.02},
                   note="above the tolerance, the ceiling itself is still rising")
        run.health(f"prior, '{obj}'", f"chroma of its samples at CFG {p.low_guidance:g}", f"{key}/prior/chroma_low",
                   lower_is_better=False, references={"truth": f"{key}/truth_saturation",
                                                      f"CFG {p.high_guidance:g}": f"{key}/prior/chroma_high",
                                                      "maximum": 1.0},
                   note="should sit at the truth; the gap to the maximum is the room over-saturation has")
    for probe in PROBE_COLOURS:
        run.health(f"prior's view words, {probe}", "Janus measure of SDS with the view word", f"{probe}/sds/janus",
                   lower_is_better=True, references={"truth": 0.0, "SDS without the view word":
                                                     f"{probe}/sds_noview/janus"},
                   note="the view word removes Janus when the prior has learned it; dropping it makes the problem")


def summary_markdown(run: Run) -> str:
    p = run.params
    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), mean ± std. PSNR is the mean of the last "
             f"{CURVE_WINDOW} evaluations of each optimisation curve (what the claims read); chroma is the mean "
             "max − min of the rgb over the object's opaque pixels."]
    for obj in p.fidelity_objects:
        truth = run.values(f"{obj.replace(' ', '-')}/truth_saturation")
        lines += ["", f"**{obj}** (true chroma {mean_std_text(truth)})", "",
                  "| method | PSNR (dB), curve tail | SSIM | chroma | chroma − truth |", "|---|---|---|---|---|"]
        for arm in OBJECT_ARMS:
            tag = _tag(obj, arm)
            tail = [float(np.mean(c[-CURVE_WINDOW:])) for c in run.values(f"{tag}/curve_psnr")]
            signed = np.asarray(run.values(f"{tag}/saturation")) - np.asarray(truth)
            lines.append(f"| {ARM_LABELS[arm]} | {mean_std_text(tail)} | {mean_std_text(run.values(f'{tag}/ssim'))} | "
                         f"{mean_std_text(run.values(f'{tag}/saturation'))} | {mean_std_text(signed)} |")
    lines += ["", "| method | Janus, " + " | Janus, ".join(PROBE_COLOURS) + " |", "|---|" + "---|" * len(PROBE_COLOURS)]
    for arm in JANUS_ARMS:
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(mean_std_text(run.values(f'{probe}/{arm}/janus'))
                                                         for probe in PROBE_COLOURS) + " |")
    small, large = p.amortised_sizes
    lines += ["", f"| amortised generator | PSNR, {small} prompts | PSNR, {large} prompts |", "|---|---|---|"]
    for kind in AMORTISED_ARMS:
        tails = {n: [float(np.mean(c[-CURVE_WINDOW:])) for c in run.values(f"amortised/{kind}-{n}/curve_psnr")]
                 for n in (small, large)}
        lines.append(f"| {kind.upper()} | {mean_std_text(tails[small])} | {mean_std_text(tails[large])} |")
    return "\n".join(lines)


def findings_markdown(run: Run, results: list[dict]) -> str:
    """What the verdicts say, generated from the results (so the page reads right whatever the outcome)."""
    r = {x["id"]: x for x in results}

    def v(cid):
        x = r[cid]
        text = f"**{verdict_text(x)}**"
        if x.get("groups"):
            text += " (" + "; ".join(f"{g}: {verdict_text(y)}" for g, y in x["groups"].items()) + ")"
        return text

    p = run.params
    lo, hi = f"{p.low_guidance:g}", f"{p.high_guidance:g}"
    return "\n".join([
        f"- **Guidance.** SDS at CFG {hi} more saturated than at CFG {lo}: {v('sds-high-cfg-oversaturates')}; "
        f"than VSD: {v('sds-high-cfg-above-vsd')}. The prior's own samples at CFG {hi} more saturated than at "
        f"{lo}: {v('prior-high-cfg-more-chroma')}.",
        f"- **VSD.** Higher PSNR than low-guidance SDS: {v('vsd-higher-fidelity')}. Particles of the colour-free "
        f"prompt spread beyond one colour: {v('vsd-diverse')}; more than independent SDS runs: "
        f"{v('vsd-more-diverse-than-sds')}.",
        f"- **Janus** (no view word). ESD below VSD: {v('esd-less-janus-than-vsd')}; VSD below SDS: "
        f"{v('vsd-less-janus-than-sds')}.",
        f"- **CDS.** Lower gradient variance: {v('cds-lower-variance')}; higher PSNR than SDS: "
        f"{v('cds-higher-fidelity')}; the ablation with SDS's random t and fresh noise above CDS: "
        f"{v('cds-ablation-recovers')}.",
        f"- **BSD.** Closest to the true chroma: {v('bsd-closest-saturation')}.",
        f"- **CSM.** Above SDS: {v('csm-beats-sds')}; SDS above its classifier term alone: "
        f"{v('denoising-term-needed')}; CSM above CSD: {v('csm-beats-csd')}.",
        f"- **ASD.** Smaller PSNR drop than VSD from {p.amortised_sizes[0]} to {p.amortised_sizes[1]} prompts: "
        f"{v('asd-scales')}.",
    ])


# ---------------------------------------------------------------- figures


def _show(ax, image: torch.Tensor):
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_prior_views(bed: Bed, p: Params, seed: int = 0):
    """What the prior draws for each view word: its front bias is where Janus objects come from."""
    probe = "red-front-cube"
    prompt = bed.prompts.object_id(probe, PROBE_COLOURS[probe])
    fig, axes = plt.subplots(3, 6, figsize=(8, 4.4), layout="constrained")
    for row, view in enumerate(v3.VIEWS):
        samples = prior_samples(bed, prompt, row, 6, 1.0, seed=seed + row)
        for ax, image in zip(axes[row], samples.cpu()):
            _show(ax, image)
        axes[row, 0].set_ylabel(f"'{view} view'")
    fig.suptitle(f"Conditional prior samples for '{bed.prompts.caption(prompt)}' with each view word")
    return fig


def plot_turntables(run: Run, shown: dict, bed: Bed):
    """Renders at four azimuths (front, side, back, side) for every method, beside the ground truth."""
    p = run.params
    obj, probe = p.fidelity_objects[0], "head"
    rows = [("ground truth", bed.truth[object_key(*reversed(obj.split()))], None)]
    rows += [(ARM_LABELS[a], shown[_tag(obj, a)][0], obj) for a in OBJECT_ARMS]
    rows += [(f"{probe}: ground truth", bed.truth[object_key(probe, PROBE_COLOURS[probe])], None)]
    rows += [(f"{probe}: {ARM_LABELS[a]}", shown[f"{probe}/{a}"][0], probe) for a in JANUS_ARMS]
    step = p.eval_views // 4
    fig, axes = plt.subplots(len(rows), 4, figsize=(5.2, 1.25 * len(rows)), layout="constrained")
    for r, (label, images, _) in enumerate(rows):
        for col in range(4):
            _show(axes[r, col], images[col * step])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    for col, name in enumerate(("0°", "90°", "180°", "270°")):
        axes[0, col].set_title(name, fontsize=9)
    fig.suptitle(f"Turntable renders, seed {run.seeds[0]}")
    return fig


def plot_fidelity(run: Run):
    """PSNR against saturation error (one point per seed) and PSNR along the optimisation (mean ± std)."""
    p = run.params
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for i, arm in enumerate(OBJECT_ARMS):
        axes[0].scatter(object_mean(run, arm, "saturation_error"), object_mean(run, arm, "psnr"),
                        label=ARM_LABELS[arm], color=f"C{i}", s=30)
        curves = np.mean([run.values(f"{_tag(o, arm)}/curve_psnr") for o in p.fidelity_objects], axis=0)
        steps = np.linspace(0, p.iterations, curves.shape[1])
        mean_std_band(axes[1], steps, curves, label=ARM_LABELS[arm], color=f"C{i}", marker=None)
    axes[0].set(xlabel="|saturation − ground truth|", ylabel="PSNR at held-out views (dB)",
                title="Fidelity against saturation (one point per seed)")
    axes[1].set(xlabel="optimisation step", ylabel="PSNR (dB)", title="PSNR along the optimisation")
    axes[1].legend(fontsize=7, loc="lower right")
    return fig


def fidelity_caption(run: Run, tol: float = 0.02) -> str:
    """The sentence under the fidelity figure, with how many curves are still moving at the end (generated)."""
    p = run.params
    moving = [(obj, arm) for obj in p.fidelity_objects for arm in OBJECT_ARMS
              if any(relative_change(c, CURVE_WINDOW) > tol for c in run.values(f"{_tag(obj, arm)}/curve_psnr"))]
    total = len(p.fidelity_objects) * len(OBJECT_ARMS)
    text = (f"Left: one point per seed and method (averaged over {', '.join(p.fidelity_objects)}). Right: PSNR along "
            f"the optimisation, mean ± std over seeds. In {len(moving)} of {total} object-method pairs at least one "
            f"seed's curve still moves by more than {tol:.0%} between its last {CURVE_WINDOW} evaluations and the "
            f"{CURVE_WINDOW} before")
    return text + (": " + ", ".join(f"{ARM_LABELS[a]} on the {o}" for o, a in moving) + "." if moving else ".")


def plot_janus(run: Run):
    """The Janus measure per method and probe, one dot per seed."""
    import pandas as pd
    import seaborn as sns

    rows = [{"probe": probe, "method": ARM_LABELS[arm], "Janus": value}
            for probe in PROBE_COLOURS for arm in JANUS_ARMS for value in run.values(f"{probe}/{arm}/janus")]
    fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
    sns.barplot(pd.DataFrame(rows), x="method", y="Janus", hue="probe", errorbar="sd", alpha=0.6, ax=ax)
    sns.stripplot(pd.DataFrame(rows), x="method", y="Janus", hue="probe", dodge=True, ax=ax, legend=False,
                  palette="dark:k", size=4)
    ax.set(ylabel="front feature seen from behind\n(relative to the true front)", xlabel="",
           title=f"Janus measure (0: the truth; 1: a second front), ESD λ = {run.params.esd_lambda:g}")
    return fig


def plot_variance(run: Run):
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    mean_std_band(ax, VARIANCE_TIMESTEPS, run.values("variance_sds"), label="SDS (fresh noise)", color="C0")
    mean_std_band(ax, VARIANCE_TIMESTEPS, run.values("variance_cds"), label="CDS (one ODE step)", color="C5")
    ax.set_yscale("log")
    ax.set(xlabel="timestep t", ylabel="E‖g − E g‖² over noise draws",
           title="Gradient variance at fixed renders")
    ax.legend()
    return fig


def plot_diversity(run: Run, shown: dict):
    """Front views of the particles for the colour-free prompt: VSD's particles against independent SDS runs."""
    p = run.params
    key = f"a-{p.diversity_shape}"
    fig, axes = plt.subplots(2, p.particles, figsize=(1.4 * p.particles + 1, 3.2), layout="constrained", squeeze=False)
    for r, arm in enumerate(("sds_particles", "vsd")):
        for k, images in enumerate(shown[f"{key}/{arm}"]):
            _show(axes[r, k], images[p.eval_views // 8])
        axes[r, 0].set_ylabel(ARM_LABELS[arm], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"'a {p.diversity_shape}': {p.particles} particles, seed {run.seeds[0]}")
    return fig


def plot_amortised(run: Run):
    p = run.params
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for i, kind in enumerate(AMORTISED_ARMS):
        per_seed = np.asarray([[run.values(f"amortised/{kind}-{n}/psnr")[s] for n in p.amortised_sizes]
                               for s in range(len(run.seeds))])
        mean_std_band(axes[0], p.amortised_sizes, per_seed, label=kind.upper(), color=f"C{i}")
        for n, style in zip(p.amortised_sizes, ("-", "--")):
            curves = run.values(f"amortised/{kind}-{n}/curve_psnr")
            steps = np.linspace(0, p.amortised_steps, len(curves[0]))
            mean_std_band(axes[1], steps, curves, label=f"{kind.upper()}, {n} prompts", color=f"C{i}",
                          marker=None, linestyle=style)
    axes[0].set(xscale="log", xticks=p.amortised_sizes, xticklabels=map(str, p.amortised_sizes),
                xlabel="prompts the generator is trained on", ylabel="PSNR on the shared prompts (dB)",
                title="Amortised generator: scaling the prompt set")
    axes[1].set(xlabel="generator step", ylabel="PSNR (dB)", title="Along training")
    axes[0].legend()
    axes[1].legend(fontsize=8)
    return fig
