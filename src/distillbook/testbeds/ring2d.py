"""The ``ring2d`` test bed: a mixture of isotropic Gaussians in 2-D with a closed-form score at every noise level.

- ``ring(8)``: 8 equal modes on a circle of radius 2, std 0.1 (the brief's default);
- ``ring(k, weights=...)``: unequal weights or more modes (a harder variant).

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

    def posterior_mean(self, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] under the diffused mixture (the oracle denoiser's x_0 prediction)."""
        alpha, sigma = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
        var = alpha ** 2 * self.std ** 2 + sigma ** 2                                   # (n, 1)
        # responsibilities r_k(x_t) ∝ w_k N(x_t; alpha mu_k, var I)
        sq = ((x_t[:, None, :] - alpha[:, None] * self.means[None]) ** 2).sum(-1)       # (n, k)
        logits = torch.log(self.weights)[None] - sq / (2 * var)
        r = torch.softmax(logits, dim=1)
        # per component, E[x_0 | x_t, k] = mu_k + (alpha s^2 / var) (x_t - alpha mu_k)
        gain = alpha * self.std ** 2 / var
        component = self.means[None] + gain[:, None] * (x_t[:, None, :] - alpha[:, None] * self.means[None])
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


def modes_covered(x: torch.Tensor, mixture: Mixture, radius_stds: float = 3.0, min_share: float = 0.2) -> int:
    """Modes holding at least ``min_share`` of their expected share of ``x`` within ``radius_stds`` stds."""
    dist = torch.cdist(x, mixture.means)                         # (n, k)
    near = dist <= radius_stds * mixture.std
    counts = near.sum(0).float()
    return int((counts >= min_share * mixture.weights * len(x)).sum())


def high_quality_share(x: torch.Tensor, mixture: Mixture, radius_stds: float = 3.0) -> float:
    """Share of points within ``radius_stds`` stds of some mode."""
    return (torch.cdist(x, mixture.means).min(dim=1).values <= radius_stds * mixture.std).float().mean().item()
