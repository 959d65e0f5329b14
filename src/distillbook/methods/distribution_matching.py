"""Distribution-matching losses for one-step generators: DMD/DMD2, SiD, SIM (VSD and SDS, shared with 3-D
optimisation, are in :mod:`distillbook.methods.score_distillation`).

A generator output x = G(z) is diffused to x_t = alpha_t x + sigma_t eps. Two denoisers read x_t: the
frozen *real* one (the teacher, p) and a *fake* one fitted online to the generator's samples (q) by
:func:`denoising_loss`. Their disagreement is the generator's learning signal. Each loss here is a
*surrogate*: its gradient with respect to the generator's parameters is the method's update. Tensors
are (batch, dim); every loss sums over dim and averages over the batch.

Scores and predictions: s(x_t) = -eps_hat / sigma_t, x0_hat = (x_t - sigma_t eps_hat) / alpha_t.

Which inputs carry gradients matters:

- DMD and VSD/SDS take predictions made *without* gradient: their update is a fixed vector times dx/dθ.
- SiD and SIM differentiate *through* the denoisers' inputs x_t (the networks' own weights stay frozen):
  predictions passed to them must be computed with gradients flowing to x.

The three are one family. With d(y) = ||y||^2 / 2, SIM's loss is SiD's at alpha = 1 up to a per-sample
weight; SiD's alpha = 1/2 is the full gradient of the Fisher divergence E_{q_t} ||s_q - s_p||^2 / 2 (its
sampling distribution moving with the generator too); DMD's direction is the gradient of KL(q_t || p_t).

Used by: ``dmd-one-step``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillbook.methods.score_distillation import surrogate


def _per_sample_sum(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1).sum(dim=1)


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Denoising score matching for the teacher and the fake score: E || net(x_t, t) - target ||^2,
    the target being eps, x0 or v to match the network's prediction type."""
    return _per_sample_sum((prediction - target) ** 2).mean()


def dmd_loss(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD2's distribution-matching gradient (paper 50), normalised per sample.

    With p = x - x0_hat from each denoiser,
        g = (p_real - p_fake) / mean_d |p_real| = (x0_fake - x0_real) / mean_d |x - x0_real|,
    and the surrogate 1/2 || x - sg(x - g) ||^2 has gradient g with respect to x. Unnormalised,
    g = (sigma_t^2 / alpha_t) (s_fake - s_real) = (sigma_t^2 / alpha_t^2) grad_x KL(q_t || p_t) per sample.
    """
    with torch.no_grad():
        p_real, p_fake = x - x0_real, x - x0_fake
        normaliser = p_real.abs().reshape(len(x), -1).mean(dim=1).clamp_min(1e-5)
        grad = (p_real - p_fake) / normaliser.reshape((-1,) + (1,) * (x.ndim - 1))
    return surrogate(x, grad)


def sid_loss(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, alpha: float = 1.2) -> torch.Tensor:
    """Score identity distillation (SiD, paper 58), as in its reference training loop:

        L = (y_r - y_f) . ((y_r - x) - alpha (y_r - y_f)) / sg(mean_d |x - y_r|),

    y = x0_hat of the real and fake denoisers at x_t. Gradients flow through y_r, y_f (via x_t) and x.
    """
    with torch.no_grad():
        weight = (x - x0_real).abs().reshape(len(x), -1).mean(dim=1).clamp_min(1e-5)
    diff = x0_real - x0_fake
    return (_per_sample_sum(diff * ((x0_real - x) - alpha * diff)) / weight).mean()


def pseudo_huber_derivative(u: torch.Tensor, c: float) -> torch.Tensor:
    """d'(u) = u / sqrt(||u||^2 + c^2), the gradient of d(u) = sqrt(||u||^2 + c^2) - c (per sample)."""
    if c <= 0:
        raise ValueError(f"the pseudo-Huber constant c must be > 0, got {c}")
    norm2 = _per_sample_sum(u ** 2).reshape((-1,) + (1,) * (u.ndim - 1))
    return u / torch.sqrt(norm2 + c ** 2)


def sim_loss(eps_real: torch.Tensor, eps_fake: torch.Tensor, noise: torch.Tensor, c: float | None = 1.0) -> torch.Tensor:
    """Score implicit matching (SIM, paper 86) with the pseudo-Huber distance, in eps units.

    SIM's divergence is D = E_{x_t ~ sg(q_t)} d(y_t), y_t = s_q(x_t) - s_p(x_t) (generator's fake score
    minus the teacher's), the sampling distribution held at the current generator. Its gradient is that
    of the surrogate
        L = - d'(y_t) . (s_q(x_t) - grad_{x_t} log q_t(x_t | x_0)),
    differentiated through x_t everywhere, d'(y_t) included, with both networks' weights frozen.
    Multiplying scores by sigma_t (s = -eps_hat / sigma_t, grad log q_t(x_t | x_0) = -eps / sigma_t):
        L = - d'(u) . (eps - eps_fake(x_t)),   u = eps_real(x_t) - eps_fake(x_t).
    Both predictions must carry gradients to x_t. ``tests/test_distribution_matching.py`` checks the L2
    form's gradient against the closed form on Gaussians (stopping it at d'(u) drops part of it), and the
    pseudo-Huber form through its c -> infinity limit.
    ``c=None`` is d(u) = ||u||^2 / 2 (d'(u) = u), the limit of c d'(u) as c -> infinity; then
    L = (alpha_t^2 / sigma_t^2) (y_r - y_f) . (y_f - x), which is SiD's loss at alpha = 1 up to its weight.
    """
    u = eps_real - eps_fake
    direction = u if c is None else pseudo_huber_derivative(u, c)
    return -_per_sample_sum(direction * (noise - eps_fake)).mean()


def gan_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for DMD2's classifier head: softplus(-D(real)) + softplus(D(fake))."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def gan_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's side: softplus(-D(G(z)))."""
    return F.softplus(-logits_fake).mean()
