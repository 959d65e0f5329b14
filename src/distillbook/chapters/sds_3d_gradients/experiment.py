"""The test bed and the runs: prompts and labels, the prior trained on renders, single objects optimised by each
score-distillation method, and the amortised prompt -> grid generators.

The methods themselves (each image gradient, the fake score's fit, the surrogate loss) are in
:mod:`distillbook.methods.score_distillation`; this module wires them to scenes, cameras and metrics.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torchmetrics.functional.image import structural_similarity_index_measure

from distillbook.chapters.sds_3d_gradients.params import CURVE_WINDOW, Params, parse_object
from distillbook.core.claims import relative_change
from distillbook.core.results import Run
from distillbook.core.runtime import derived_generator, derived_seed
from distillbook.methods import score_distillation as sd
from distillbook.methods.diffusion import Schedule, guided
from distillbook.methods.score_distillation import Method
from distillbook.models.denoiser import MLPDenoiser, UNetDenoiser, train_denoiser
from distillbook.models.mlp import mlp
from distillbook.testbeds import voxel3d as v3

NO_VIEW = 3  # the view slot of a label without a view word
PROBE_COLOURS = {"head": "yellow", "red-front-cube": "blue"}
SHAPE_WORD = {"cube": "cube", "sphere": "sphere", "cylinder": "cylinder", "cone": "cone",
              "head": "head", "red-front-cube": "cube with a red front"}
PSNR_ARMS = ("reconstruction", "sds_low", "vsd", "cds", "cds_fresh", "cds_random", "csd", "csm")
CHROMA_ARMS = ("sds_low", "sds_high", "sds_bsd", "vsd", "bsd")
OBJECT_ARMS = tuple(dict.fromkeys(PSNR_ARMS + CHROMA_ARMS))  # every single-object arm, in display order
# ESD against VSD runs with the fake score at FAST_FAKE_FACTOR x fake_lr: at fake_lr its view words, which start
# uninformative, barely move within the run (the camera gaps say how much), and ESD's lambda would mix two equal scores
# VSD and ESD with one particle, then VSD with several (the diagnosis of VSD's Janus claim): fake score at 10x lr
FAST_FAKE_ARMS = ("vsd_noview_fast", "esd_noview_fast", "vsd_noview_particles")
CAMERA_GAP_ARMS = FAST_FAKE_ARMS  # where the fake score's camera gap is measured
FAST_FAKE_FACTOR = 10
JANUS_ARMS = ("sds", "sds_noview") + FAST_FAKE_ARMS
DIVERSITY_ARMS = ("sds_particles", "vsd_particles")
FRESH_NOISE_ARMS = ("cds_fresh",)  # CDS's annealed t' with a fresh noise each step (the fixed noise's ablation)
AMORTISED_ARMS = ("asd", "vsd")
PRIOR_SAMPLES_PER_VIEW = 4  # prior samples per view word (front, side, back) for the prior's chroma


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
    gen = derived_generator(run.seeds[0], 1)
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
    truth = {object_key(s, c): v3.render_field(v3.scene_field(s, c), cams, p.resolution) for s, c in prompts.objects}
    return Bed(prompts, schedule, prior, renders, azimuths, truth)


@torch.no_grad()
def prior_samples(bed: Bed, prompt: int, view: int, n: int, guidance: float, steps: int = 50, seed: int = 0):
    """DDIM samples (eta 0) of the prior for one prompt and view word: what it believes a view looks like.
    Each step's x0 prediction is clipped to the image range (diffusers' ``clip_sample``, the usual guard at high
    guidance), so a large CFG scale cannot blow the samples out to the clamp's corners."""
    dim = bed.prior.dim
    device = next(bed.prior.parameters()).device
    lab = torch.full((n,), prompt * 4 + view, dtype=torch.long, device=device)
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)).to(device)
    sampler = DDIMScheduler.from_config(bed.schedule.scheduler.config, timestep_spacing="trailing",
                                        set_alpha_to_one=True, clip_sample=True, clip_sample_range=1.0)
    sampler.set_timesteps(steps, device=device)
    for t in sampler.timesteps:
        t_batch = torch.full((n,), int(t), dtype=torch.long, device=device)
        x = sampler.step(guided(bed.prior, x, t_batch, lab, guidance), t, x, eta=0.0).prev_sample
    out = x
    return ((out.reshape(n, 3, *(2 * [int(math.sqrt(dim // 3))])) + 1) / 2).clamp(0, 1)


# ---------------------------------------------------------------- single-object optimisation


def fake_score(prior: torch.nn.Module, n_prompts: int) -> torch.nn.Module:
    """VSD's fake score: a trainable copy of the prior whose view words start uninformative. Every (prompt, view)
    embedding starts as the prompt's no-view embedding, so the first fake prediction carries no camera
    information, as ProlificDreamer's zero-initialised camera branch (its LoRA reads the prompt without view
    words); training then lets the views part ways. A plain copy would start knowing the views and push the back
    views away from their correct image from the first step."""
    fake = copy.deepcopy(prior).requires_grad_(True)
    table = fake.unet.class_embedding if isinstance(fake, UNetDenoiser) else fake.class_embedding
    if table is None or table.num_embeddings != n_prompts * 4 + 1:
        raise ValueError(f"the prior needs {n_prompts} prompts x 4 view slots + the null label = {n_prompts * 4 + 1} "
                         f"class embeddings, got {None if table is None else table.num_embeddings}")
    with torch.no_grad():
        rows = table.weight[:n_prompts * 4].view(n_prompts, 4, -1)
        rows[:, :NO_VIEW] = rows[:, NO_VIEW:NO_VIEW + 1]
    return fake


class Scene(torch.nn.Module):
    """The particles (voxel grids), the fake score when the method has one and CDS's fixed noise: one module,
    so one checkpoint holds the whole optimisation."""

    def __init__(self, p: Params, method: Method, prior: torch.nn.Module, seed: int):
        super().__init__()
        torch.manual_seed(derived_seed(seed, 1))  # the grids' random colour fields
        self.grids = torch.nn.ModuleList(v3.VoxelGrid(p.grid_size) for _ in range(method.particles))
        with torch.no_grad():
            for grid in self.grids:  # a random colour field per particle, so particles can part ways
                grid.colour.normal_(0, 0.5)
        self.fake = None
        if method.kind == "vsd":
            self.fake = fake_score(prior, Prompts().n_prompts)
        gen = derived_generator(seed, 2)  # CDS's fixed noise
        self.register_buffer("fixed_noise", torch.randn(1, 3 * p.resolution ** 2, generator=gen))


def _cameras_batch(p: Params, n: int, gen: torch.Generator) -> dict:
    """Uniform azimuths (the object has no front yet), elevations in [0, 30] degrees."""
    return {"azimuth": (torch.rand(n, generator=gen) * 2 - 1) * math.pi,
            "elevation": torch.rand(n, generator=gen) * math.radians(30)}


def step_batch(p: Params, schedule: Schedule, n: int):
    """Everything random in one optimisation step of ``n`` views, from the loop's generator (exact resume)."""
    dim = 3 * p.resolution ** 2

    def batch(gen):
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


def object_loss(scene: Scene, batch: dict, step: int, p: Params, bed: Bed, method: Method, prompt: int,
                truth_field=None, fresh_noise: bool = False) -> tuple[torch.Tensor, dict]:
    """Step ``step`` (from ``fit``): render every particle's share of the views, get the method's image gradient,
    and (VSD) fit the fake score to the same renders. Returns the surrogate loss (its gradient is g through the
    renderer). ``fresh_noise``: CDS's annealed t' with the step's fresh noise instead of the run's fixed one."""
    n, k = len(batch["t"]), len(scene.grids)
    # particle i renders views i, i + k, ...; everything below follows that order
    order = torch.cat([torch.arange(i, n, k) for i in range(k)])
    cams = _subset(v3.Cameras(batch["azimuth"], batch["elevation"]), order)
    images = torch.cat([scene.grids[i].render(_subset(cams, slice(i * (n // k), (i + 1) * (n // k))), p.resolution,
                                              p.ray_samples) for i in range(k)])
    progress = step / p.iterations
    if method.kind == "reconstruction":
        target = v3.render_field(truth_field, cams, p.resolution, device=images.device).to(images.device)
        return 0.5 * ((images - target) ** 2).reshape(n, -1).sum(1).mean(), {}
    x = to_model(images)
    azimuth = cams.azimuth if method.view_prompt else None
    prompts = torch.full((n,), prompt, device=images.device)
    lab = labels(prompts, azimuth)
    fake_lab = labels(prompts, cams.azimuth.to(images.device))
    fake_free_lab = labels(prompts, None)  # the same prompts without the camera's view (ESD, the fake score's fit)
    if method.annealed:  # CDS: t' falls linearly over the run (Consistent3D's schedule), t = t' + gap
        t_next = sd.cds_annealed_t_next(progress, bed.schedule.num_train_timesteps, p.cds_gap[1])
        noise = batch["noise"] if fresh_noise else scene.fixed_noise
        batch = {**batch, "fixed_noise": noise, "t_next": torch.full_like(batch["t"], t_next)}
    else:  # the ablation: SDS's random t and fresh noise, only the gradient is CDS's
        batch = {**batch, "fixed_noise": batch["noise"], "t_next": (batch["t"] - batch["gap"]).clamp(min=1)}
    loss, g = sd.score_distillation_loss(bed.schedule, bed.prior, method, x, lab, batch, fake=scene.fake,
                                         fake_lab=fake_lab, fake_free_lab=fake_free_lab)
    return loss, {"grad_norm": g.norm(dim=1).mean().detach()}


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
    def unit(c):
        return c / c.sum().clamp_min(1e-6)

    return min(PALETTE, key=lambda name: float(((unit(rgb) - unit(PALETTE[name])) ** 2).sum()))


def sample_chroma(images: torch.Tensor, white: float = 0.9) -> float:
    """Mean chroma, max(rgb) - min(rgb), of the colour as displayed over the object pixels of images (n, 3, H, W)
    on a white background: the pixels whose darkest channel is below ``white`` (as ``object_colour``); 0 with
    none. The one saturation measure of the chapter, for renders, truths and the prior's samples alike. Chroma
    over opaque pixels only (opacity from renders over white and black) fails on a pastel: a white-background
    render does not fix opacity (a half-transparent saturated colour over white shows the same pastel), and a
    grid fitted to such renders may have no opaque pixel at all."""
    chroma = images.amax(1) - images.amin(1)
    mask = images.amin(1) < white
    return float(chroma[mask].mean()) if mask.any() else 0.0


def median3(images: torch.Tensor) -> torch.Tensor:
    """3x3 median filter per channel (edges replicated): removes isolated pixels, keeps regions."""
    n, c, h, w = images.shape
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    patches = F.unfold(padded.reshape(n * c, 1, h + 2, w + 2), 3)  # (n c, 9, h w)
    return patches.median(dim=1).values.reshape(n, c, h, w)


def prior_chroma(bed: Bed, prompt: int, guidance: float, seed: int) -> float:
    """Chroma of the prior's own DDIM samples for ``prompt`` at ``guidance``, over the three view words. The
    samples of a small prior carry isolated noise pixels on the white background, which the chroma measure would
    count as object pixels, so they pass a 3x3 median filter first (renders are noise-free and are not filtered)."""
    samples = torch.cat([prior_samples(bed, prompt, view, PRIOR_SAMPLES_PER_VIEW, guidance,
                                       seed=derived_seed(seed, 88, view)) for view in range(3)])
    return sample_chroma(median3(samples.cpu()))


def turntable_renders(grid_density, grid_colour, p: Params, background: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        return v3.render_grid(grid_density, grid_colour, v3.turntable(p.eval_views), p.resolution,
                              p.ray_samples, background).clamp(0, 1).cpu()


def image_metrics(renders: torch.Tensor, truth: torch.Tensor, probe: str | None = None) -> dict[str, float]:
    """PSNR and SSIM at the best azimuth alignment, saturation (``sample_chroma``) and its error against the
    truth's, and (probes) the Janus measure."""
    psnr, shift = v3.aligned_psnr(renders, truth)
    ssim = structural_similarity_index_measure(renders.roll(shift, 0), truth, data_range=1.0)
    saturation, true_saturation = sample_chroma(renders), sample_chroma(truth)
    out = {"psnr": float(psnr), "ssim": float(ssim), "saturation": float(saturation),
           "saturation_error": abs(saturation - true_saturation)}
    if probe is not None:
        out["janus"] = float(v3.janus_score(renders, truth, v3.turntable(len(truth)), probe))
    return out


def scene_metrics(scene: Scene, p: Params, truth: torch.Tensor | None, probe: str | None = None) -> dict[str, float]:
    """Metrics averaged over the particles against the ``truth`` renders, plus their colours' spread."""
    renders = [turntable_renders(g.density, g.colour, p) for g in scene.grids]
    out: dict[str, float] = {}
    if truth is not None:
        rows = [image_metrics(r, truth, probe) for r in renders]
        out = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
    colours = [object_colour(r) for r in renders]
    out["distinct_colours"] = float(len({colour_name(c) for c in colours}))
    out["colour_spread"] = float(torch.stack(colours).std(0, unbiased=False).norm()) if len(colours) > 1 else 0.0
    return out


# ---------------------------------------------------------------- single objects


def arm_method(p: Params, arm: str) -> Method:
    low, high = p.low_guidance, p.high_guidance
    return {"reconstruction": Method("reconstruction"), "sds_low": Method("sds", low), "sds": Method("sds", low),
            "sds_high": Method("sds", high), "sds_bsd": Method("sds", p.bsd_scale),
            "sds_noview": Method("sds", low, view_prompt=False),
            "sds_particles": Method("sds", low, particles=p.particles),
            "vsd": Method("vsd", low), "vsd_particles": Method("vsd", low, particles=p.particles),
            "vsd_noview_fast": Method("vsd", low, view_prompt=False),
            "vsd_noview_particles": Method("vsd", low, view_prompt=False, particles=p.particles),
            "esd_noview_fast": Method("vsd", low, view_prompt=False, esd_lambda=p.esd_lambda),
            "bsd": Method("bsd", p.bsd_scale),
            "cds": Method("cds", low), "cds_fresh": Method("cds", low),
            "cds_random": Method("cds", low, annealed=False), "csd": Method("csd", low),
            "csm": Method("csm", low, inversion_steps=p.inversion_steps)}[arm]


def _optimizer(scene: Scene, p: Params, fake_lr: float) -> torch.optim.Optimizer:
    groups = [{"params": list(scene.grids.parameters()), "lr": p.grid_lr}]
    if scene.fake is not None:
        groups.append({"params": list(scene.fake.parameters()), "lr": fake_lr})
    return torch.optim.Adam(groups, fused=True)  # one kernel per step: the fake score's update is 1.4M weights


def optimise_object(run: Run, bed: Bed, seed: int, name: str, method: Method, prompt: int,
                    truth: torch.Tensor | None, shape: str, colour: str,
                    fresh_noise: bool = False,
                    fake_lr: float | None = None) -> tuple[Scene, dict[str, float], dict[str, list[float]]]:
    """Optimise one object's particles, each on ``views_per_particle`` views a step; return the scene, its final
    metrics and its PSNR and chroma curves at ``eval_points`` + 1 points (empty without a ground truth)."""
    p = run.params
    # every arm on this prompt starts from the same random grids (and fit draws the same cameras and noise from
    # the seed): common random numbers, so a per-seed difference between two arms is the methods' own
    scene = Scene(p, method, bed.prior, derived_seed(seed, prompt)).to(run.device)
    probe = shape if shape in v3.PROBES else None
    field = v3.scene_field(shape, colour)

    def along(s: Scene) -> dict[str, float]:  # PSNR and chroma along the way, averaged over the particles
        rows = []
        for g in s.grids:
            renders = turntable_renders(g.density, g.colour, p)
            rows.append((float(v3.aligned_psnr(renders, truth)[0]), sample_chroma(renders)))
        psnr, chroma = np.mean(rows, axis=0)
        return {"psnr": float(psnr), "saturation": float(chroma)}

    evaluate = None if truth is None else along
    curves = {} if truth is None else {k: [v] for k, v in along(scene).items()}

    def loss(s: Scene, b: dict, step: int):
        return object_loss(s, b, step, p, bed, method, prompt, field, fresh_noise)

    n_views = p.views_per_particle * method.particles
    result = run.fit(name, seed, scene, loss, step_batch(p, bed.schedule, n_views), steps=p.iterations,
                     optimizer=_optimizer(scene, p, p.fake_lr if fake_lr is None else fake_lr),
                     evaluate=evaluate, eval_every=None if truth is None else p.iterations // p.eval_points)
    for name in curves:
        curves[name] += result.column(name)[:p.eval_points]
    with torch.no_grad():
        final = scene_metrics(scene, p, truth, probe)
    return scene, final, curves


def gradient_noise(bed: Bed, p: Params, scene: Scene, prompt: int, seed: int, timesteps: list[int]) -> dict:
    """The image gradient's noise over ``variance_draws`` noise draws at fixed renders (4 views), per timestep: SDS
    (fresh noise each draw) against CDS (the draw is its fixed noise; one ODE step of ``cds_gap``'s mean length),
    both at the low guidance. Per method: the variance V = E || g - E g ||^2 (unbiased, over draws) and the
    signal-to-noise ratio SNR = || E g ||^2 / V, its signal debiased (|| mean ||^2 - V / draws, which is 0 in
    expectation for a zero-mean gradient) and floored at 0; both averaged over the views."""
    gen = derived_generator(seed, 77)
    cams = v3.Cameras(torch.tensor([0.0, math.pi / 2, math.pi, -math.pi / 2]), torch.full((4,), math.radians(15)))
    with torch.no_grad():
        x = to_model(scene.grids[0].render(cams, p.resolution, p.ray_samples)).to(run_device(bed))
    lab = labels(torch.full((4,), prompt), cams.azimuth).to(x.device)
    gap = (p.cds_gap[0] + p.cds_gap[1]) // 2
    out = {f"{stat}_{kind}": [] for stat in ("variance", "snr") for kind in ("sds", "cds")}
    for t in timesteps:
        grads = {"sds": [], "cds": []}
        for _ in range(p.variance_draws):
            noise = torch.randn(x.shape, generator=gen).to(x.device)
            tt = torch.full((4,), t, dtype=torch.long, device=x.device)
            batch = {"t": tt, "noise": noise}
            grads["sds"].append(sd.image_gradient(bed.schedule, bed.prior, Method("sds", p.low_guidance), x, lab,
                                                  batch))
            # CDS from t down to t' = t - gap, its fixed noise being this draw
            batch = {"t": tt, "t_next": tt - gap, "gap": torch.full_like(tt, gap), "fixed_noise": noise}
            grads["cds"].append(sd.image_gradient(bed.schedule, bed.prior, Method("cds", p.low_guidance), x, lab,
                                                  batch))
        for kind, gs in grads.items():
            variance, snr = noise_stats(torch.stack(gs))
            out[f"variance_{kind}"].append(variance)
            out[f"snr_{kind}"].append(snr)
    return out


def noise_stats(g: torch.Tensor) -> tuple[float, float]:
    """Variance V = E || g - E g ||^2 and signal-to-noise ratio || E g ||^2 / V of draws ``g`` (draws, views, dim),
    each per view and then averaged over views: V unbiased (over draws - 1), the signal debiased
    (E || mean ||^2 = || E g ||^2 + V / draws) and floored at 0."""
    g = g.double()
    draws = len(g)
    variance = ((g - g.mean(0)) ** 2).sum(-1).sum(0) / (draws - 1)
    signal = (g.mean(0).pow(2).sum(-1) - variance / draws).clamp_min(0)
    return float(variance.mean()), float((signal / variance).mean())


def run_device(bed: Bed) -> torch.device:
    return next(bed.prior.parameters()).device


VARIANCE_TIMESTEPS = [200, 400, 600, 800]


def camera_gap(net: torch.nn.Module, bed: Bed, p: Params, scene: Scene, prompt: int, seed: int) -> float:
    """How much ``net``'s noise prediction depends on the view word at the scene's own renders:
    E || eps(x_t, t, y + view) - eps(x_t, t, y) || / E || eps(x_t, t, y) || over 4 turntable views (front, sides,
    back) and t in ``VARIANCE_TIMESTEPS``. ESD's lambda mixes the fake score's two predictions, so it can only
    matter as much as this gap (measured on the fake score, with the prior's as its reference)."""
    gen = derived_generator(seed, 79)
    cams = v3.Cameras(torch.tensor([0.0, math.pi / 2, math.pi, -math.pi / 2]), torch.full((4,), math.radians(15)))
    device = run_device(bed)
    with torch.no_grad():
        x = to_model(scene.grids[0].render(cams, p.resolution, p.ray_samples)).to(device)
        prompts = torch.full((4,), prompt, device=device)
        gaps, norms = [], []
        for t in VARIANCE_TIMESTEPS:
            tt = torch.full((4,), t, dtype=torch.long, device=device)
            x_t = bed.schedule.add_noise(x, torch.randn(x.shape, generator=gen).to(device), tt)
            with_view = sd._eps(bed.schedule, net(x_t, tt, labels(prompts, cams.azimuth.to(device))), x_t, tt)
            without = sd._eps(bed.schedule, net(x_t, tt, labels(prompts, None)), x_t, tt)
            gaps.append((with_view - without).norm(dim=1).mean())
            norms.append(without.norm(dim=1).mean())
    return float(torch.stack(gaps).mean() / torch.stack(norms).mean())


def object_arms(p: Params, obj: str) -> tuple[str, ...]:
    """The arms an object runs: the PSNR arms if its PSNR is claimed, the chroma arms if its saturation is."""
    wanted = (PSNR_ARMS if obj in p.fidelity_objects else ()) + (CHROMA_ARMS if obj in p.chroma_objects else ())
    return tuple(arm for arm in OBJECT_ARMS if arm in wanted and arm not in p.left_out_arms)


def object_jobs(p: Params, prompts: Prompts) -> list[tuple[str, str, str, str, int]]:
    """(arm, key, shape, colour, prompt id) of every single-object run of a seed, in run order."""
    jobs = []
    for obj in dict.fromkeys(p.fidelity_objects + p.chroma_objects):
        shape, colour = parse_object(obj)
        jobs += [(arm, obj, shape, colour, prompts.object_id(shape, colour)) for arm in object_arms(p, obj)]
    for probe in p.janus_probes:
        colour = PROBE_COLOURS[probe]
        jobs += [(arm, probe, probe, colour, prompts.object_id(probe, colour)) for arm in JANUS_ARMS]
    if p.diversity_shape is not None:
        shape = p.diversity_shape
        jobs += [(arm, f"a {shape}", shape, "blue", prompts.shape_id(shape)) for arm in DIVERSITY_ARMS]
    return jobs


def run_objects(run: Run, seed: int, bed: Bed) -> dict:
    """Every single-object arm for one seed; records metrics and returns the final renders."""
    p = run.params
    prompts, shown, metrics = bed.prompts, {}, {}
    for arm, key, shape, colour, prompt in object_jobs(p, prompts):
        method = arm_method(p, arm)
        colour_free = key.startswith("a ")
        truth = None if colour_free else bed.truth[object_key(shape, colour)]
        tag = f"{key.replace(' ', '-')}/{arm}"
        fake_lr = p.fake_lr * (FAST_FAKE_FACTOR if arm in FAST_FAKE_ARMS else 1)
        scene, final, curves = optimise_object(run, bed, seed, tag, method, prompt, truth, shape, colour,
                                               fresh_noise=arm in FRESH_NOISE_ARMS, fake_lr=fake_lr)
        for name, value in final.items():
            metrics[f"{tag}/{name}"] = value
        for name, curve in curves.items():
            metrics[f"{tag}/curve_{name}"] = curve
        shown[tag] = [turntable_renders(g.density, g.colour, p) for g in scene.grids]
        if arm == "sds_low" and key == p.fidelity_objects[0]:  # the gradient's noise at SDS's own result
            noise = gradient_noise(bed, p, scene, prompt, seed, VARIANCE_TIMESTEPS)
            metrics.update({f"gradient/{name}": value for name, value in noise.items()})
        if arm in CAMERA_GAP_ARMS:  # how much the fake score (and the prior) hear the view word
            metrics[f"{tag}/fake_camera_gap"] = camera_gap(scene.fake, bed, p, scene, prompt, seed)
            metrics[f"{tag}/prior_camera_gap"] = camera_gap(bed.prior, bed, p, scene, prompt, seed)
        if arm == "reconstruction":  # the ceiling's own start and convergence (the test-bed health table)
            metrics[f"{tag}/psnr_start"] = curves["psnr"][0]
            metrics[f"{tag}/psnr_drift"] = relative_change(curves["psnr"], CURVE_WINDOW)
    for obj in dict.fromkeys(p.fidelity_objects + p.chroma_objects):  # what an empty (all-white) render scores
        key, truth = obj.replace(" ", "-"), bed.truth[object_key(*reversed(obj.split()))]
        metrics[f"{key}/psnr_empty"] = float(v3.aligned_psnr(torch.ones_like(truth), truth)[0])
    for obj in p.chroma_objects:  # the truth's chroma and the prior's own, at both guidance scales (cheap)
        shape, colour = parse_object(obj)
        key, prompt = obj.replace(" ", "-"), prompts.object_id(shape, colour)
        metrics[f"{key}/truth_saturation"] = sample_chroma(bed.truth[object_key(shape, colour)])
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
        self.fake = fake_score(prior, Prompts().n_prompts) if kind == "vsd" else None


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
    loss, _ = sd.score_distillation_loss(bed.schedule, bed.prior, method, x, lab, batch, fake=model.fake,
                                         fake_lab=lab, fake_free_lab=labels(prompt_ids, None))
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
    """ASD and VSD generators on the small and the large prompt set; PSNR on the small set's prompts. Nothing
    when ``amortised_steps`` is 0 (a profile whose budget cannot run them to convergence)."""
    p = run.params
    if not p.amortised_steps:
        return {}
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

            def evaluate(m: Amortised) -> dict[str, float]:
                return {"psnr": amortised_psnr(m, p, bed, small)}

            def loss(m: Amortised, b: dict):
                return amortised_loss(m, b, p, bed, method, pool)

            initial = evaluate(model)["psnr"]
            result = run.fit(f"amortised/{kind}-{size}", seed, model, loss,
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

