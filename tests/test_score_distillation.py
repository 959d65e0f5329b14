"""CSD and ASD (methods/score_distillation.py) against closed forms on a Gaussian prior whose noise predictions are
known exactly, with the sign each paper gives: descending the gradient must move the render the way the paper says.

The prior: two classes y in {0, 1}, x0 | y ~ N(mu_y, tau^2 I), equally likely; the unconditional prior is their
mixture. Diffused at a VP level (a, sigma), a^2 + sigma^2 = 1: x_t | y ~ N(a mu_y, v I), v = a^2 tau^2 + sigma^2, so

    eps_y(x_t) = sigma (x_t - a mu_y) / v,    eps_0(x_t) = sum_k pi_k(x_t) eps_k(x_t),

with pi_k(x_t) = p_t(y = k | x_t), the exact (logistic) classifier, and the classifier score
grad log p_t(y | x_t) = -(eps_y - eps_0) / sigma = (1 - pi_y) a (mu_y - mu_other) / v.

On small network priors: CSM's DDIM inversion against the closed-form step, VSD's fixed point with exact scores,
and the loss (surrogate plus the fake score's fit) a training loop descends.
"""

import math

import pytest
import torch

from distillbook.methods import score_distillation as sd
from distillbook.methods.diffusion import Schedule
from distillbook.models.denoiser import MLPDenoiser

TAU = 0.5
MU = torch.tensor([[1.0, -0.5, 0.0, 0.5], [-1.0, 0.5, 0.5, 0.0]], dtype=torch.float64)  # mu_0, mu_1
D = MU.shape[1]


def _level(a):
    sigma = math.sqrt(1 - a ** 2)
    return a, sigma, a ** 2 * TAU ** 2 + sigma ** 2


def _posterior(x_t, a, v):
    """pi_k(x_t) for both classes, (n, 2): a softmax of the class log-densities (equal priors)."""
    log_density = -((x_t[:, None, :] - a * MU[None]) ** 2).sum(-1) / (2 * v)
    return torch.softmax(log_density, dim=1)


def _eps(x_t, a, y=None):
    """The exact noise prediction at level a: conditional on y, or unconditional (y None)."""
    a, sigma, v = _level(a)
    per_class = sigma * (x_t[:, None, :] - a * MU[None]) / v  # (n, 2, D)
    if y is not None:
        return per_class[:, y]
    return (_posterior(x_t, a, v)[:, :, None] * per_class).sum(1)


def _log_classifier(x_t, a, y):
    a, _, v = _level(a)
    return _posterior(x_t, a, v)[:, y].log()


def test_csd_is_the_scaled_negative_classifier_score():
    """CSD's g = w (s - 1) (eps_y - eps_0) = -w (s - 1) sigma grad log p_t(y | x_t), the closed form of the
    logistic classifier: -w (s - 1) sigma (1 - pi_y) a (mu_y - mu_other) / v, value and sign."""
    gen = torch.Generator().manual_seed(0)
    a, sigma, v = _level(0.8)
    x_t = torch.randn(64, D, generator=gen, dtype=torch.float64)
    y, other, s, w = 1, 0, 7.5, 0.36
    g = sd.csd(_eps(x_t, a), _eps(x_t, a, y), s, w)
    pi_y = _posterior(x_t, a, v)[:, y:y + 1]
    closed_form = -w * (s - 1) * sigma * (1 - pi_y) * a * (MU[y] - MU[other]) / v
    torch.testing.assert_close(g, closed_form)
    # the same through autograd of log p_t(y | x_t)
    x_leaf = x_t.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(_log_classifier(x_leaf, a, y).sum(), x_leaf)
    torch.testing.assert_close(g, -w * (s - 1) * sigma * score)
    # no guidance, no classifier score
    assert sd.csd(_eps(x_t, a), _eps(x_t, a, y), 1.0, w).abs().max().item() == 0


def test_descending_csd_raises_the_implicit_classifier_probability():
    """Classifier score distillation pushes the render toward the prompt's class: descending the surrogate built
    from g raises log p_t(y | x_t), to first order by lr w (s - 1) sigma ||grad log p_t(y | x_t)||^2, and over
    steps on a render with fresh noise moves it along mu_y - mu_other."""
    gen = torch.Generator().manual_seed(1)
    a, sigma, _ = _level(0.8)
    y, s, w = 1, 7.5, sigma ** 2
    x_t = torch.randn(32, D, generator=gen, dtype=torch.float64)
    g = sd.csd(_eps(x_t, a), _eps(x_t, a, y), s, w)
    x_leaf = x_t.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(_log_classifier(x_leaf, a, y).sum(), x_leaf)
    lr = 1e-4
    change = _log_classifier(x_t - lr * g, a, y) - _log_classifier(x_t, a, y)
    torch.testing.assert_close(change, lr * w * (s - 1) * sigma * (score ** 2).sum(1), rtol=1e-3, atol=1e-12)
    assert (change > 0).all()

    x = torch.zeros(16, D, dtype=torch.float64, requires_grad=True)  # renders halfway between the classes
    opt = torch.optim.SGD([x], lr=0.5)
    direction = (MU[y] - MU[1 - y]) / (MU[y] - MU[1 - y]).norm()
    before = _log_classifier(a * x.detach(), a, y).mean()
    for _ in range(20):
        noise = torch.randn(16, D, generator=gen, dtype=torch.float64)
        x_t = a * x.detach() + sigma * noise
        opt.zero_grad()
        sd.surrogate(x, sd.csd(_eps(x_t, a), _eps(x_t, a, y), s, w)).backward()
        opt.step()
    assert (x.detach() @ direction > 0.5).all()
    assert _log_classifier(a * x.detach(), a, y).mean() > before + 0.5


def test_asd_expected_gradient_is_the_snr_difference_and_descends_to_the_class_mean():
    """ASD: g = w (eps_cfg(x_t, t) - eps_y(x_t', t')), x_t = a x + sigma eps and x_t' = a' x + sigma' eps with the
    same eps and t' later (lower SNR). At s = 1 it is affine in eps, so the mean over eps and -eps is exact:

        E g = w (c_t - c_t') (x - mu_y),   c = sigma a / v,

    positive here (c_t > c_t'), so descending it pulls the render to the class mean; with guidance, the CSD term
    is added on top: E g = w (c_t - c_t') (x - mu_y) + E csd."""
    gen = torch.Generator().manual_seed(2)
    (a, sigma, v), (a2, sigma2, v2) = _level(0.8), _level(0.6)
    c, c2 = sigma * a / v, sigma2 * a2 / v2
    assert c - c2 > 0.2
    y, w = 0, 0.36
    x = torch.randn(8, D, generator=gen, dtype=torch.float64)
    half = torch.randn(8, D, generator=gen, dtype=torch.float64)
    x2, noise = torch.cat([x, x]), torch.cat([half, -half])  # antithetic pairs
    x_t, x_shift = a * x2 + sigma * noise, a2 * x2 + sigma2 * noise
    for s in (1.0, 5.0):
        eps_cfg = sd.cfg(_eps(x_t, a), _eps(x_t, a, y), s)
        g = sd.asd(eps_cfg, _eps(x_shift, a2, y), w)
        mean = 0.5 * (g[:8] + g[8:])
        csd_mean = 0.5 * sum(sd.csd(_eps(x_t, a), _eps(x_t, a, y), s, w).chunk(2))
        torch.testing.assert_close(mean, w * (c - c2) * (x - MU[y]) + csd_mean)
    # descending the surrogate with fresh noise each step (s = 1) brings renders to mu_y
    x = (3 * torch.randn(16, D, generator=gen, dtype=torch.float64)).requires_grad_(True)
    start = (x.detach() - MU[y]).norm(dim=1)
    opt = torch.optim.SGD([x], lr=16 * 1.0)  # the surrogate averages over the 16 renders: a step of g per render
    for _ in range(80):
        noise = torch.randn(16, D, generator=gen, dtype=torch.float64)
        x_t, x_shift = a * x.detach() + sigma * noise, a2 * x.detach() + sigma2 * noise
        opt.zero_grad()
        sd.surrogate(x, sd.asd(_eps(x_t, a, y), _eps(x_shift, a2, y), w)).backward()
        opt.step()
    end = (x.detach() - MU[y]).norm(dim=1)
    assert end.mean() < 0.2 * start.mean(), (start, end)  # the noise leaves a spread of about 0.3


def test_bsd_clips_at_zero_and_does_not_depend_on_the_scale():
    """BSD's mix a = clip(<d - c, d> / ||d - c||^2, 0, 1): where the unclipped value is negative (c = 3 d here, so
    the segment's min-norm point is its end d) a = 0 and g = d; and a is the same for (c, d) and a tiny (k c, k d),
    the min-norm point being scale-free."""
    gen = torch.Generator().manual_seed(4)
    c, d = torch.randn(5, D, generator=gen, dtype=torch.float64), torch.randn(5, D, generator=gen, dtype=torch.float64)
    c[0] = 3 * d[0]
    g, a = sd.bsd(c, d)
    assert a[0].item() == 0 and torch.equal(g[0], d[0])
    unclipped = ((d - c) * d).sum(1) / ((d - c) ** 2).sum(1)
    torch.testing.assert_close(a, unclipped.clamp(0, 1))
    for k in (1e-3, 10.0):
        g_k, a_k = sd.bsd(k * c, k * d)
        torch.testing.assert_close(a_k, a)
        torch.testing.assert_close(g_k, k * g)


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
def test_esd_fake_interpolates_the_camera_guidance(lam):
    """ESD's fake score eps_phi(0) + lambda (eps_phi(c) - eps_phi(0)): lambda = 0 is the camera-free score."""
    gen = torch.Generator().manual_seed(3)
    free, camera = torch.randn(4, D, generator=gen), torch.randn(4, D, generator=gen)
    torch.testing.assert_close(sd.esd_fake(free, camera, lam), (1 - lam) * free + lam * camera)


# ---------------------------------------------------------------- on a network prior


def test_ddim_inversion_is_the_closed_form_deterministic_step():
    """diffusers' DDIMInverseScheduler, as used by CSM: x_t' = alpha_t' x0_hat + sigma_t' eps_hat from the
    prediction at the current level (the first step starts from the clean render)."""
    torch.manual_seed(0)
    schedule = Schedule()
    net = MLPDenoiser(12, [16], n_classes=2).requires_grad_(False)
    x0 = torch.randn(3, 12)
    lab = torch.zeros(3, dtype=torch.long)
    x_t, t = sd.ddim_invert(net, schedule, x0, lab, n_grid=10, k=3)
    assert t.tolist() == [200] * 3
    x = x0
    for now in (0, 100, 200):
        t_now = torch.full((3,), now, dtype=torch.long)
        out = net(x, t_now, None)
        # the scheduler treats x as lying one grid step below t_now (clean for the first step)
        below = max(now - 100, -1)
        abar = 1.0 if below < 0 else float(schedule.alphas_cumprod[below])
        alpha, sigma = math.sqrt(abar), math.sqrt(1 - abar)
        x0_hat, eps_hat = alpha * x - sigma * out, sigma * x + alpha * out  # v-prediction
        a_next = float(schedule.alphas_cumprod[now])
        x = math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps_hat
    torch.testing.assert_close(x_t, x)


def test_vsd_with_exact_scores_vanishes_at_the_prior_and_points_back_to_it():
    """ProlificDreamer's fixed point, with exact finite-set scores at CFG 1: when the particles' renders are the
    prior's images the fake score is the prior's and g = 0, whatever the noise (SDS is not 0). When they are the
    images shifted by u, the noise-averaged g points along u, so descending it moves the particles back."""
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(6, 12, generator=gen, dtype=torch.float64)
    alpha = torch.full((6,), 0.8, dtype=torch.float64)
    sigma = (1 - alpha ** 2).sqrt()

    def eps(x_t, pool):
        return (x_t - alpha[:, None] * sd.finite_set_x0(x_t, alpha, sigma, pool)) / sigma[:, None]

    noise = torch.randn(6, 12, generator=gen, dtype=torch.float64)
    x_t = alpha[:, None] * images + sigma[:, None] * noise
    real, fake = eps(x_t, images), eps(x_t, images[torch.randperm(6, generator=gen)])
    torch.testing.assert_close(sd.vsd(real, fake, 1.0), torch.zeros_like(images))
    assert sd.sds(real, noise, 1.0).abs().max() > 1e-3
    u = torch.randn(12, generator=gen, dtype=torch.float64)
    particles = images + 0.3 * u
    g = torch.zeros(6, 12, dtype=torch.float64)
    for _ in range(200):
        x_t = alpha[:, None] * particles + sigma[:, None] * torch.randn(6, 12, generator=gen, dtype=torch.float64)
        g += sd.vsd(eps(x_t, images), eps(x_t, particles), 1.0) / 200
    cosine = torch.nn.functional.cosine_similarity(g, u.expand_as(g), dim=1)
    assert (cosine > 0.5).all(), cosine


def test_the_loss_descends_g_and_fits_the_fake_score_on_detached_renders():
    """score_distillation_loss = surrogate(x, g) + fake_score_loss: its gradient in the renders is g / n (the fake
    score's fit sees them detached), and the fake score's parameters get exactly the fit's gradient. Labels the
    batch marks camera-free are replaced by the camera-free ones."""
    torch.manual_seed(0)
    schedule = Schedule()
    prior = MLPDenoiser(12, [16], n_classes=8).requires_grad_(False)
    fake = MLPDenoiser(12, [16], n_classes=8)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 12, generator=gen, requires_grad=True)
    lab, free = torch.tensor([0, 1, 2]), torch.tensor([3, 3, 3])
    batch = {"t": schedule.sample_timesteps(3, gen), "noise": torch.randn(3, 12, generator=gen),
             "t_fake": schedule.sample_timesteps(3, gen), "noise_fake": torch.randn(3, 12, generator=gen),
             "drop_camera": torch.tensor([True, False, True])}
    method = sd.Method("vsd", guidance=7.5, esd_lambda=0.5)
    loss, g = sd.score_distillation_loss(schedule, prior, method, x, lab, batch, fake=fake, fake_lab=lab,
                                         fake_free_lab=free)
    torch.testing.assert_close(g, sd.image_gradient(schedule, prior, method, x, lab, batch, fake=fake, fake_lab=lab,
                                                    fake_free_lab=free))
    loss.backward()
    torch.testing.assert_close(x.grad, g / 3)
    fit_grads = torch.autograd.grad(sd.fake_score_loss(schedule, fake, x, lab, free, batch), list(fake.parameters()))
    for param, expected in zip(fake.parameters(), fit_grads):
        torch.testing.assert_close(param.grad, expected)
    # the camera-free labels where drop_camera is set: the same loss as passing them directly
    mixed = torch.tensor([3, 1, 3])
    torch.testing.assert_close(sd.fake_score_loss(schedule, fake, x, lab, free, batch),
                               sd.fake_score_loss(schedule, fake, x, mixed, mixed, batch))
