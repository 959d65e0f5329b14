"""Metrics shared across chapters. Each computes on the device of its first argument and moves the others
there (labels or reference samples often live on the host)."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose arg-max equals the label, in [0, 1]."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set")
    return (logits.argmax(dim=-1) == labels.to(logits.device)).float().mean().item()



def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator: torch.Generator | None = None, projections: torch.Tensor | None = None) -> float:
    """Sliced 2-Wasserstein distance between two equal-size point clouds.

    SW_2(x, y) = ( E_theta W_2^2(theta^T x, theta^T y) )^(1/2), theta uniform on the sphere; in 1-D,
    W_2^2 between equal-size samples is the mean squared difference of the sorted values.
    ``projections`` (dim, n) fixes the directions (the tests pass POT the same ones).
    """
    if x.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) with the same d, got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"sliced_wasserstein needs equal sample sizes, got {len(x)} and {len(y)}")
    if projections is None:
        projections = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
        projections = projections / projections.norm(dim=0, keepdim=True)
    projections = projections.to(x.device, torch.float64)
    px = torch.sort(x.double() @ projections, dim=0).values
    py = torch.sort(y.to(x.device).double() @ projections, dim=0).values
    return ((px - py) ** 2).mean(dim=0).mean().sqrt().item()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the formula of FID):

        ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}),

    the trace of the square root taken as the sum of square roots of the eigenvalues of S_a S_b.
    """
    a, b = features_a.double(), features_b.to(features_a.device).double()
    if a.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (n >= 2, d) feature sets with the same d, got {tuple(a.shape)} and {tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    # S_a S_b is similar to the PSD S_a^{1/2} S_b S_a^{1/2}: real, non-negative eigenvalues up to rounding
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp_min(0)
    return (((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum()).item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) on features.

    Each set's manifold is the union of balls around its points reaching their k-th nearest neighbour.
    Precision: share of fake points inside the real manifold; recall: share of real points inside the fake one.
    """
    if k < 1 or k >= min(len(real), len(fake)):
        raise ValueError(f"k must be in [1, {min(len(real), len(fake)) - 1}], got {k}")
    real, fake = real.double(), fake.to(real.device).double()
    radius_real = torch.cdist(real, real).kthvalue(k + 1, dim=1).values  # +1: each point is its own nearest
    radius_fake = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values
    d = torch.cdist(real, fake)                                          # (n_real, n_fake)
    precision = (d < radius_real[:, None]).any(dim=0).double().mean().item()
    recall = (d < radius_fake[None, :]).any(dim=1).double().mean().item()
    return precision, recall
