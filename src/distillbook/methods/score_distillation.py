"""Score-distillation gradients for optimising a 3-D representation through its renders (part H).

A render x (or a batch of renders) is diffused, x_t = alpha_t x + sigma_t eps, and a 2-D prior's noise
predictions at x_t give an image-space gradient g; the representation follows g through the renderer
via the surrogate 1/2 ||x - sg(x - g)||^2 (:func:`surrogate`). With eps_y / eps_0 the prior's
conditional / unconditional predictions and s the guidance scale, eps_cfg = eps_0 + s (eps_y - eps_0):

- SDS (DreamFusion):                 g = w(t) (eps_cfg(x_t) - eps)
- VSD (ProlificDreamer, paper 60):   g = w(t) (eps_cfg(x_t) - eps_phi(x_t, c)), phi fitted to the renders
                                     (:func:`fake_score_loss`)
- ESD (paper 14):                    VSD with the fake score guided over the camera,
                                     eps_phi^lambda = eps_phi(0) + lambda (eps_phi(c) - eps_phi(0))
- CSD (classifier score):            g = w(t) (s - 1) (eps_y - eps_0), no denoising term
- CSM (TV-3DG, paper 12):            CSD at the render's DDIM inversion x_t (:func:`ddim_invert`) instead of
                                     random noise
- BSD (PlacidDreamer, paper 68):     g = sqrt(abar_t) (a c + (1 - a) d) with c the classifier term, d the denoising term,
                                     and a the min-norm mix, clip(<d - c, d> / ||d - c||^2, 0, 1)
- ASD (ScaleDreamer, paper 15):      g = w(t) (eps_cfg(x_t, t) - eps_y(x_{t+dt}, t + dt)), the same noise
- CDS (Consistent3D, paper 49):      a fixed noise, one Euler step of the probability-flow ODE from t to t'
                                     (variance-exploding form z = x_t / alpha_t, sigma = sqrt(1 - abar) / sqrt(abar)),
                                     g = (sigma_t / sigma_t') (eps_cfg_t - eps_hat_t) + (eps_hat_t - eps_cfg_t'):
                                     SDS with the injected noise replaced by the prediction one ODE step on

The per-formula functions take predictions; :func:`image_gradient` runs a prior (and a fake score) on renders
for every method of a :class:`Method`, and :func:`score_distillation_loss` turns it into the loss a training
loop descends (the surrogate, plus the fake score's fit for VSD/ESD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import DDIMInverseScheduler

from distillbook.methods.diffusion import Schedule, cfg, cond_and_uncond, denoising_loss, guided, null_labels

METHODS: dict[str, tuple[str, int | None]] = {
    "score-distillation method description (kind, guidance, particles, ESD lambda, CDS schedule)": ("Method", None),
    "image-space gradient of every score-distillation method from a prior": ("image_gradient", None),
    "score-distillation loss: surrogate plus the fake score's fit": ("score_distillation_loss", None),
    "score-distillation surrogate 1/2 ||x - sg(x - g)||^2": ("surrogate", None),
    "SDS gradient (DreamFusion)": ("sds", None),
    "VSD gradient (ProlificDreamer variational score distillation)": ("vsd", 60),
    "VSD/ESD fake score fit (denoising loss on the particles' renders)": ("fake_score_loss", 60),
    "ESD camera-guided fake score (entropic score distillation)": ("esd_fake", 14),
    "CSD classifier score distillation gradient": ("csd", None),
    "CSM DDIM inversion of a render (TV-3DG classifier score matching)": ("ddim_invert", 12),
    "BSD balanced score distillation (min-norm mix)": ("bsd", 68),
    "ASD asynchronous score distillation gradient (ScaleDreamer)": ("asd", 15),
    "CDS consistency distillation sampling gradient (Consistent3D)": ("cds", 49),
    "CDS annealed t' schedule (Consistent3D)": ("cds_annealed_t_next", 49),
    "CDS probability-flow ODE Euler step": ("euler_step", 49),
    "exact finite-set denoiser (posterior mean E[x0 | x_t])": ("finite_set_x0", None),
}


def _flat_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).reshape(len(a), -1).sum(1)


def sds(eps_cfg: torch.Tensor, noise: torch.Tensor, weight) -> torch.Tensor:
    """g = w(t) (eps_cfg - eps)."""
    return weight * (eps_cfg - noise)


def vsd(eps_cfg: torch.Tensor, eps_fake: torch.Tensor, weight) -> torch.Tensor:
    """g = w(t) (eps_cfg - eps_phi): SDS with the injected noise replaced by the particles' own score."""
    return weight * (eps_cfg - eps_fake)


def esd_fake(eps_fake_uncond_camera: torch.Tensor, eps_fake_camera: torch.Tensor, lam: float) -> torch.Tensor:
    """ESD's fake score: eps_phi(0) + lambda (eps_phi(c) - eps_phi(0)); lambda = 1 is VSD's camera-conditioned one."""
    return cfg(eps_fake_uncond_camera, eps_fake_camera, lam)


def csd(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float, weight) -> torch.Tensor:
    """g = w(t) (s - 1) (eps_y - eps_0): the classifier part of SDS alone."""
    return weight * (scale - 1) * (eps_cond - eps_uncond)


def bsd(classifier_term: torch.Tensor, denoising_term: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced score distillation: the min-norm point a c + (1 - a) d of the segment between c and d,
    a = clip(<d - c, d> / ||d - c||^2, 0, 1) per sample; returns (g, a)."""
    c, d = classifier_term, denoising_term
    diff = d - c
    a = (_flat_dot(diff, d) / _flat_dot(diff, diff).clamp_min(1e-30)).clamp(0, 1)
    a_ = a.reshape((-1,) + (1,) * (c.ndim - 1))
    return a_ * c + (1 - a_) * d, a


def asd(eps_cfg_t: torch.Tensor, eps_cond_shifted: torch.Tensor, weight) -> torch.Tensor:
    """g = w(t) (eps_cfg(x_t, t) - eps_y(x_{t+dt}, t + dt)), both with the same noise eps."""
    return weight * (eps_cfg_t - eps_cond_shifted)


def euler_step(z: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the probability-flow ODE in variance-exploding form: z' = z + (sigma' - sigma) eps.
    (It equals a deterministic DDIM step from t to t' on x_t = alpha_t z; the tests check this.)"""
    return z + (sigma_next - sigma) * eps


def cds_annealed_t_next(progress: float, num_train_timesteps: int, max_gap: int, t_min: int = 20) -> int:
    """Consistent3D's schedule for CDS's t': it falls linearly from t_max - max_gap to ``t_min`` as the run's
    ``progress`` goes from 0 to 1, with t = t' + gap <= t_max = 0.98 T (the other methods' largest t)."""
    # t'(progress) = hi - (hi - t_min) progress,  hi = 0.98 T - max_gap
    hi = round(0.98 * num_train_timesteps) - max_gap
    return round(hi - (hi - t_min) * progress)


def cds(eps_cfg_t: torch.Tensor, eps_cfg_next: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
        eps_hat_t: torch.Tensor | None = None, weight=1.0) -> torch.Tensor:
    """Consistent3D's gradient: w ((sigma_t / sigma_t') (eps_cfg_t - eps_hat_t) + (eps_hat_t - eps_cfg_t')).

    ``eps_hat_t`` is the noise implied by the (optionally std-rescaled) x0 reconstruction, by default the
    guided prediction itself; the Euler step to z_t' uses eps_hat_t, and eps_cfg_t' is the guided prediction
    there. Without rescaling g = eps_cfg(z_t, t) - eps_cfg(z_t', t'): where SDS subtracts the injected noise,
    CDS subtracts the prediction one deterministic step later. Signs follow :func:`sds` (a descent
    direction); threestudio's ``compute_grad_consistency`` returns the negative and builds its target as
    latents + grad, the same update.
    """
    eps_hat_t = eps_cfg_t if eps_hat_t is None else eps_hat_t
    return weight * ((sigma / sigma_next) * (eps_cfg_t - eps_hat_t) + (eps_hat_t - eps_cfg_next))


def surrogate(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """1/2 ||x - sg(x - g)||^2 summed over pixels, averaged over renders: its gradient in x is g / n."""
    target = (x - grad).detach()
    return 0.5 * ((x - target) ** 2).reshape(len(x), -1).sum(1).mean()


def finite_set_x0(x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The exact posterior mean E[x_0 | x_t] when x_0 is uniform over ``images`` (m, ...):

        x0_hat = sum_i softmax_i(-||x_t - alpha x_i||^2 / (2 sigma^2)) x_i.

    Over the renders of one prompt it is the conditional teacher, over all renders the unconditional one,
    which makes classifier-free guidance exact. It memorises: at most noise levels the weights are nearly
    one-hot on the nearest render, so the experiments use learned, smooth priors and keep this as a reference.
    """
    alpha, sigma = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
    flat_x, flat_images = x_t.reshape(len(x_t), -1), images.reshape(len(images), -1)
    distances = ((flat_x[:, None, :] - alpha[:, :, None] * flat_images[None]) ** 2).sum(-1)  # (n, m)
    weights = torch.softmax(-distances / (2 * sigma ** 2), dim=1)
    return (weights @ flat_images).reshape(x_t.shape)


# ---------------------------------------------------------------- the methods on a prior


@dataclass(frozen=True)
class Method:
    """One way of turning a prior into a gradient for renders.

    ``kind`` picks the gradient (``reconstruction`` is no score distillation: the L2 ceiling against ground-truth
    renders, which the caller computes); ``guidance`` is the CFG scale s (BSD's classifier-term scale s_c);
    ``view_prompt`` whether the prior is told the camera's view word; ``particles`` how many representations
    share the views of a step (VSD's particles); ``esd_lambda`` ESD's camera guidance on the fake score (1 is
    VSD); ``annealed`` CDS's schedule (one fixed noise, t' falling over the run; False: SDS's random t and fresh
    noise); ``inversion_steps`` CSM's DDIM inversion grid (steps over the schedule).
    """

    kind: Literal["reconstruction", "sds", "vsd", "bsd", "cds", "csd", "csm", "asd"]
    guidance: float = 7.5
    view_prompt: bool = True
    particles: int = 1
    esd_lambda: float = 1.0
    annealed: bool = True
    inversion_steps: int = 10


def _eps(schedule: Schedule, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The noise prediction eps(x_t, t) from a network output of the schedule's prediction type."""
    return schedule.convert(out, x_t, t, "epsilon")


def ddim_invert(net, schedule: Schedule, x0: torch.Tensor, lab: torch.Tensor, n_grid: int, k: int):
    """Deterministic DDIM inversion of x0 with the unconditional prediction, k steps up a grid of ``n_grid``
    (diffusers' ``DDIMInverseScheduler``); returns (x_t, t) with t the grid's k-th timestep."""
    inverse = DDIMInverseScheduler.from_config(schedule.scheduler.config, set_alpha_to_one=True)
    inverse.set_timesteps(n_grid)
    x = x0
    for t in inverse.timesteps[:k]:
        t_batch = torch.full((len(x),), int(t), dtype=torch.long, device=x.device)
        # x_t' = alpha_t' x0_hat(x, t) + sigma_t' eps_0(x, t), the prediction made at the current level
        x = inverse.step(net(x, t_batch, null_labels(lab, net.n_classes)), t, x).prev_sample
    return x, torch.full((len(x),), int(inverse.timesteps[k - 1]), dtype=torch.long, device=x.device)


def image_gradient(schedule: Schedule, prior, method: Method, x: torch.Tensor, lab: torch.Tensor, batch: dict,
                   fake=None, fake_lab: torch.Tensor | None = None,
                   fake_free_lab: torch.Tensor | None = None) -> torch.Tensor:
    """The method's gradient g on flat renders ``x`` (model space), with w(t) = sigma_t^2 (threestudio's
    'sds' weighting). Computed without a graph; only the renderer is differentiated.

    ``prior`` is a class-conditional denoiser (class ``prior.n_classes`` is the null label) and ``lab`` its
    labels; ``fake`` the fake score (VSD/ESD) with ``fake_lab`` its camera-conditioned labels and
    ``fake_free_lab`` the same prompts without the camera (ESD). ``batch`` holds the step's randomness: ``t``
    and ``noise``; CDS adds ``t_next``, ``gap`` and ``fixed_noise``, CSM ``inversion`` (steps up the grid), ASD
    ``shift``.
    """
    t, noise = batch["t"], batch.get("noise")
    with torch.no_grad():
        if method.kind == "cds":
            # one ODE step from t = t' + gap down to t', from x + sigma_t eps* with the run's fixed noise eps*
            t_next = batch["t_next"]
            t = t_next + batch["gap"]
            abar, abar_next = schedule.coefficients(t, 1)[0] ** 2, schedule.coefficients(t_next, 1)[0] ** 2
            # variance-exploding sigma = sqrt(1 - abar) / sqrt(abar)
            sigma = ((1 - abar) / abar).sqrt()[:, None]
            sigma_next = ((1 - abar_next) / abar_next).sqrt()[:, None]
            # z_t = x + sigma_t eps*
            z_t = x + sigma * batch["fixed_noise"]
            # back to the VP input of the prior: x_t = alpha_t z_t = z_t / sqrt(1 + sigma_t^2)
            x_t = z_t / (1 + sigma ** 2).sqrt()
            eps_t = _eps(schedule, guided(prior, x_t, t, lab, method.guidance), x_t, t)
            # z_t' = z_t + (sigma_t' - sigma_t) eps_cfg(x_t, t)
            z_next = euler_step(z_t, eps_t, sigma, sigma_next)
            x_next = z_next / (1 + sigma_next ** 2).sqrt()
            eps_next = _eps(schedule, guided(prior, x_next, t_next, lab, method.guidance), x_next, t_next)
            # g = (1 - abar_t) (eps_cfg(x_t, t) - eps_cfg(x_t', t'))
            return cds(eps_t, eps_next, sigma, sigma_next, weight=(1 - abar)[:, None])
        if method.kind == "csm":
            # x_t: the render's DDIM inversion, a random number of steps up the grid
            x_t, t = ddim_invert(prior, schedule, x, lab, method.inversion_steps, batch["inversion"])
        else:
            # x_t = alpha_t x + sigma_t eps
            x_t = schedule.add_noise(x, noise, t)
        _, sigma = schedule.coefficients(t, 2)
        # w(t) = sigma_t^2
        w = sigma ** 2
        eps_cond, eps_uncond = (_eps(schedule, o, x_t, t) for o in cond_and_uncond(prior, x_t, t, lab))
        # eps_cfg = eps_0 + s (eps_y - eps_0)
        eps_cfg = cfg(eps_uncond, eps_cond, method.guidance)
        if method.kind == "sds":
            # g = w(t) (eps_cfg - eps)
            return sds(eps_cfg, noise, w)
        if method.kind in ("csd", "csm"):
            # g = w(t) (s - 1) (eps_y - eps_0)
            return csd(eps_uncond, eps_cond, method.guidance, w)
        if method.kind == "bsd":
            # PlacidDreamer's train_step_BSD: c = s_c (eps_y - eps_0), d = eps_0 (no noise subtracted; E[eps] = 0),
            # g = sqrt(abar_t) (a c + (1 - a) d), a the min-norm mix
            g, _ = bsd(method.guidance * (eps_cond - eps_uncond), eps_uncond)
            alpha, _ = schedule.coefficients(t, 2)
            return alpha * g
        if method.kind == "vsd":
            # eps_phi(x_t, t, c): the fake score told the camera's view
            eps_fake_camera = _eps(schedule, fake(x_t, t, fake_lab), x_t, t)
            eps_fake = eps_fake_camera
            if method.esd_lambda != 1.0:
                # ESD: eps_phi^lambda = eps_phi(0) + lambda (eps_phi(c) - eps_phi(0)), eps_phi(0) the camera-free score
                eps_fake_free = _eps(schedule, fake(x_t, t, fake_free_lab), x_t, t)
                eps_fake = esd_fake(eps_fake_free, eps_fake_camera, method.esd_lambda)
            # g = w(t) (eps_cfg - eps_phi)
            return vsd(eps_cfg, eps_fake, w)
        if method.kind == "asd":
            # x_{t+dt} = alpha_{t+dt} x + sigma_{t+dt} eps, the same eps
            t_shift = (t + batch["shift"]).clamp(max=schedule.num_train_timesteps - 1)
            x_shift = schedule.add_noise(x, noise, t_shift)
            eps_shift = _eps(schedule, prior(x_shift, t_shift, lab), x_shift, t_shift)
            # g = w(t) (eps_cfg(x_t, t) - eps_y(x_{t+dt}, t + dt))
            return asd(eps_cfg, eps_shift, w)
    raise ValueError(f"method {method.kind!r} has no image gradient here")


def fake_score_loss(schedule: Schedule, fake, x: torch.Tensor, lab: torch.Tensor, free_lab: torch.Tensor,
                    batch: dict) -> torch.Tensor:
    """VSD's (and ESD's) fake-score fit: denoising score matching on the detached renders,

        L_phi = E || net_phi(x_t, t, c) - target(x, eps, t) ||^2,   x_t = alpha_t sg(x) + sigma_t eps,

    camera-conditioned (``lab``), with the labels ``batch["drop_camera"]`` marks camera-free (``free_lab``) so
    that ESD's camera-free score is learned too. ``batch`` holds the fit's own ``t_fake`` and ``noise_fake``.
    """
    x = x.detach()
    fake_lab = torch.where(batch["drop_camera"], free_lab, lab)
    x_t = schedule.add_noise(x, batch["noise_fake"], batch["t_fake"])
    prediction = fake(x_t, batch["t_fake"], fake_lab)
    # || net_phi(x_t, t, c) - target(x, eps, t) ||^2
    return denoising_loss(prediction, schedule.target(x, batch["noise_fake"], batch["t_fake"]))


def score_distillation_loss(schedule: Schedule, prior, method: Method, x: torch.Tensor, lab: torch.Tensor,
                            batch: dict, fake=None, fake_lab: torch.Tensor | None = None,
                            fake_free_lab: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss a training loop descends for renders ``x``: the surrogate of :func:`image_gradient`'s g, plus,
    with a fake score, its fit on the same renders (:func:`fake_score_loss`, labels ``fake_lab`` /
    ``fake_free_lab``). Returns (loss, g)."""
    g = image_gradient(schedule, prior, method, x, lab, batch, fake=fake, fake_lab=fake_lab,
                       fake_free_lab=fake_free_lab)
    # 1/2 ||x - sg(x - g)||^2: its gradient in x is g / n
    loss = surrogate(x, g)
    if fake is not None:
        loss = loss + fake_score_loss(schedule, fake, x, fake_lab, fake_free_lab, batch)
    return loss, g
