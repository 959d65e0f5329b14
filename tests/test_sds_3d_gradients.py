"""The sds-3d-gradients chapter's pieces: prompts and labels, the measures on renders, DDIM inversion against
the closed-form step, the VSD fixed point, the amortised generator, claim wiring and parameter errors."""

import math

import pytest
import torch

from distillbook.chapters import sds_3d_gradients as chapter
from distillbook.methods.diffusion import Schedule
from distillbook.methods import score_distillation as sd
from distillbook.models.denoiser import MLPDenoiser
from distillbook.core.params import ParameterError
from distillbook.testbeds import voxel3d as v3



def test_labels_carry_prompt_and_view_word():
    prompts = chapter.Prompts()
    assert prompts.n_prompts == 4 * 4 + 2 + 4 and prompts.n_labels == 4 * prompts.n_prompts
    cube = prompts.object_id("cube", "green")
    assert prompts.caption(cube) == "a green cube" and prompts.caption(prompts.shape_id("cone")) == "a cone"
    assert prompts.caption(prompts.object_id("red-front-cube", "blue")) == "a cube with a red front"
    az = torch.tensor([0.1, math.pi / 2, math.pi, -3.0, 2 * math.pi - 0.2])
    assert chapter.labels(torch.full((5,), cube), az).tolist() == [4 * cube + v for v in (0, 1, 2, 2, 0)]
    assert chapter.labels(cube, None).item() == 4 * cube + chapter.NO_VIEW


def test_measures_on_ground_truth():
    """The truth has no Janus; a cube red on both sides scores near 1; PSNR alignment finds a rotation;
    saturation is the chroma of opaque pixels only."""
    n = 16
    cams = v3.turntable(n)
    field = v3.scene_field("red-front-cube", "blue")
    truth = v3.render_field(field, cams, 16)
    alpha = v3.opacity(truth, v3.render_field(field, cams, 16, background=0.0))
    assert chapter.image_metrics(truth, alpha, truth, alpha, "red-front-cube")["janus"] == 0.0
    for turn in (4, 8, 11):  # the truth facing another way is not two-faced
        assert chapter.image_metrics(truth.roll(turn, 0), alpha, truth, alpha, "red-front-cube")["janus"] == \
            pytest.approx(0.0, abs=0.01)

    def two_faced(points):
        mirrored = points.clone()
        mirrored[..., 0] = points[..., 0].abs()
        return field(mirrored)

    janus = chapter.image_metrics(v3.render_field(two_faced, cams, 16), alpha, truth, alpha, "red-front-cube")["janus"]
    assert 0.6 < janus < 1.05  # oblique back views (135 deg) see the second front foreshortened
    psnr, shift = v3.aligned_psnr(truth.roll(3, 0), truth)
    assert shift == n - 3 and math.isinf(psnr.item())
    for name, rgb in v3.COLOURS.items():
        assert chapter.colour_name(torch.tensor(rgb) * 0.8) == name


def test_saturation_is_the_chroma_of_opaque_pixels():
    green = torch.tensor(v3.COLOURS["green"])
    image = torch.ones(1, 3, 4, 4)           # white background ...
    image[..., :2, :] = green[:, None, None]  # ... with an opaque green top half
    alpha = torch.zeros(1, 4, 4)
    alpha[:, :2] = 1.0
    assert v3.saturation(image, alpha).item() == pytest.approx(float(green.max() - green.min()))
    pure = image.clone()
    pure[..., :2, :] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # what high guidance does to it
    assert v3.saturation(pure, alpha) == pytest.approx(1.0)
    assert v3.saturation(image, torch.zeros(1, 4, 4)) == 0.0  # nothing opaque
    # opacity from two backgrounds, on a real render
    cams = v3.turntable(4)
    field = v3.scene_field("sphere", "red")
    on_white, on_black = (v3.render_field(field, cams, 12, background=b) for b in (1.0, 0.0))
    a = v3.opacity(on_white, on_black)
    assert a[:, 6, 6].min() > 0.99 and a[:, 0, 0].max() < 0.01


def test_ddim_inversion_is_the_closed_form_deterministic_step():
    """diffusers' DDIMInverseScheduler, as used by CSM: x_t' = alpha_t' x0_hat + sigma_t' eps_hat from the
    prediction at the current level (the first step starts from the clean render)."""
    torch.manual_seed(0)
    schedule = Schedule()
    net = MLPDenoiser(12, [16], n_classes=2).requires_grad_(False)
    x0 = torch.randn(3, 12)
    lab = torch.zeros(3, dtype=torch.long)
    x_t, t = chapter.ddim_invert(net, schedule, x0, lab, n_grid=10, k=3)
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


def test_amortised_generator_starts_empty_and_prompts_are_spread():
    gen = chapter.PromptToGrid(6, 16)
    density, colour = gen(torch.tensor([0, 3]), torch.tensor([1, 2]))
    assert density.shape == (2, 1, 6, 6, 6) and colour.shape == (2, 3, 6, 6, 6)
    assert (density - -2.0).abs().max() < 1.0
    four = chapter.amortised_prompts(4)
    assert len({s for s, _ in four}) == 4 and len({c for _, c in four}) == 4
    assert len(set(chapter.amortised_prompts(16))) == 16


@pytest.mark.parametrize("prior", ["mlp", "unet"])
def test_each_method_gives_a_finite_gradient(prior):
    """Every method's image gradient on a tiny prior (the gpu profile's UNet too); VSD with the prior as its own
    fake score at CFG 1 is exactly 0."""
    p = chapter.Params.for_profile("smoke", prior=prior, unet_channels=[8, 16])
    prompts = chapter.Prompts()
    torch.manual_seed(0)
    prior = chapter.make_prior(p, prompts).requires_grad_(False)
    schedule = Schedule()
    gen = torch.Generator().manual_seed(0)
    batch = chapter.step_batch(p, schedule, chapter.Method("sds"))(gen)
    x = torch.rand(p.views_per_step, 3 * p.resolution ** 2) * 2 - 1
    lab = chapter.labels(torch.zeros(p.views_per_step, dtype=torch.long), batch["azimuth"])
    batch = {**batch, "fixed_noise": torch.randn(1, x.shape[1]), "t_next": torch.full_like(batch["t"], 300),
             "shift": torch.full_like(batch["t"], 50)}
    for kind in ("sds", "vsd", "bsd", "cds", "csd", "csm", "asd"):
        g = chapter.image_gradient(p, schedule, prior, chapter.Method(kind), x, lab, batch, fake=prior, fake_lab=lab)
        assert g.shape == x.shape and torch.isfinite(g).all(), kind
    # VSD with the prior itself as the fake score at CFG 1: g = 0
    g = chapter.image_gradient(p, schedule, prior, chapter.Method("vsd", guidance=1.0), x, lab, batch, fake=prior,
                               fake_lab=lab)
    assert g.abs().max() < 1e-5


# The claims' wiring is tested in tests/test_sds_3d_gradients_claims.py.


@pytest.mark.parametrize("override, match", [
    ({"fidelity_objects": ["purple cube"]}, "colour shape"),
    ({"diversity_shape": "torus"}, "diversity_shape"),
    ({"views_per_step": 3, "particles": 2}, "multiple of particles"),
    ({"eval_views": 6}, "multiple of 4"),
    ({"amortised_sizes": [8, 4]}, "amortised_sizes"),
])
def test_bad_parameters_are_named(override, match):
    with pytest.raises(ParameterError, match=match):
        chapter.Params.for_profile("smoke", **override)
