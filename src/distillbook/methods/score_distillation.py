"""Score-distillation gradients for optimising a 3-D representation through its renders (part H).

A render x (or a batch of renders) is diffused, x_t = alpha_t x + sigma_t eps, and a 2-D prior's noise
predictions at x_t give an image-space gradient g; the representation follows g through the renderer
via the surrogate 1/2 ||x - sg(x - g)||^2 (:func:`surrogate`). With eps_y / eps_0 the prior's
conditional / unconditional predictions and s the guidance scale, eps_cfg = eps_0 + s (eps_y - eps_0):

- SDS (DreamFusion):                 g = w(t) (eps_cfg(x_t) - eps)
- VSD (ProlificDreamer, paper 60):   g = w(t) (eps_cfg(x_t) - eps_phi(x_t, c)), phi fitted to the renders
- ESD (paper 14):                    VSD with the fake score guided over the camera,
                                     eps_phi^lambda = eps_phi(0) + lambda (eps_phi(c) - eps_phi(0))
- CSD (classifier score):            g = w(t) (s - 1) (eps_y - eps_0), no denoising term
- BSD (PlacidDreamer, paper 68):     g = a c + (1 - a) d with c the classifier term, d the denoising term,
                                     and a the min-norm mix, clip(<d - c, d> / ||d - c||^2, 0, 1)
- ASD (ScaleDreamer, paper 15):      g = w(t) (eps_cfg(x_t, t) - eps_y(x_{t+dt}, t + dt)), the same noise
- CDS (Consistent3D, paper 49):      a fixed noise, one Euler step of the probability-flow ODE from t to t'
                                     (variance-exploding form z = x_t / alpha_t, sigma = sqrt(1 - abar) / sqrt(abar)),
                                     g = (sigma_t / sigma_t') (eps_cfg_t - eps_hat_t) + (eps_hat_t - eps_cfg_t'):
                                     SDS with the injected noise replaced by the prediction one ODE step on

Used by: the ``sds-3d-gradients`` chapter.
"""

from __future__ import annotations

import torch

from distillbook.methods.diffusion import cfg


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
