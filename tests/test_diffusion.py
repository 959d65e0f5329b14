"""The schedule, prediction-type conversions and samplers against diffusers and analytic identities."""

import pytest
import torch

from distillbook.methods.diffusion import Schedule

torch.manual_seed(0)


@pytest.fixture(scope="module")
def schedule():
    return Schedule()


def test_add_noise_is_the_variance_preserving_formula(schedule):
    x0, eps = torch.randn(64, 5), torch.randn(64, 5)
    t = torch.randint(0, 1000, (64,))
    abar = schedule.scheduler.alphas_cumprod[t][:, None]
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    torch.testing.assert_close(schedule.add_noise(x0, eps, t), expected)
    alpha, sigma = schedule.coefficients(t)
    torch.testing.assert_close(alpha ** 2 + sigma ** 2, torch.ones_like(alpha))


@pytest.mark.parametrize("source", ["epsilon", "sample", "v_prediction"])
def test_conversions_recover_x0_eps_and_diffusers_velocity(schedule, source):
    x0, eps = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 4, dtype=torch.float64)
    t = torch.randint(0, 990, (32,))  # alpha_t -> 0 at T: x0 from eps divides by it
    x_t = schedule.add_noise(x0, eps, t)
    v = schedule.scheduler.get_velocity(x0, eps, t)  # diffusers' definition of v
    truth = {"epsilon": eps, "sample": x0, "v_prediction": v}
    for target in truth:
        torch.testing.assert_close(schedule.convert(truth[source], x_t, t, target, source=source), truth[target],
                                   rtol=1e-4, atol=1e-5)  # the schedule is float32


def test_one_ddim_step_returns_the_x0_prediction_at_T(schedule):
    net = lambda x, t: torch.sin(x) * (t[:, None] / 1000.0)  # noqa: E731  any deterministic v-prediction
    z = torch.randn(16, 3)
    t = torch.full((16,), 999, dtype=torch.long)
    expected = schedule.convert(net(z, t), z, t, "sample")
    torch.testing.assert_close(schedule.sample(net, z, steps=1, sampler="ddim"), expected)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpm"])
def test_exact_score_sampler_reproduces_a_gaussian(schedule, sampler):
    """Data N(0, s^2): the exact x0-prediction is alpha s^2 x_t / (alpha^2 s^2 + sigma^2); the deterministic
    samplers must map N(0, 1) noise to N(0, s^2)."""
    s = 0.5

    def exact(x, t):
        alpha, sigma = schedule.coefficients(t, x.ndim)
        x0 = alpha * s ** 2 * x / (alpha ** 2 * s ** 2 + sigma ** 2)
        return schedule.convert(x0, x, t, "v_prediction", source="sample")

    z = torch.randn(20000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = schedule.sample(exact, z, steps=100, sampler=sampler)
    assert abs(x.std().item() - s) < 0.02 * s
    assert abs(x.mean().item()) < 0.02


def test_ddpm_sampler_is_seeded(schedule):
    net = lambda x, t: 0.1 * x  # noqa: E731
    z = torch.randn(8, 2)
    a = schedule.sample(net, z, 4, "ddpm", generator=torch.Generator().manual_seed(3))
    b = schedule.sample(net, z, 4, "ddpm", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_bad_arguments_name_the_parameter(schedule):
    with pytest.raises(ValueError, match="beta_schedule"):
        Schedule(beta_schedule="cosine")
    with pytest.raises(ValueError, match="prediction_type"):
        Schedule(prediction_type="score")
    with pytest.raises(ValueError, match="sampler"):
        schedule.sampler("heun")
    with pytest.raises(TypeError, match="integers"):
        schedule.coefficients(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="steps"):
        schedule.sample(lambda x, t: x, torch.zeros(1, 1), steps=0)
