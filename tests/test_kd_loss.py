"""Hinton's soft-target loss against scipy/torch references and its analytic identities."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import rel_entr, softmax

from distillbook.methods.kd import distillation_objective, hinton_kd_loss, soft_targets


@pytest.fixture
def logits():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(16, 10, generator=gen, dtype=torch.float64) * 3, torch.randn(16, 10, generator=gen, dtype=torch.float64) * 3


def test_zero_for_identical_logits(logits):
    z, _ = logits
    for t in (0.5, 1.0, 4.0, 20.0):
        assert hinton_kd_loss(z, z.clone(), t).item() == pytest.approx(0.0, abs=1e-12)


def test_non_negative_and_positive_when_different(logits):
    z, v = logits
    for t in (0.5, 1.0, 4.0, 20.0):
        assert hinton_kd_loss(z, v, t).item() > 0


@pytest.mark.parametrize("t", [1.0, 2.5, 8.0])
def test_matches_scipy_kl_times_t_squared(logits, t):
    z, v = logits
    p = softmax(v.numpy() / t, axis=-1)  # teacher = target
    q = softmax(z.numpy() / t, axis=-1)
    expected = t**2 * rel_entr(p, q).sum(axis=-1).mean()
    assert hinton_kd_loss(z, v, t).item() == pytest.approx(expected, rel=1e-10)


def test_matches_torch_kl_div_at_t1(logits):
    z, v = logits
    ref = F.kl_div(F.log_softmax(z, -1), F.log_softmax(v, -1), reduction="batchmean", log_target=True)
    assert hinton_kd_loss(z, v, 1.0).item() == pytest.approx(ref.item(), rel=1e-12)


def test_known_value_at_t1():
    # p = (1/2, 1/2), q = (1/4, 3/4): KL = 1/2 log 2 + 1/2 log(2/3)
    z = torch.log(torch.tensor([[0.25, 0.75]], dtype=torch.float64))
    v = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert hinton_kd_loss(z, v, 1.0).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("t", [1.0, 3.0, 10.0])
def test_gradient_is_t_times_q_minus_p(logits, t):
    z, v = logits
    z = z.clone().requires_grad_(True)
    hinton_kd_loss(z, v, t).backward()
    expected = t * (soft_targets(z.detach(), t) - soft_targets(v, t)) / len(z)
    torch.testing.assert_close(z.grad, expected, rtol=1e-10, atol=1e-12)


def test_high_temperature_limit_is_centred_logit_matching(logits):
    z, v = logits
    z, v = z - z.mean(-1, keepdim=True), v - v.mean(-1, keepdim=True)
    n = z.shape[-1]
    limit = ((z - v) ** 2).sum(-1).mean() / (2 * n)
    assert hinton_kd_loss(z, v, 1000.0).item() == pytest.approx(limit.item(), rel=1e-3)


def test_teacher_gets_no_gradient(logits):
    z, v = (t.clone().requires_grad_(True) for t in logits)
    hinton_kd_loss(z, v, 2.0).backward()
    assert z.grad is not None and v.grad is None


def test_objective_endpoints(logits):
    z, v = logits
    y = torch.arange(16) % 10
    assert distillation_objective(z, v, z, y, 3.0, 1.0).item() == pytest.approx(hinton_kd_loss(z, v, 3.0).item())
    assert distillation_objective(z, v, z, y, 3.0, 0.0).item() == pytest.approx(F.cross_entropy(z, y).item())


def test_bad_inputs_are_named(logits):
    z, v = logits
    with pytest.raises(ValueError, match="temperature"):
        hinton_kd_loss(z, v, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_objective(z, v, z, torch.zeros(16, dtype=torch.long), 1.0, 1.5)
    with pytest.raises(ValueError, match="shape"):
        hinton_kd_loss(z[:, :5], v, 1.0)
