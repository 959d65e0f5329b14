"""The generator losses of DMD2, VSD/SDS, SiD and SIM against closed forms on Gaussians and one another.

The Gaussian test bed: a 1-D generator x = mu + s z against the teacher's N(0, 1), both diffused at one
timestep (alpha, sigma). Every score is linear and known, so each loss's expected gradient with respect to
(mu, s) can be compared with the gradient of an analytic divergence.
"""

import pytest
import torch
import torch.nn.functional as F

from distillbook.methods import distribution_matching as dm
from distillbook.methods import score_distillation as sd

ALPHA, SIGMA = 0.8, 0.6
N = 1_000_000


def _gaussian_case(mu0, s0, seed=0):
    """Generator parameters, its sample x, the noise, and exact eps-predictions carrying gradients to x_t.
    The fake score is the generator's own diffused score with its parameters detached."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.tensor(mu0, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
    z, eps = (torch.randn(N, 1, generator=gen, dtype=torch.float64) for _ in range(2))
    x = mu + s * z
    x_t = ALPHA * x + SIGMA * eps
    mean_q, var_q = (ALPHA * mu).detach(), (ALPHA ** 2 * s ** 2 + SIGMA ** 2).detach()
    eps_real = SIGMA * x_t / 1.0                  # teacher p_t = N(0, alpha^2 + sigma^2) = N(0, 1)
    eps_fake = SIGMA * (x_t - mean_q) / var_q     # q_t = N(alpha mu, alpha^2 s^2 + sigma^2)
    return mu, s, x, x_t, eps, eps_real, eps_fake


def _x0(x_t, eps):
    return (x_t - SIGMA * eps) / ALPHA


def _analytic(mu0, s0, divergence):
    mu = torch.tensor(mu0, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
    m, v = ALPHA * mu, ALPHA ** 2 * s ** 2 + SIGMA ** 2
    value = divergence(m, v, m.detach(), v.detach())
    return [g.item() for g in torch.autograd.grad(value, [mu, s])]


def _kl(m, v, m0, v0):
    """KL(N(m, v) || N(0, 1))."""
    return 0.5 * (v + m ** 2 - 1 - torch.log(v))


def _fisher(m, v, m0, v0):
    """sigma^2 E_{q_t} (s_q - s_p)^2 / 2, the sampling distribution moving with the generator."""
    return 0.5 * SIGMA ** 2 * (m ** 2 + (1 - 1 / v) ** 2 * v)


def _fisher_frozen_sampling(m, v, m0, v0):
    """The same divergence with x_t drawn from the current generator held fixed (SIM's D)."""
    slope = 1 - 1 / v
    second_moment = v0 + m0 ** 2
    return 0.5 * SIGMA ** 2 * (slope ** 2 * second_moment + 2 * slope * (m / v) * m0 + (m / v) ** 2)


CASES = [(0.7, 1.3), (-0.4, 0.6)]


@pytest.mark.parametrize("mu0,s0", CASES)
def test_dmd_direction_is_the_reverse_kl_gradient(mu0, s0):
    """Unnormalised, dmd_loss's x-gradient is (sigma^2 / alpha^2) grad KL(q_t || p_t)."""
    mu, s, x, x_t, eps, eps_real, eps_fake = _gaussian_case(mu0, s0)
    x_leaf = x.detach().requires_grad_(True)
    x0_real, x0_fake = _x0(x_t, eps_real).detach(), _x0(x_t, eps_fake).detach()
    (g,) = torch.autograd.grad(dm.dmd_loss(x_leaf, x0_real, x0_fake), x_leaf)
    g = g * len(x) * (x_leaf - x0_real).abs().detach()  # undo the batch mean and DMD2's per-sample normaliser
    surrogate = (g * x).sum(1).mean()
    measured = [v.item() for v in torch.autograd.grad(surrogate, [mu, s])]
    expected = [SIGMA ** 2 / ALPHA ** 2 * v for v in _analytic(mu0, s0, _kl)]
    assert measured == pytest.approx(expected, rel=0.02, abs=2e-3)


def test_dmd_loss_gradient_is_the_normalised_difference():
    x = torch.randn(16, 6, requires_grad=True)
    x0_real, x0_fake = torch.randn(16, 6), torch.randn(16, 6)
    (grad,) = torch.autograd.grad(dm.dmd_loss(x, x0_real, x0_fake), x)
    normaliser = (x - x0_real).abs().mean(dim=1, keepdim=True).detach()
    torch.testing.assert_close(grad, (x0_fake - x0_real) / normaliser / len(x))


def _fisher_frozen_score(m, v, m0, v0):
    """sigma^2 E_{q_t} (s_q0 - s_p)^2 / 2 with the fake score held at the current generator (m0, v0) and the
    sampling distribution moving: the part of the Fisher divergence that flows through x_t alone."""
    slope = 1 - 1 / v0
    return 0.5 * SIGMA ** 2 * ((slope * m + m0 / v0) ** 2 + slope ** 2 * v)


def _sid_gradient(mu, s, x, y_r, y_f, alpha, loss=None):
    """sid_loss's (or ``loss``'s) gradient in (mu, s), its per-sample weight sg(mean_d |x - y_r|) undone: the chain
    rule through the loss's three inputs, each input's per-sample gradient multiplied back by that sample's weight."""
    leaves = [t.detach().requires_grad_(True) for t in (x, y_r, y_f)]
    value = dm.sid_loss(*leaves, alpha=alpha) if loss is None else loss(*leaves)
    grads = torch.autograd.grad(value, leaves)
    weight = (x - y_r).abs().mean(1, keepdim=True).detach()
    surrogate = sum((g * weight * t).sum() for g, t in zip(grads, (x, y_r, y_f)))
    return [v.item() for v in torch.autograd.grad(surrogate, [mu, s], retain_graph=True)]


@pytest.mark.parametrize("mu0,s0", CASES)
def test_sid_at_half_is_the_full_fisher_gradient(mu0, s0):
    """SiD's alpha = 1/2, its weight taken out, is the gradient of F = sigma^2 E_q ||s_q - s_p||^2 / 2 (times
    alpha_t^2 / sigma^2 in x0 units). Each unit of alpha above 1/2 subtracts twice the gradient of H, the same
    divergence with the fake score frozen (the path through x_t only): grad F + (1 - 2 alpha) grad H, which at
    alpha = 1 is SIM's frozen-sampling gradient."""
    mu, s, x, x_t, eps, eps_real, eps_fake = _gaussian_case(mu0, s0)
    y_r, y_f = _x0(x_t, eps_real), _x0(x_t, eps_fake)
    full, frozen_score = _analytic(mu0, s0, _fisher), _analytic(mu0, s0, _fisher_frozen_score)
    assert [f - h for f, h in zip(full, frozen_score)] == pytest.approx(_analytic(mu0, s0, _fisher_frozen_sampling))
    for alpha in (0.5, 1.2):
        measured = [ALPHA ** 2 / SIGMA ** 2 * v for v in _sid_gradient(mu, s, x, y_r, y_f, alpha)]
        expected = [f + (1 - 2 * alpha) * h for f, h in zip(full, frozen_score)]
        assert measured == pytest.approx(expected, rel=0.02, abs=2e-3), alpha


@pytest.mark.parametrize("mu0,s0", CASES)
def test_sim_l2_gradient_is_the_score_divergence_gradient(mu0, s0):
    """SIM with d = ||.||^2 / 2, its weight undone and in score units (alpha_t^2 / sigma^2), is the gradient of its
    divergence with the sampling distribution frozen."""
    mu, s, x, x_t, eps, eps_real, eps_fake = _gaussian_case(mu0, s0)
    y_r, y_f = _x0(x_t, eps_real), _x0(x_t, eps_fake)
    measured = [ALPHA ** 2 / SIGMA ** 2 * v
                for v in _sid_gradient(mu, s, x, y_r, y_f, None, loss=lambda *a: dm.sim_loss(*a, c=None))]
    assert measured == pytest.approx(_analytic(mu0, s0, _fisher_frozen_sampling), rel=0.02, abs=2e-3)


def _nets():
    torch.manual_seed(1)
    real = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()
    fake = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()
    for net in (real, fake):
        net.requires_grad_(False)
    return real, fake


def _diffused_batch():
    """A leaf theta, the generator output x = theta (through an op, so not a leaf), its x_t and noise."""
    theta = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(8, 4, dtype=torch.float64)
    x = theta * 1.0
    return theta, x, ALPHA * x + SIGMA * eps, eps


def test_sim_l2_is_sid_at_alpha_one():
    """With d = ||.||^2 / 2, SIM's loss is SiD's at alpha = 1: same value, same gradients."""
    real, fake = _nets()
    theta, x, x_t, eps = _diffused_batch()
    y_r, y_f = _x0(x_t, real(x_t)), _x0(x_t, fake(x_t))
    sim, sid = dm.sim_loss(x, y_r, y_f, c=None), dm.sid_loss(x, y_r, y_f, alpha=1.0)
    torch.testing.assert_close(sim, sid)
    torch.testing.assert_close(torch.autograd.grad(sim, theta, retain_graph=True)[0],
                               torch.autograd.grad(sid, theta, retain_graph=True)[0])


def test_sid_alpha_subtracts_the_squared_disagreement():
    """SiD(alpha) = SiD(1) + (1 - alpha) mean(||y_r - y_f||^2 / w), exactly, gradients included."""
    real, fake = _nets()
    theta, x, x_t, eps = _diffused_batch()
    y_r, y_f = _x0(x_t, real(x_t)), _x0(x_t, fake(x_t))
    weight = (x - y_r).abs().mean(1).detach()
    for alpha in (0.5, 1.2):
        extra = (1 - alpha) * (((y_r - y_f) ** 2).sum(1) / weight).mean()
        lhs = dm.sid_loss(x, y_r, y_f, alpha=alpha)
        rhs = dm.sid_loss(x, y_r, y_f, alpha=1.0) + extra
        torch.testing.assert_close(lhs, rhs)
        torch.testing.assert_close(torch.autograd.grad(lhs, theta, retain_graph=True)[0],
                                   torch.autograd.grad(rhs, theta, retain_graph=True)[0])


def test_defaults_are_the_reference_settings():
    """SiD's alpha defaults to 1.2 (the reference training loop's), SIM's pseudo-Huber c to 1e-3 (x0 units)."""
    real, fake = _nets()
    theta, x, x_t, eps = _diffused_batch()
    y_r, y_f = _x0(x_t, real(x_t)), _x0(x_t, fake(x_t))
    torch.testing.assert_close(dm.sid_loss(x, y_r, y_f), dm.sid_loss(x, y_r, y_f, alpha=1.2))
    assert not torch.allclose(dm.sid_loss(x, y_r, y_f), dm.sid_loss(x, y_r, y_f, alpha=1.0))
    torch.testing.assert_close(dm.sim_loss(x, y_r, y_f), dm.sim_loss(x, y_r, y_f, c=1e-3))
    assert not torch.allclose(dm.sim_loss(x, y_r, y_f), dm.sim_loss(x, y_r, y_f, c=1.0))


def test_pseudo_huber_limit_is_l2():
    real, fake = _nets()
    theta, x, x_t, eps = _diffused_batch()
    y_r, y_f = _x0(x_t, real(x_t)), _x0(x_t, fake(x_t))

    def grad(c):
        loss = dm.sim_loss(x, y_r, y_f, c=c) * (1.0 if c is None else c)
        return torch.autograd.grad(loss, theta, retain_graph=True)[0]

    torch.testing.assert_close(grad(1e6), grad(None), rtol=1e-6, atol=1e-9)
    assert not torch.allclose(grad(0.1), grad(None))


def test_pseudo_huber_derivative_is_the_gradient_of_the_distance():
    u = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    c = 0.7
    distance = (torch.sqrt((u ** 2).sum(1) + c ** 2) - c).sum()
    (expected,) = torch.autograd.grad(distance, u)
    torch.testing.assert_close(dm.pseudo_huber_derivative(u.detach(), c), expected)
    with pytest.raises(ValueError, match="c must be > 0"):
        dm.pseudo_huber_derivative(u, 0.0)


def test_every_loss_is_flat_when_the_fake_score_equals_the_real_one():
    real, _ = _nets()
    theta, x, x_t, eps = _diffused_batch()
    e = real(x_t)
    losses = {"dmd": dm.dmd_loss(x, _x0(x_t, e).detach(), _x0(x_t, e).detach()),
              "vsd": sd.surrogate(x, sd.vsd(e.detach(), e.detach(), SIGMA ** 2)),
              "sid": dm.sid_loss(x, _x0(x_t, e), _x0(x_t, e), alpha=1.2),
              "sim": dm.sim_loss(x, _x0(x_t, e), _x0(x_t, e), c=1e-3)}
    for name, loss in losses.items():
        (g,) = torch.autograd.grad(loss, theta, retain_graph=True)
        assert torch.count_nonzero(g) == 0, name


def test_vsd_gradient_and_its_sds_ablation():
    x = torch.randn(8, 3, requires_grad=True)
    eps_real, eps_fake, noise = torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 3)
    w = torch.rand(8, 1)
    (g,) = torch.autograd.grad(sd.surrogate(x, sd.vsd(eps_real, eps_fake, w)), x)
    torch.testing.assert_close(g, w * (eps_real - eps_fake) / len(x))
    (g_sds,) = torch.autograd.grad(sd.surrogate(x, sd.vsd(eps_real, noise, w)), x)
    torch.testing.assert_close(g_sds, w * (eps_real - noise) / len(x))


def test_gan_losses_match_binary_cross_entropy():
    real, fake = torch.randn(32, 1), torch.randn(32, 1)
    bce = F.binary_cross_entropy_with_logits
    torch.testing.assert_close(dm.gan_discriminator_loss(real, fake),
                               bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
    torch.testing.assert_close(dm.gan_generator_loss(fake), bce(fake, torch.ones_like(fake)))


def test_denoising_loss_sums_dimensions_and_averages_the_batch():
    pred, target = torch.randn(10, 7), torch.randn(10, 7)
    torch.testing.assert_close(dm.denoising_loss(pred, target), F.mse_loss(pred, target, reduction="sum") / 10)
