"""The voxel3d test bed and renderer, and the score-distillation gradients of part H."""

import math

import pytest
import torch

from distillbook.methods import score_distillation as sd
from distillbook.testbeds import voxel3d as v


def test_renderer_gradients_match_finite_differences():
    torch.manual_seed(0)
    grid = v.VoxelGrid(4).double()
    with torch.no_grad():
        grid.density.normal_(0, 1)
        grid.colour.normal_(0, 1)
    cams = v.Cameras(torch.tensor([0.3, 2.0]), torch.tensor([0.2, 0.4]))
    weights = torch.randn(2, 3, 6, 6, dtype=torch.float64)

    def loss():
        return (grid.render(cams, 6, n_samples=16) * weights).sum()

    grid.zero_grad()
    loss().backward()
    for param in (grid.density, grid.colour):
        for index in [(0, 0, 1, 2, 1), (0, 0, 2, 1, 2), (0, 0, 3, 3, 0)]:
            with torch.no_grad():
                param[index] += 1e-6
                up = loss()
                param[index] -= 2e-6
                down = loss()
                param[index] += 1e-6
            assert param.grad[index].item() == pytest.approx(((up - down) / 2e-6).item(), rel=1e-4, abs=1e-8)


def test_empty_and_voxelised_scenes():
    cams = v.turntable(4)
    empty = v.VoxelGrid(8, init_density=-30.0)
    with torch.no_grad():
        assert torch.allclose(empty.render(cams, 8), torch.ones(4, 3, 8, 8), atol=1e-4)  # the white background
    field = v.scene_field("head", "yellow")
    truth = v.render_field(field, cams, 24)
    grid = v.VoxelGrid(24)
    grid.fit_field(field)
    with torch.no_grad():
        psnr = 10 * math.log10(1 / ((grid.render(cams, 24) - truth) ** 2).mean().item())
    assert psnr > 20


def test_the_front_is_plus_x_and_cameras_are_front_biased():
    field = v.scene_field("red-front-cube", "blue")
    front, back = v.render_field(field, v.Cameras(torch.tensor([0.0, math.pi]), torch.zeros(2)), 16)

    def red(img):
        return ((img[0] > 0.7) & (img[2] < 0.3)).float().mean()

    assert red(front) > 0.2 and red(back) == 0
    cams = v.orbit(4000, torch.Generator().manual_seed(0), front_share=0.5)
    within = (cams.azimuth.abs() <= math.pi / 4).float().mean().item()
    assert within == pytest.approx(0.5 + 0.5 * 0.25, abs=0.03)  # 50% forced front + a quarter of the rest
    with pytest.raises(ValueError, match="scene"):
        v.scene_field("torus")


def test_finite_set_denoiser_is_tweedie():
    """E[x0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha for x0 uniform over a finite set."""
    images = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    x_t = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([0.9, 0.6, 0.3, 0.1], dtype=torch.float64)
    sigma = (1 - alpha ** 2).sqrt()
    flat = images.reshape(5, -1)
    sq = ((x_t.reshape(4, 1, -1) - alpha[:, None, None] * flat[None]) ** 2).sum(-1)
    log_p = torch.logsumexp(-sq / (2 * sigma[:, None] ** 2), dim=1)
    (score,) = torch.autograd.grad(log_p.sum(), x_t)
    tweedie = (x_t + sigma.reshape(-1, 1, 1, 1) ** 2 * score) / alpha.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(sd.finite_set_x0(x_t.detach(), alpha, sigma, images), tweedie.detach())


def test_score_distillation_identities():
    gen = torch.Generator().manual_seed(1)

    def e():
        return torch.randn(3, 3, 4, 4, generator=gen)

    eps_u, eps_c, noise, fake_u, fake_c = e(), e(), e(), e(), e()
    w = 0.7
    # VSD with the injected noise as the fake score is SDS; ESD at lambda = 1 is VSD
    torch.testing.assert_close(sd.vsd(sd.cfg(eps_u, eps_c, 7.5), noise, w), sd.sds(sd.cfg(eps_u, eps_c, 7.5), noise, w))
    torch.testing.assert_close(sd.esd_fake(fake_u, fake_c, 1.0), fake_c)
    # ASD with no time shift is the classifier score (CSD)
    torch.testing.assert_close(sd.asd(sd.cfg(eps_u, eps_c, 7.5), eps_c, w), sd.csd(eps_u, eps_c, 7.5, w))
    # the surrogate's gradient is g / n
    x = torch.randn(3, 3, 4, 4, requires_grad=True)
    g = e()
    (grad,) = torch.autograd.grad(sd.surrogate(x, g), x)
    torch.testing.assert_close(grad, g / 3)


def test_bsd_takes_the_min_norm_point():
    gen = torch.Generator().manual_seed(2)
    c, d = torch.randn(6, 5, generator=gen, dtype=torch.float64), torch.randn(6, 5, generator=gen, dtype=torch.float64)
    d[0] = 3 * c[0]  # a case where the clip at a = 1 binds
    g, a = sd.bsd(c, d)
    grid = torch.linspace(0, 1, 100001, dtype=torch.float64)
    for i in range(6):
        norms = ((grid[:, None] * c[i] + (1 - grid[:, None]) * d[i]) ** 2).sum(1)
        assert a[i].item() == pytest.approx(grid[norms.argmin()].item(), abs=2e-5)
        torch.testing.assert_close(g[i], a[i] * c[i] + (1 - a[i]) * d[i])
    assert a[0].item() == 1.0


def test_consistency_step_is_a_ddim_step_and_cds_reduces_without_rescaling():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                          set_alpha_to_one=False)
    sched.set_timesteps(10)  # leading spacing: 900, 800, ..., 0; a step from 500 lands on 400
    t, t_next = 500, 400
    abar, abar_next = sched.alphas_cumprod[t].double(), sched.alphas_cumprod[t_next].double()
    x_t, eps = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    ddim = sched.step(eps, t, x_t, eta=0.0).prev_sample
    sigma, sigma_next = ((1 - abar) / abar).sqrt(), ((1 - abar_next) / abar_next).sqrt()
    z_next = sd.euler_step(x_t / abar.sqrt(), eps, sigma, sigma_next)
    torch.testing.assert_close(z_next * abar_next.sqrt(), ddim)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(sd.cds(a, b, sigma.float(), sigma_next.float()), a - b)
    # with std rescaling, eps_hat = eps_cfg + r: g = (sigma/sigma') (-r) + (a + r - b)
    r = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(sd.cds(a, b, sigma.float(), sigma_next.float(), a + r),
                               (sigma / sigma_next).float() * (-r) + (a + r - b))


def _grid_sample_query(raw_density, raw_colour, points):
    """The renderer's lookup as it was, with F.grid_sample (no deterministic CUDA backward): the reference."""
    import torch.nn.functional as F
    shape = points.shape[:-1]
    grid = points.reshape(1, 1, 1, -1, 3).to(raw_density.dtype)
    density = F.grid_sample(raw_density, grid, align_corners=True).reshape(shape)
    colour = F.grid_sample(raw_colour, grid, align_corners=True, padding_mode="border").reshape(3, -1).T
    inside = (points.abs() <= 1).all(-1)
    return F.softplus(density) * v.OPAQUE / 4 * inside, torch.sigmoid(colour).reshape(*shape, 3)


def test_gathered_trilinear_lookup_matches_grid_sample_in_value_and_gradient():
    """The deterministic lookup (index gathers) equals F.grid_sample, inside the cube, on its faces and corners,
    and outside it (zero density, border colour), and so do the gradients with respect to the grid."""
    gen = torch.Generator().manual_seed(0)
    raw_density = torch.randn(1, 1, 5, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    raw_colour = torch.randn(1, 3, 5, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    points = torch.cat([torch.rand(200, 3, generator=gen, dtype=torch.float64) * 2.6 - 1.3,
                        torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, -0.3, 0.2], [0.0, 0.0, 0.0]],
                                     dtype=torch.float64)]).reshape(2, 102, 3)
    ours, reference = v.query_grid(raw_density, raw_colour, points), _grid_sample_query(raw_density, raw_colour, points)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)
    weights = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in ours]
    grads = [torch.autograd.grad(sum((w * x).sum() for w, x in zip(weights, out)), (raw_density, raw_colour))
             for out in (v.query_grid(raw_density, raw_colour, points),
                         _grid_sample_query(raw_density, raw_colour, points))]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_transmittance_as_a_triangular_product_matches_the_cumulative_product():
    gen = torch.Generator().manual_seed(1)
    density = torch.rand(3, 4, 16, generator=gen, dtype=torch.float64) * 30
    rgb = torch.rand(3, 4, 16, 3, generator=gen, dtype=torch.float64)
    delta = 0.1
    alpha = 1 - torch.exp(-density * delta)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], -1), -1)
    weights = transmittance * alpha
    expected = (weights[..., None] * rgb).sum(-2) + (1 - weights.sum(-1, keepdim=True)) * 0.5
    torch.testing.assert_close(v._composite(density, rgb, delta, 0.5), expected)


def test_trilinear_rejects_what_it_cannot_interpolate():
    with pytest.raises(ValueError, match="every side >= 2"):
        v.trilinear(torch.zeros(1, 1, 4, 4), torch.zeros(5, 3))
