"""The sds-3d-gradients chapter's pieces: prompts and labels, the measures on renders, DDIM inversion against
the closed-form step, the VSD fixed point, the amortised generator, claim wiring and parameter errors."""

import math

import pytest
import torch

from distillbook.chapters import sds_3d_gradients as chapter
from distillbook.chapters.sds_3d_gradients import experiment
from distillbook.core.params import ParameterError
from distillbook.methods import score_distillation as sd
from distillbook.methods.diffusion import Schedule
from distillbook.testbeds import voxel3d as v3


def test_labels_carry_prompt_and_view_word():
    prompts = experiment.Prompts()
    assert prompts.n_prompts == 4 * 5 + 2 + 4 and prompts.n_labels == 4 * prompts.n_prompts
    cube = prompts.object_id("cube", "green")
    assert prompts.caption(cube) == "a green cube" and prompts.caption(prompts.shape_id("cone")) == "a cone"
    assert prompts.caption(prompts.object_id("red-front-cube", "blue")) == "a cube with a red front"
    az = torch.tensor([0.1, math.pi / 2, math.pi, -3.0, 2 * math.pi - 0.2])
    assert experiment.labels(torch.full((5,), cube), az).tolist() == [4 * cube + v for v in (0, 1, 2, 2, 0)]
    assert experiment.labels(cube, None).item() == 4 * cube + experiment.NO_VIEW


def test_measures_on_ground_truth():
    """The truth has no Janus; a cube red on both sides scores near 1; PSNR alignment finds a rotation;
    saturation is the chroma of opaque pixels only."""
    n = 16
    cams = v3.turntable(n)
    field = v3.scene_field("red-front-cube", "blue")
    truth = v3.render_field(field, cams, 16)
    assert experiment.image_metrics(truth, truth, "red-front-cube")["janus"] == 0.0
    for turn in (4, 8, 11):  # the truth facing another way is not two-faced
        assert experiment.image_metrics(truth.roll(turn, 0), truth, "red-front-cube")["janus"] == \
            pytest.approx(0.0, abs=0.01)

    def two_faced(points):
        mirrored = points.clone()
        mirrored[..., 0] = points[..., 0].abs()
        return field(mirrored)

    janus = experiment.image_metrics(v3.render_field(two_faced, cams, 16), truth, "red-front-cube")["janus"]
    assert 0.6 < janus < 1.05  # oblique back views (135 deg) see the second front foreshortened
    psnr, shift = v3.aligned_psnr(truth.roll(3, 0), truth)
    assert shift == n - 3 and math.isinf(psnr.item())
    for name, rgb in v3.COLOURS.items():
        assert experiment.colour_name(torch.tensor(rgb) * 0.8) == name


def test_saturation_is_the_displayed_chroma_of_object_pixels():
    """sample_chroma, the chapter's one saturation measure: max - min of the displayed rgb over pixels not near
    the white background, for renders as for the prior's samples."""
    green = torch.tensor(v3.COLOURS["green"])
    image = torch.ones(1, 3, 4, 4)           # white background ...
    image[..., :2, :] = green[:, None, None]  # ... with a green top half
    assert experiment.sample_chroma(image) == pytest.approx(float(green.max() - green.min()))
    pure = image.clone()
    pure[..., :2, :] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # what high guidance does to it
    assert experiment.sample_chroma(pure) == pytest.approx(1.0)
    assert experiment.sample_chroma(torch.ones(1, 3, 4, 4)) == 0.0  # nothing but background
    truth = v3.render_field(v3.scene_field("sphere", "red"), v3.turntable(4), 16)
    assert experiment.sample_chroma(truth) == pytest.approx(0.8, abs=0.03)


def test_amortised_generator_starts_empty_and_prompts_are_spread():
    gen = experiment.PromptToGrid(6, 16)
    density, colour = gen(torch.tensor([0, 3]), torch.tensor([1, 2]))
    assert density.shape == (2, 1, 6, 6, 6) and colour.shape == (2, 3, 6, 6, 6)
    assert (density - -2.0).abs().max() < 1.0
    four = experiment.amortised_prompts(4)
    assert len({s for s, _ in four}) == 4 and len({c for _, c in four}) == 4
    assert len(set(experiment.amortised_prompts(16))) == 16


@pytest.mark.parametrize("prior", ["mlp", "unet"])
def test_each_method_gives_a_finite_gradient(prior):
    """Every method's image gradient (ESD's too) on the chapter's tiny prior (the gpu profile's UNet too); VSD with
    the prior as its own fake score at CFG 1 is exactly 0."""
    p = chapter.Params.for_profile("smoke", prior=prior, unet_channels=[8, 16])
    prompts = experiment.Prompts()
    torch.manual_seed(0)
    prior = experiment.make_prior(p, prompts).requires_grad_(False)
    schedule = Schedule()
    gen = torch.Generator().manual_seed(0)
    batch = experiment.step_batch(p, schedule, 2)(gen)
    x = torch.rand(2, 3 * p.resolution ** 2) * 2 - 1
    prompts = torch.zeros(2, dtype=torch.long)
    lab, free = experiment.labels(prompts, batch["azimuth"]), experiment.labels(prompts, None)
    batch = {**batch, "fixed_noise": torch.randn(1, x.shape[1]), "t_next": torch.full_like(batch["t"], 300),
             "shift": torch.full_like(batch["t"], 50)}
    methods = [sd.Method(kind, inversion_steps=p.inversion_steps)
               for kind in ("sds", "vsd", "bsd", "cds", "csd", "csm", "asd")] + [sd.Method("vsd", esd_lambda=0.5)]
    for method in methods:
        g = sd.image_gradient(schedule, prior, method, x, lab, batch, fake=prior, fake_lab=lab, fake_free_lab=free)
        assert g.shape == x.shape and torch.isfinite(g).all(), method
    # VSD with the prior itself as the fake score at CFG 1: g = 0
    g = sd.image_gradient(schedule, prior, sd.Method("vsd", guidance=1.0), x, lab, batch, fake=prior, fake_lab=lab)
    assert g.abs().max() < 1e-5


def test_cds_anneals_t_prime_with_the_step_fit_passes(monkeypatch):
    """Consistent3D's schedule reads the optimiser step from ``fit``: t' falls linearly from 0.98 T - max gap at
    step 0 to 20 at the last step, t = t' + gap, with the scene's one fixed noise."""
    p = chapter.Params.for_profile("smoke", iterations=8, eval_points=4)
    prompts, schedule = experiment.Prompts(), Schedule()
    torch.manual_seed(0)
    prior = experiment.make_prior(p, prompts).requires_grad_(False)
    bed = experiment.Bed(prompts, schedule, prior, None, None, {})
    method = sd.Method("cds", p.low_guidance)
    scene = experiment.Scene(p, method, prior, seed=0)
    seen = []

    def spy(schedule, prior, method, x, lab, batch, **kw):
        seen.append((int(batch["t_next"][0]), batch["fixed_noise"]))
        return torch.zeros_like(x)

    monkeypatch.setattr(sd, "image_gradient", spy)
    batch = experiment.step_batch(p, schedule, 2)(torch.Generator().manual_seed(0))
    for step in (0, 4, 8):
        experiment.object_loss(scene, batch, step, p, bed, method, prompt=0)
    hi = round(0.98 * schedule.num_train_timesteps) - p.cds_gap[1]
    assert [t for t, _ in seen] == [hi, round(hi - (hi - 20) * 0.5), 20]
    assert all(noise is scene.fixed_noise for _, noise in seen)
    # the ablation keeps the schedule and takes the step's fresh noise
    seen.clear()
    experiment.object_loss(scene, batch, 4, p, bed, method, prompt=0, fresh_noise=True)
    assert seen[0][0] == round(hi - (hi - 20) * 0.5) and seen[0][1] is batch["noise"]


def test_every_particle_gets_views_per_particle_views(monkeypatch):
    """Equal views per representation: a step of k particles draws k * views_per_particle views, and particle i
    renders views i, i + k, ... (its own, none shared)."""
    p = chapter.Params.for_profile("smoke", views_per_particle=2)
    prompts, schedule = experiment.Prompts(), Schedule()
    torch.manual_seed(0)
    prior = experiment.make_prior(p, prompts).requires_grad_(False)
    bed = experiment.Bed(prompts, schedule, prior, None, None, {})
    method = sd.Method("sds", p.low_guidance, particles=3)
    scene = experiment.Scene(p, method, prior, seed=0)
    rendered = []
    for i, grid in enumerate(scene.grids):
        monkeypatch.setattr(grid, "render", lambda cams, *a, i=i, **k: rendered.append((i, cams.azimuth.tolist()))
                            or torch.zeros(len(cams.azimuth), 3, p.resolution, p.resolution, requires_grad=True))
    n_views = p.views_per_particle * method.particles
    batch = experiment.step_batch(p, schedule, n_views)(torch.Generator().manual_seed(0))
    assert len(batch["t"]) == 6
    experiment.object_loss(scene, batch, 0, p, bed, method, prompt=0)
    azimuth = batch["azimuth"].tolist()
    assert rendered == [(i, [azimuth[i], azimuth[i + 3]]) for i in range(3)]


def test_noise_stats_against_a_known_signal_to_noise_ratio():
    """g = mu + sigma eps: V = dim sigma^2 and SNR = ||mu||^2 / V, within sampling error; a zero-mean gradient's
    debiased SNR is near 0 (the plug-in one would be 1 / draws)."""
    gen = torch.Generator().manual_seed(0)
    dim, draws, sigma = 400, 256, 0.5
    mu = torch.randn(2, dim, generator=gen)
    g = mu + sigma * torch.randn(draws, 2, dim, generator=gen)
    variance, snr = experiment.noise_stats(g)
    assert variance == pytest.approx(dim * sigma ** 2, rel=0.02)
    assert snr == pytest.approx(float(mu.pow(2).sum(-1).mean()) / (dim * sigma ** 2), rel=0.05)
    _, snr_zero = experiment.noise_stats(sigma * torch.randn(draws, 2, dim, generator=gen))
    assert snr_zero < 0.2 / draws


# The claims' wiring is tested in tests/test_sds_3d_gradients_claims.py.


@pytest.mark.parametrize("override, match", [
    ({"fidelity_objects": ["purple cube"]}, "colour shape"),
    ({"diversity_shape": "torus"}, "diversity_shape"),
    ({"amortised_steps": 3}, "multiples of eval_points"),
    ({"eval_views": 6}, "multiple of 4"),
    ({"amortised_sizes": [8, 4]}, "amortised_sizes"),
])
def test_bad_parameters_are_named(override, match):
    with pytest.raises(ParameterError, match=match):
        chapter.Params.for_profile("smoke", **override)


@pytest.mark.parametrize("prior", ["mlp", "unet"])
def test_the_fake_score_starts_without_camera_information(prior):
    """VSD's fake score starts as the prior read without view words (issue 18): for every prompt, its prediction
    with any view word equals the prior's without one; the prior itself keeps its views; the copy is trainable."""
    p = chapter.Params.for_profile("smoke", prior=prior, unet_channels=[8, 16])
    prompts = experiment.Prompts()
    torch.manual_seed(0)
    prior_net = experiment.make_prior(p, prompts).requires_grad_(False)
    table = prior_net.unet.class_embedding if prior == "unet" else prior_net.class_embedding
    with torch.no_grad():  # an untrained prior's view rows are random already; make sure they differ
        table.weight.normal_()
    fake = experiment.fake_score(prior_net, prompts.n_prompts)
    gen = torch.Generator().manual_seed(1)
    n = 12
    x = torch.randn(n, 3 * p.resolution ** 2, generator=gen)
    t = torch.full((n,), 500)
    prompt_ids = torch.arange(n) % prompts.n_prompts
    azimuth = torch.linspace(-math.pi, math.pi, n)
    with torch.no_grad():
        torch.testing.assert_close(fake(x, t, experiment.labels(prompt_ids, azimuth)),
                                   prior_net(x, t, experiment.labels(prompt_ids, None)))
        assert not torch.allclose(prior_net(x, t, experiment.labels(prompt_ids, azimuth)),
                                  prior_net(x, t, experiment.labels(prompt_ids, None)))
    assert all(q.requires_grad for q in fake.parameters())
    with pytest.raises(ValueError, match="class embeddings"):
        experiment.fake_score(prior_net, prompts.n_prompts + 1)
    # camera_gap reads the same thing: 0 for the fresh fake score, positive for the prior
    bed = experiment.Bed(prompts, Schedule(), prior_net, None, None, {})
    scene = experiment.Scene(p, sd.Method("vsd"), prior_net, seed=0)
    with torch.no_grad():
        scene.grids[0].density.fill_(1.0)
    assert experiment.camera_gap(fake, bed, p, scene, prompt=3, seed=0) == pytest.approx(0.0, abs=1e-6)
    assert experiment.camera_gap(prior_net, bed, p, scene, prompt=3, seed=0) > 0.01
