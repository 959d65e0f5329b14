"""The ``ring2d`` test bed: a mixture of isotropic Gaussians in 2-D with a closed-form score at every noise level.

- ``ring(8)``: 8 equal modes on a circle of radius 2, std 0.1 (the brief's default);
- ``ring(k, weights=...)``: unequal weights or more modes;
- ``grid(5, rare=...)``: a 5x5 grid whose listed modes are rare (the coverage test bed).

Diffused by x_t = alpha x_0 + sigma eps, a mixture stays a mixture: means alpha mu_k, variances
alpha^2 s^2 + sigma^2. Its exact posterior mean E[x_0 | x_t] (Tweedie) makes an *oracle teacher*
that any learned denoiser can be compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mixture:
    means: torch.Tensor    # (k, 2)
    weights: torch.Tensor  # (k,), sums to 1
    std: float

    @property
    def n_modes(self) -> int:
        return len(self.weights)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` points and their mode ids."""
        modes = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[modes] + self.std * torch.randn(n, 2, generator=generator), modes

    def sample_stratified(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` points with each mode's count fixed at its expected share (largest remainders), in random order: a
        reference set whose mode counts carry no multinomial noise."""
        expected = self.weights * n
        counts = expected.floor().long()
        counts[torch.argsort(expected - counts, descending=True)[:n - int(counts.sum())]] += 1
        modes = torch.repeat_interleave(torch.arange(self.n_modes), counts)
        modes = modes[torch.randperm(n, generator=generator)]
        return self.means[modes] + self.std * torch.randn(n, 2, generator=generator)

    def posterior_mean(self, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] under the diffused mixture (the oracle denoiser's x_0 prediction), on x_t's device."""
        alpha, sigma = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
        means, weights = self.means.to(x_t.device), self.weights.to(x_t.device)
        var = alpha ** 2 * self.std ** 2 + sigma ** 2                                   # (n, 1)
        # responsibilities r_k(x_t) ∝ w_k N(x_t; alpha mu_k, var I)
        sq = ((x_t[:, None, :] - alpha[:, None] * means[None]) ** 2).sum(-1)            # (n, k)
        logits = torch.log(weights)[None] - sq / (2 * var)
        r = torch.softmax(logits, dim=1)
        # per component, E[x_0 | x_t, k] = mu_k + (alpha s^2 / var) (x_t - alpha mu_k)
        gain = alpha * self.std ** 2 / var
        component = means[None] + gain[:, None] * (x_t[:, None, :] - alpha[:, None] * means[None])
        return (r[..., None] * component).sum(1)


def ring(n_modes: int = 8, radius: float = 2.0, std: float = 0.1, weights=None) -> Mixture:
    """``n_modes`` Gaussians evenly spaced on a circle; ``weights`` default to equal."""
    if n_modes < 1:
        raise ValueError(f"n_modes must be >= 1, got {n_modes}")
    if std <= 0 or radius <= 0:
        raise ValueError(f"std and radius must be > 0, got std={std}, radius={radius}")
    angles = 2 * math.pi * torch.arange(n_modes) / n_modes
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    w = torch.ones(n_modes) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (n_modes,) or (w <= 0).any():
        raise ValueError(f"weights must be {n_modes} positive numbers, got {weights}")
    return Mixture(means, w / w.sum(), std)


def grid(side: int = 5, spacing: float = 1.0, std: float = 0.08, rare=(), rare_weight: float = 0.1) -> Mixture:
    """``side`` x ``side`` Gaussians ``spacing`` apart, centred on 0; the modes listed in ``rare`` (row-major
    indices) weigh ``rare_weight`` times the others."""
    if side < 1 or spacing <= 0 or std <= 0:
        raise ValueError(f"need side >= 1, spacing > 0 and std > 0, got side={side}, spacing={spacing}, std={std}")
    if not 0 < rare_weight <= 1:
        raise ValueError(f"rare_weight must be in (0, 1], got {rare_weight}")
    bad = [i for i in rare if not 0 <= i < side * side]
    if bad:
        raise ValueError(f"rare modes must be indices in [0, {side * side}), got {bad}")
    axis = spacing * (torch.arange(side, dtype=torch.float32) - (side - 1) / 2)
    means = torch.cartesian_prod(axis, axis)
    w = torch.ones(side * side)
    w[list(rare)] = rare_weight
    return Mixture(means, w / w.sum(), std)


def corners(side: int) -> tuple[int, ...]:
    """Row-major indices of a ``side`` x ``side`` grid's four corners (the modes farthest from the mean)."""
    return tuple(sorted({0, side - 1, side * (side - 1), side * side - 1}))


def modes_covered(x: torch.Tensor, mixture: Mixture, radius_stds: float = 3.0, min_share: float = 0.2,
                  modes=None) -> int:
    """Modes (of ``modes``, default all) holding at least ``min_share`` of their expected share of ``x`` within
    ``radius_stds`` stds."""
    dist = torch.cdist(x, mixture.means)                         # (n, k)
    near = dist <= radius_stds * mixture.std
    counts = near.sum(0).float()
    covered = counts >= min_share * mixture.weights * len(x)
    return int(covered.sum() if modes is None else covered[list(modes)].sum())


def high_quality_share(x: torch.Tensor, mixture: Mixture, radius_stds: float = 3.0) -> float:
    """Share of points within ``radius_stds`` stds of some mode."""
    return (torch.cdist(x, mixture.means).min(dim=1).values <= radius_stds * mixture.std).float().mean().item()
