"""Noise schedules, prediction types and samplers for the diffusion chapters, on diffusers' schedulers.

The forward process is variance preserving: x_t = alpha_t x_0 + sigma_t eps with alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t) and abar_t from a diffusers ``DDPMScheduler`` (1,000 training steps, cosine
schedule by default). Networks output one of three *prediction types*; :func:`Schedule.convert` moves
between them in one place:

- ``epsilon``: eps;
- ``sample``: x_0;
- ``v_prediction``: v = alpha_t eps - sigma_t x_0 (well conditioned at both ends of the schedule,
  so a one-step generator built from the teacher at t = T is stable: x_0 = alpha_T x_T - sigma_T v).

Samplers are diffusers' DDIM, Euler and DDPM schedulers, configured from the same training schedule
with ``trailing`` timestep spacing (so one step starts at t = T).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from torch import nn

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SAMPLERS = ("ddim", "euler", "ddpm", "dpm")
METHODS = {
    "noise schedule, forward diffusion, eps/x0/v conversions": ("Schedule", None),
    "DDPM / DDIM / Euler sampling (diffusers schedulers)": ("Schedule", None),
    "denoising score matching (teachers, priors, fake scores)": ("denoising_loss", None),
    "classifier-free guidance": ("cfg", None),
    "guided prediction of a class-conditional denoiser": ("guided", None),
    "conditional and unconditional predictions in one call": ("cond_and_uncond", None),
    "label dropout to the null class (CFG training)": ("drop_labels", None),
}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


class Schedule:
    """A variance-preserving noise schedule (diffusers' ``DDPMScheduler``) and the conversions between
    prediction types. ``prediction_type`` is what the book's networks output."""

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2",
                 prediction_type: str = "v_prediction"):
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule={beta_schedule!r}; allowed: {', '.join(BETA_SCHEDULES)}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={prediction_type!r}; allowed: {', '.join(PREDICTION_TYPES)}")
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
        self.scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                       prediction_type=prediction_type, clip_sample=False)
        self.prediction_type = prediction_type
        self.num_train_timesteps = num_train_timesteps
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float32)

    def coefficients(self, t: torch.Tensor, ndim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) for integer timesteps ``t``, shaped to broadcast over a batch of rank ``ndim``."""
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point:
            raise TypeError("timesteps must be integers in [0, num_train_timesteps)")
        if self.alphas_cumprod.device != t.device:  # keep a copy where the timesteps live
            self.alphas_cumprod = self.alphas_cumprod.to(t.device)
        abar = self.alphas_cumprod[t.long()]
        shape = (-1,) + (1,) * (ndim - 1)
        return abar.sqrt().reshape(shape), (1 - abar).sqrt().reshape(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t x_0 + sigma_t eps (diffusers' ``add_noise``)."""
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What a network of this schedule's prediction type should output for (x_0, eps, t)."""
        return {"epsilon": noise, "sample": x0,
                "v_prediction": self.scheduler.get_velocity(x0, noise, t)}[self.prediction_type]

    def convert(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, to: str,
                source: str | None = None) -> torch.Tensor:
        """Turn a network ``output`` of type ``source`` (default: this schedule's) at (x_t, t) into ``to``."""
        source = source or self.prediction_type
        for name in (source, to):
            if name not in PREDICTION_TYPES:
                raise ValueError(f"prediction type {name!r}; allowed: {', '.join(PREDICTION_TYPES)}")
        alpha, sigma = self.coefficients(t, x_t.ndim)
        # first to (x0, eps): x_t = alpha x0 + sigma eps, v = alpha eps - sigma x0
        if source == "epsilon":
            eps = output
            x0 = (x_t - sigma * eps) / alpha
        elif source == "sample":
            x0 = output
            eps = (x_t - alpha * x0) / sigma
        else:
            x0 = alpha * x_t - sigma * output
            eps = sigma * x_t + alpha * output
        return {"epsilon": eps, "sample": x0, "v_prediction": alpha * eps - sigma * x0}[to]

    def sample_timesteps(self, n: int, generator: torch.Generator, low: float = 0.02,
                         high: float = 0.98) -> torch.Tensor:
        """``n`` integer timesteps uniform in [low T, high T] (DMD2's range by default)."""
        if not 0 <= low < high <= 1:
            raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
        lo, hi = int(low * self.num_train_timesteps), int(high * (self.num_train_timesteps - 1))
        return torch.randint(lo, hi + 1, (n,), generator=generator)

    def sampler(self, name: str = "ddim"):
        """A fresh diffusers sampler sharing this training schedule (trailing spacing: step one is t = T)."""
        if name not in SAMPLERS:
            raise ValueError(f"sampler={name!r}; allowed: {', '.join(SAMPLERS)}")
        config = self.scheduler.config
        if name == "ddim":
            return DDIMScheduler.from_config(config, timestep_spacing="trailing", set_alpha_to_one=True)
        if name == "euler":
            return EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
        if name == "dpm":  # DPM-Solver++ (2nd order), the strong few-step ODE solver
            return DPMSolverMultistepScheduler.from_config(config, timestep_spacing="trailing",
                                                           algorithm_type="dpmsolver++", solver_order=2,
                                                           final_sigmas_type="zero")
        return DDPMScheduler.from_config(config, timestep_spacing="trailing")

    @torch.no_grad()
    def sample(self, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
               steps: int, sampler: str = "ddim", generator: torch.Generator | None = None) -> torch.Tensor:
        """Integrate from x_T = ``noise`` in ``steps`` network evaluations.

        ``model_fn(x_t, t)`` returns this schedule's prediction type for a batch; ``t`` is a batch of
        integer timesteps. DDIM runs with eta = 0 (deterministic); DDPM draws its noise from ``generator``.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        scheduler = self.sampler(sampler)
        scheduler.set_timesteps(steps, device=noise.device)
        x = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            t_batch = torch.full((len(x),), int(t), dtype=torch.long, device=noise.device)
            model_input = scheduler.scale_model_input(x, t) if sampler == "euler" else x
            out = model_fn(model_input, t_batch)
            kwargs = {"generator": generator} if sampler == "ddpm" else {}
            if sampler == "ddim":
                kwargs["eta"] = 0.0
            x = scheduler.step(out, t, x, **kwargs).prev_sample
        return x


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Denoising score matching for the teacher and the fake score: E || net(x_t, t) - target ||^2,
    the target being eps, x0 or v to match the network's prediction type."""
    # E || net(x_t, t) - target ||^2, summed over dim
    return ((prediction - target) ** 2).reshape(len(prediction), -1).sum(dim=1).mean()


def cfg(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, out_cfg = out_0 + s (out_y - out_0): linear, so valid for eps, x0 or v.

    s = 1 is the conditional output, 0 the unconditional one, s < 0 pushes away from the condition.
    """
    return uncond + scale * (cond - uncond)


def guided(net: nn.Module, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
           scale: float) -> torch.Tensor:
    """Classifier-free guidance of a class-conditional ``net`` (class ``net.n_classes`` is the null label), by :func:`cfg`.

    ``scale`` 1 is the plain conditional output, 0 the unconditional one, < 0 pushes away from the class.
    """
    if labels is None or scale == 1.0:
        return net(x_t, t, labels)
    if scale == 0.0:
        return net(x_t, t, None)
    cond, uncond = cond_and_uncond(net, x_t, t, labels)
    return cfg(uncond, cond, scale)


def null_labels(labels: torch.Tensor, null_class: int) -> torch.Tensor:
    """The null (unconditional) label for every sample: class ``null_class`` (``net.n_classes``)."""
    return torch.full_like(labels, null_class)


def drop_labels(labels: torch.Tensor, drop: torch.Tensor, null_class: int) -> torch.Tensor:
    """Classifier-free guidance training: the labels where ``drop`` is true become the null class."""
    return torch.where(drop, null_labels(labels, null_class), labels)


def cond_and_uncond(net: nn.Module, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor):
    """(net(x_t, t, y), net(x_t, t, null)) in one batched call."""
    both = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null_labels(labels, net.n_classes)]))
    return both.chunk(2)
