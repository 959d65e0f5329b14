"""Token-level divergences of methods/kd.py against scipy and closed forms, with temperature and masks."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax

from distillbook.methods.kd import (DIVERGENCES, forward_kl, generalized_jsd, reverse_kl, skew_kl, skew_reverse_kl,
                                   total_variation)


@pytest.fixture
def logits():
    gen = torch.Generator().manual_seed(0)
    shape = (3, 5, 7)  # batch, positions, vocabulary
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 2,
            torch.randn(shape, generator=gen, dtype=torch.float64) * 2)


def _np(z, t=1.0):
    return softmax(z.numpy() / t, axis=-1)


def _kl_np(a, b):
    return rel_entr(a, b).sum(-1)


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_zero_for_identical_logits_and_positive_otherwise(logits, name):
    z, v = logits
    assert DIVERGENCES[name](z, z.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert DIVERGENCES[name](z, v).item() > 0


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_kls_match_scipy_with_the_teacher_on_the_left_of_forward_kl(logits, t):
    z, v = logits
    p, q = _np(v, t), _np(z, t)  # p teacher, q student
    assert forward_kl(z, v, t).item() == pytest.approx(_kl_np(p, q).mean(), rel=1e-10)
    assert reverse_kl(z, v, t).item() == pytest.approx(_kl_np(q, p).mean(), rel=1e-10)
    assert forward_kl(z, v, t).item() != pytest.approx(reverse_kl(z, v, t).item(), rel=1e-3)


def test_jsd_half_matches_scipy_jensenshannon(logits):
    z, v = logits
    p, q = _np(v), _np(z)
    ref = (jensenshannon(p, q, axis=-1) ** 2).mean()  # scipy returns the square root, natural log
    assert generalized_jsd(z, v, beta=0.5).item() == pytest.approx(ref, rel=1e-10)


def test_jsd_closed_form_and_weighting_on_a_hand_made_pair():
    # p = (1, 0) teacher, q = (0, 1) student: M = (beta, 1 - beta)
    # JSD_beta = beta * log(1 / beta) + (1 - beta) * log(1 / (1 - beta)), the binary entropy H(beta).
    big = 50.0
    v = torch.tensor([[big, -big]], dtype=torch.float64)
    z = torch.tensor([[-big, big]], dtype=torch.float64)
    for beta in (0.1, 0.5, 0.9):
        entropy = -(beta * math.log(beta) + (1 - beta) * math.log(1 - beta))
        assert generalized_jsd(z, v, beta=beta).item() == pytest.approx(entropy, rel=1e-6)
    # An asymmetric pair pins down which weight goes with which KL.
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.2, 0.3, 0.5])
    z, v = torch.tensor(np.log(q))[None], torch.tensor(np.log(p))[None]
    beta = 0.3
    m = beta * p + (1 - beta) * q
    expected = beta * _kl_np(p, m) + (1 - beta) * _kl_np(q, m)
    assert generalized_jsd(z, v, beta=beta).item() == pytest.approx(expected, rel=1e-12)
    swapped = beta * _kl_np(q, beta * q + (1 - beta) * p) + (1 - beta) * _kl_np(p, beta * q + (1 - beta) * p)
    assert generalized_jsd(z, v, beta=beta).item() != pytest.approx(swapped, rel=1e-3)


def test_jsd_endpoints_are_forward_and_reverse_kl_and_the_limits_of_the_rescaled_jsd(logits):
    z, v = logits
    assert generalized_jsd(z, v, beta=0.0).item() == pytest.approx(forward_kl(z, v).item(), rel=1e-12)
    assert generalized_jsd(z, v, beta=1.0).item() == pytest.approx(reverse_kl(z, v).item(), rel=1e-12)
    eps = 1e-6
    assert generalized_jsd(z, v, beta=eps).item() / eps == pytest.approx(forward_kl(z, v).item(), rel=1e-4)
    assert generalized_jsd(z, v, beta=1 - eps).item() / eps == pytest.approx(reverse_kl(z, v).item(), rel=1e-4)


def test_total_variation_closed_form():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.2, 0.3, 0.5])
    z, v = torch.tensor(np.log(q))[None], torch.tensor(np.log(np.maximum(p, 1e-300)))[None]
    assert total_variation(z, v).item() == pytest.approx(0.5, rel=1e-9)  # (0.3 + 0.2 + 0.5) / 2


def test_skew_divergences_match_their_definitions(logits):
    z, v = logits
    p, q = _np(v), _np(z)
    a = 0.2
    assert skew_kl(z, v, alpha=a).item() == pytest.approx(_kl_np(p, a * p + (1 - a) * q).mean(), rel=1e-10)
    assert skew_reverse_kl(z, v, alpha=a).item() == pytest.approx(_kl_np(q, (1 - a) * p + a * q).mean(), rel=1e-10)
    assert skew_kl(z, v, alpha=0.0).item() == pytest.approx(forward_kl(z, v).item(), rel=1e-12)
    assert skew_reverse_kl(z, v, alpha=0.0).item() == pytest.approx(reverse_kl(z, v).item(), rel=1e-12)


def test_mask_averages_only_real_tokens(logits):
    z, v = logits
    mask = torch.zeros(z.shape[:-1])
    mask[0, :2] = 1
    mask[2, 4] = 1
    for name, fn in DIVERGENCES.items():
        per_token = torch.stack([fn(z[b, t], v[b, t]) for b, t in [(0, 0), (0, 1), (2, 4)]])
        assert fn(z, v, mask=mask).item() == pytest.approx(per_token.mean().item(), rel=1e-10), name
    with pytest.raises(ValueError, match="no position"):
        forward_kl(z, v, mask=torch.zeros(z.shape[:-1]))
    with pytest.raises(ValueError, match="mask shape"):
        forward_kl(z, v, mask=torch.ones(3, 4))


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_teacher_gets_no_gradient_and_student_gradient_vanishes_at_the_teacher(logits, name):
    z, v = (t.clone().requires_grad_(True) for t in logits)
    DIVERGENCES[name](z, v).backward()
    assert v.grad is None and z.grad is not None
    same = logits[1].clone().requires_grad_(True)
    if name != "total_variation":  # |.| has no gradient at 0
        DIVERGENCES[name](same, logits[1]).backward()
        assert same.grad.abs().max().item() < 1e-12


def test_bad_arguments_are_named(logits):
    z, v = logits
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(z, v, beta=1.5)
    with pytest.raises(ValueError, match="alpha"):
        skew_kl(z, v, alpha=1.0)
    with pytest.raises(ValueError, match="temperature"):
        reverse_kl(z, v, temperature=-1.0)
