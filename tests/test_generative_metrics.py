"""Sliced Wasserstein, Fréchet distance and precision/recall against POT, prdc and closed forms;
the ring2d oracle against the score of its diffused mixture."""

import numpy as np
import ot
import prdc
import pytest
import scipy.linalg
import torch

from distillbook.core.metrics import frechet_distance, precision_recall, sliced_wasserstein
from distillbook.testbeds import ring2d


def test_sliced_wasserstein_matches_pot_on_the_same_projections():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, generator=gen), 0.5 + 2 * torch.randn(300, 3, generator=gen)
    projections = torch.randn(3, 64, generator=gen, dtype=torch.float64)
    projections /= projections.norm(dim=0, keepdim=True)
    ours = sliced_wasserstein(x, y, projections=projections)
    theirs = ot.sliced_wasserstein_distance(x.double().numpy(), y.double().numpy(), projections=projections.numpy(), p=2)
    assert ours == pytest.approx(float(theirs), rel=1e-10)
    assert sliced_wasserstein(x, x, generator=gen) == 0.0
    with pytest.raises(ValueError, match="equal sample sizes"):
        sliced_wasserstein(x, y[:10])


def test_frechet_distance_closed_form_and_scipy():
    """Gaussians with diagonal covariances: ||mu_a - mu_b||^2 + sum (sqrt(a_i) - sqrt(b_i))^2, up to sampling."""
    gen = torch.Generator().manual_seed(1)
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([2.0, 1.0, 1.0])
    mu_a, mu_b = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, -1.0])
    a = mu_a + var_a.sqrt() * torch.randn(200000, 3, generator=gen, dtype=torch.float64)
    b = mu_b + var_b.sqrt() * torch.randn(200000, 3, generator=gen, dtype=torch.float64)
    closed = ((mu_a - mu_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(closed.item(), rel=0.01)
    # general covariances: the usual scipy.linalg.sqrtm formula (as in pytorch-fid)
    fa, fb = torch.randn(500, 8, generator=gen, dtype=torch.float64), torch.randn(400, 8, generator=gen, dtype=torch.float64)
    fb = fb @ torch.randn(8, 8, generator=gen, dtype=torch.float64) + 0.3
    ca, cb = np.cov(fa.numpy(), rowvar=False), np.cov(fb.numpy(), rowvar=False)
    covmean = scipy.linalg.sqrtm(ca @ cb).real
    reference = ((fa.mean(0) - fb.mean(0)) ** 2).sum().item() + np.trace(ca + cb - 2 * covmean)
    assert frechet_distance(fa, fb) == pytest.approx(reference, rel=1e-6)


def test_precision_recall_matches_prdc(capsys):
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(400, 5, generator=gen)
    fake = 0.7 * torch.randn(300, 5, generator=gen) + 0.4
    ours = precision_recall(real, fake, k=5)
    theirs = prdc.compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    assert ours == pytest.approx((theirs["precision"], theirs["recall"]), abs=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(real, fake, k=0)


def test_ring_oracle_is_tweedie_on_the_diffused_mixture():
    """E[x0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha, with p_t the diffused mixture in closed form."""
    mixture = ring2d.ring(8, weights=[1, 2, 3, 4, 1, 2, 3, 4])
    x_t = torch.randn(50, 2, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(50, dtype=torch.float64) * 0.9 + 0.05
    sigma = (1 - alpha ** 2).sqrt()
    means, weights = mixture.means.double(), mixture.weights.double()
    var = (alpha ** 2 * mixture.std ** 2 + sigma ** 2)[:, None]
    sq = ((x_t[:, None] - alpha[:, None, None] * means[None]) ** 2).sum(-1)
    log_p = torch.logsumexp(torch.log(weights)[None] - sq / (2 * var) - torch.log(2 * torch.pi * var), dim=1)
    (score,) = torch.autograd.grad(log_p.sum(), x_t)
    tweedie = (x_t + sigma[:, None] ** 2 * score) / alpha[:, None]
    oracle = ring2d.Mixture(means, weights, mixture.std).posterior_mean(x_t.detach(), alpha, sigma)
    torch.testing.assert_close(oracle, tweedie.detach())


def test_mode_coverage_counts_modes():
    mixture = ring2d.ring(8)
    x, modes = mixture.sample(4000, torch.Generator().manual_seed(3))
    assert ring2d.modes_covered(x, mixture) == 8
    assert ring2d.high_quality_share(x, mixture) > 0.98
    assert ring2d.modes_covered(x[modes < 3], mixture) == 3
    assert ring2d.modes_covered(torch.zeros(100, 2), mixture) == 0
    with pytest.raises(ValueError, match="weights"):
        ring2d.ring(3, weights=[1, 2])
