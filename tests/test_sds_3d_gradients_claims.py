"""sds-3d-gradients under the issue-13 rules: made-up per-seed numbers reach every verdict for every claim, and the
chapter's new measures (prior-sample chroma, the palette margin) against their closed forms."""

import math
import zlib

import numpy as np
import pytest
import torch

from distillbook.chapters import sds_3d_gradients as chapter
from distillbook.chapters.sds_3d_gradients import experiment
from distillbook.chapters.sds_3d_gradients.claims import arm_tag, closest_palette_pair, palette_margin
from distillbook.chapters.sds_3d_gradients.params import CURVE_WINDOW
from distillbook.core.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from distillbook.core.params import ParameterError
from distillbook.core.results import Run
from distillbook.testbeds import voxel3d as v3

SEEDS = [0, 1, 2, 3]
OBJECTS = ["green cube", "red sphere"]  # the PSNR claims'
COLOURED = ["green cube", "pink sphere"]  # the chroma claims'
CLAIM_IDS = ["sds-high-cfg-oversaturates", "sds-high-cfg-above-vsd", "prior-high-cfg-more-chroma",
             "vsd-higher-fidelity", "esd-less-janus-than-vsd", "vsd-less-janus-than-sds", "vsd-particles-less-janus",
             "cds-higher-snr", "cds-higher-fidelity",
             "cds-fixed-noise-hurts", "cds-schedule-hurts", "bsd-closer-than-sds", "bsd-below-truth", "csm-beats-sds",
             "denoising-term-needed", "csm-beats-csd", "vsd-diverse", "vsd-more-diverse-than-sds", "asd-scales",
             "asd-above-vsd-at-scale"]
UNGROUPED = ("vsd-diverse", "vsd-more-diverse-than-sds", "asd-scales", "asd-above-vsd-at-scale")


def _e(seed: int, name: str) -> float:
    """Small deterministic noise, drawn per seed and per quantity, so no statistic is the same in every seed."""
    return 0.008 * float(np.random.default_rng([zlib.crc32(name.encode()), seed]).random())


def _flat(level: float, seed: int, n: int, name: str) -> list[float]:
    """A converged curve: one low start, then ``level`` (+ noise) for the last n - 1 evaluations."""
    return [level - 3.0] + [level + _e(seed, name)] * (n - 1)


def _rising(level: float, seed: int, n: int, name: str) -> list[float]:
    """A curve still climbing 1 dB an evaluation (relative change of its tail well above 2%)."""
    return [level - (n - 1 - i) + _e(seed, name) for i in range(n)]


# Per variant: chroma of the arms and of the prior's samples, BSD's chroma minus the truth's per seed, PSNR levels
# (curves), saturation errors, colour spreads, Janus levels, the fake score's and the prior's camera gaps per seed,
# the CDS/SDS SNR ratio per seed, amortised PSNR levels, and which curves still rise.
VARIANTS = {
    REPRODUCED: dict(
        chroma=dict(sds_high=0.80, sds_low=0.65, vsd=0.66, sds_bsd=0.95), prior=dict(high=0.80, low=0.65),
        bsd=[-0.05] * 4,
        psnr=dict(reconstruction=25, sds_low=18, sds_high=12, sds_bsd=15, vsd=20, bsd=18.5, cds=19, cds_fresh=20,
                  cds_random=21, csd=12, csm=20),
        error=dict(bsd=0.01, other=0.10), spread=dict(vsd=[0.6] * 4, sds=0.05),
        janus=dict(vsd_noview_particles=0.3, sds_noview=0.8, sds=0.0, esd_noview_fast=0.3, vsd_noview_fast=0.5),
        gap=dict(fake=[0.1] * 4, prior=0.5),
        ratio=[2.0, 2.5, 2.2, 3.0],
        amortised={"asd-small": 20, "asd-large": 19.5, "vsd-small": 20, "vsd-large": 17}, rising=()),
    NOT_REPRODUCED: dict(
        chroma=dict(sds_high=0.60, sds_low=0.70, vsd=0.70), prior=dict(high=0.60, low=0.70), bsd=[0.2] * 4,
        psnr=dict(reconstruction=25, sds_low=18, sds_high=12, sds_bsd=15, vsd=15, bsd=18, cds=10, cds_fresh=8,
                  cds_random=6, csd=19, csm=12),
        error=dict(bsd=0.20, other=0.05), spread=dict(vsd=[0.05] * 4, sds=0.30),
        janus=dict(vsd_noview_particles=0.6, sds_noview=0.3, sds=0.0, esd_noview_fast=0.6, vsd_noview_fast=0.5),
        gap=dict(fake=[0.6] * 4, prior=0.4),
        ratio=[0.5, 0.4, 0.6, 0.45],
        amortised={"asd-small": 20, "asd-large": 17, "vsd-small": 20, "vsd-large": 19.5}, rising=()),
    INCONCLUSIVE: dict(
        # chroma at the ceiling (saturated), PSNR curves and BSD's chroma still moving (not converged), Janus at
        # its floor (saturated), spreads, camera gaps and the SNR ratio spanning their decision lines, the large
        # amortised sets still climbing (not converged)
        chroma=dict(sds_high=0.995, sds_low=0.99, vsd=0.99), prior=dict(high=0.99, low=0.985),
        bsd=[-0.05, 0.06, -0.04, 0.05],
        psnr=dict(reconstruction=25, sds_low=18, sds_high=12, sds_bsd=15, vsd=20, bsd=18.5, cds=19, cds_fresh=20,
                  cds_random=21, csd=12, csm=20),
        error=dict(bsd=0.005, other=0.01), spread=dict(vsd=[0.2, 0.9, 0.1, 0.8], sds=0.05),
        janus=dict(vsd_noview_particles=0.012, sds_noview=0.015, sds=0.0, esd_noview_fast=0.01,
                   vsd_noview_fast=0.012),
        gap=dict(fake=[0.3, 0.6, 0.35, 0.55], prior=0.5), ratio=[0.5, 1.3, 0.7, 1.1],
        amortised={"asd-small": 20, "asd-large": 19.5, "vsd-small": 20, "vsd-large": 17},
        rising=("psnr", "bsd-chroma", "asd-large", "vsd-large")),
}
SPANS = "interval spans the region"
REASONS = {  # the inconclusive variant's reason per claim
    "sds-high-cfg-oversaturates": "saturated", "sds-high-cfg-above-vsd": "saturated",
    "prior-high-cfg-more-chroma": "saturated", "vsd-higher-fidelity": "not converged", "vsd-diverse": SPANS,
    "vsd-more-diverse-than-sds": SPANS, "esd-less-janus-than-vsd": "saturated", 
    "vsd-less-janus-than-sds": "saturated", "vsd-particles-less-janus": "saturated", "cds-higher-snr": SPANS, "cds-higher-fidelity": "not converged",
    "cds-fixed-noise-hurts": "not converged", "cds-schedule-hurts": "not converged",
    "bsd-closer-than-sds": "not converged",
    "bsd-below-truth": "not converged", "csm-beats-sds": "not converged", "denoising-term-needed": "not converged",
    "csm-beats-csd": "not converged", "asd-scales": "not converged", "asd-above-vsd-at-scale": "not converged",
}


def _params():
    return chapter.Params.for_profile("smoke", seeds=SEEDS, fidelity_objects=OBJECTS, chroma_objects=COLOURED,
                                      janus_probes=list(experiment.PROBE_COLOURS), diversity_shape="cube")


def _record(run: Run, spec: dict) -> None:
    p = run.params
    n = p.eval_points + 1
    small, large = p.amortised_sizes
    for s in SEEDS:
        values = {}
        for k, obj in enumerate(dict.fromkeys(OBJECTS + COLOURED)):
            key = obj.replace(" ", "-")
            truth = 0.6 + 0.1 * k
            values[f"{key}/psnr_empty"] = 5.0 + _e(s, key + "empty")
            if obj in COLOURED:
                values[f"{key}/truth_saturation"] = truth
                values[f"{key}/prior/chroma_high"] = spec["prior"]["high"] + _e(s, key + "prior-high")
                values[f"{key}/prior/chroma_low"] = spec["prior"]["low"] + _e(s, key + "prior-low")
            for arm in experiment.object_arms(_params(), obj):
                tag = arm_tag(obj, arm)
                level = spec["psnr"][arm] + k
                shape = _rising if "psnr" in spec["rising"] and arm != "reconstruction" else _flat
                values[f"{tag}/curve_psnr"] = shape(level, s, n, tag)
                values[f"{tag}/psnr"] = values[f"{tag}/curve_psnr"][-1]
                values[f"{tag}/ssim"] = 0.5 + _e(s, tag + "ssim")
                chroma = truth + spec["bsd"][s] if arm == "bsd" else spec["chroma"].get(arm, 0.7)
                values[f"{tag}/saturation"] = chroma - _e(s, tag + "chroma")
                moving = arm == "bsd" and "bsd-chroma" in spec["rising"]
                values[f"{tag}/curve_saturation"] = (_rising if moving else _flat)(chroma, s, n, tag + "chroma")
                err = spec["error"]["bsd"] if arm == "bsd" else spec["error"]["other"]
                values[f"{tag}/saturation_error"] = err + _e(s, tag + "error")
        for probe in experiment.PROBE_COLOURS:
            for arm in experiment.JANUS_ARMS:
                values[f"{probe}/{arm}/janus"] = spec["janus"][arm] + _e(s, probe + arm)
            for arm in experiment.CAMERA_GAP_ARMS:
                values[f"{probe}/{arm}/fake_camera_gap"] = spec["gap"]["fake"][s] + _e(s, probe + arm + "fake")
                values[f"{probe}/{arm}/prior_camera_gap"] = spec["gap"]["prior"] + _e(s, probe + arm + "prior")
        values["a-cube/vsd_particles/colour_spread"] = spec["spread"]["vsd"][s] + _e(s, "vsd-spread")
        values["a-cube/sds_particles/colour_spread"] = spec["spread"]["sds"] + _e(s, "sds-spread")
        values["a-cube/vsd_particles/distinct_colours"] = 1.0
        values["a-cube/sds_particles/distinct_colours"] = 1.0
        values["gradient/variance_sds"] = [1.0, 2.0, 4.0, 8.0]
        values["gradient/variance_cds"] = [0.1, 0.2, 0.4, 0.8]
        values["gradient/snr_sds"] = [0.1, 0.2, 0.3, 0.4]
        values["gradient/snr_cds"] = [spec["ratio"][s] * v for v in (0.1, 0.2, 0.3, 0.4)]
        for kind in experiment.AMORTISED_ARMS:
            for size, which in ((small, "small"), (large, "large")):
                name = f"{kind}-{which}"
                shape = _rising if name in spec["rising"] else _flat
                values[f"amortised/{kind}-{size}/curve_psnr"] = shape(spec["amortised"][name], s, n, name)
                values[f"amortised/{kind}-{size}/psnr"] = values[f"amortised/{kind}-{size}/curve_psnr"][-1]
        run.record(s, **values)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_claim_reaches_every_verdict(scratch, variant):
    run = Run("sds-3d-gradients", _params())
    _record(run, VARIANTS[variant])
    results = chapter.evaluate_claims(run)
    assert [r["id"] for r in results] == CLAIM_IDS
    assert {r["id"]: r["verdict"] for r in results} == {cid: variant for cid in CLAIM_IDS}
    if variant == INCONCLUSIVE:
        assert {r["id"]: r["reason"] for r in results} == REASONS
    recorded = set(run.per_seed[SEEDS[0]])
    for r in results:
        assert r["rationale"] and r["margin"] >= 0
        if r["verdict"] != REPRODUCED:
            assert r["explanation"], r["id"]
        if r["diagnosis"]:  # Run.finish accepts it: a claim of the chapter or a recorded metric
            assert r["diagnosis"] in CLAIM_IDS or r["diagnosis"] in recorded, r["id"]
    grouped = {r["id"] for r in results if r["groups"]}
    assert grouped == {cid for cid in CLAIM_IDS if cid not in UNGROUPED}
    by_id = {r["id"]: r for r in results}
    assert list(by_id["esd-less-janus-than-vsd"]["groups"]) == list(experiment.PROBE_COLOURS)
    assert list(by_id["csm-beats-csd"]["groups"]) == OBJECTS


def test_one_object_that_goes_the_other_way_fails_the_claim(scratch):
    """The review's case: the cube over-saturates at high CFG, the sphere does not -> not reproduced."""
    run = Run("sds-3d-gradients", _params())
    _record(run, VARIANTS[REPRODUCED])
    for s in SEEDS:
        run.per_seed[s]["pink-sphere/sds_high/curve_saturation"] = _flat(0.60, s, run.params.eval_points + 1, "dip")
    r = chapter.evaluate_claims(run)[0]
    assert r["id"] == "sds-high-cfg-oversaturates" and r["verdict"] == NOT_REPRODUCED
    assert r["groups"]["green cube"]["verdict"] == REPRODUCED
    assert r["groups"]["pink sphere"]["verdict"] == NOT_REPRODUCED


def test_psnr_claims_read_curve_tails_against_the_reconstruction_ceiling(scratch):
    run = Run("sds-3d-gradients", _params())
    _record(run, VARIANTS[REPRODUCED])
    for s in SEEDS:  # the final point dips, the tail mean does not; VSD and SDS both at the reconstruction
        for obj in OBJECTS:
            for arm in ("reconstruction", "vsd", "sds_low"):
                c = run.per_seed[s][f"{arm_tag(obj, arm)}/curve_psnr"]
                c[:] = [c[0]] + [25.0 + _e(s, obj + arm)] * (len(c) - 1)
            run.per_seed[s][f"{arm_tag(obj, 'reconstruction')}/psnr"] = 25.0
    r = {x["id"]: x for x in chapter.evaluate_claims(run)}["vsd-higher-fidelity"]
    assert r["verdict"] == INCONCLUSIVE and r["reason"] == "saturated"
    assert r["convergence"]["window"] == CURVE_WINDOW


def test_health_rows_name_recorded_metrics(scratch):
    run = Run("sds-3d-gradients", _params())
    _record(run, VARIANTS[REPRODUCED])
    for s in SEEDS:
        for obj in OBJECTS:
            tag = arm_tag(obj, "reconstruction")
            run.per_seed[s][f"{tag}/psnr_start"] = 8.0 + _e(s, tag + "start")
            run.per_seed[s][f"{tag}/psnr_drift"] = 0.01 + _e(s, tag + "drift")
    chapter.record_health(run)
    table = run.health_markdown()
    assert len(run.health_rows) == 3 * len(OBJECTS) + len(experiment.PROBE_COLOURS)
    assert "maximum: 1" in table and "convergence tolerance: 0.02" in table
    assert chapter.summary_markdown(run, chapter.evaluate_claims(run)).count("**reproduced**") >= 10
    assert "Not run" not in chapter.summary_markdown(run, chapter.evaluate_claims(run))
    assert "amortised generator" in chapter.tables_markdown(run) and "camera gap" in chapter.tables_markdown(run)


def test_esd_where_the_fake_score_barely_hears_the_view_is_a_fact_not_a_claim(scratch):
    """Where the fake score's camera gap stays below ESD_LIVE_GAP of the prior's (lambda has almost nothing to
    mix), that probe leaves the claim and the summary states the measured share; with no probe left, the claim
    is absent."""
    run = Run("sds-3d-gradients", _params())
    _record(run, VARIANTS[REPRODUCED])
    for s in SEEDS:
        run.per_seed[s]["head/esd_noview_fast/fake_camera_gap"] = 0.01  # 2% of the prior's 0.5
    results = chapter.evaluate_claims(run)
    esd = {r["id"]: r for r in results}["esd-less-janus-than-vsd"]
    assert esd["groups"] is None and esd["verdict"] == REPRODUCED  # judged on the red-front cube alone
    summary = chapter.summary_markdown(run, results)
    assert "On the head, ESD against VSD is not judged: the fake score's camera gap is 2.0% of the prior's" in summary
    assert "(on the red-front-cube)" in summary
    for s in SEEDS:
        run.per_seed[s]["red-front-cube/esd_noview_fast/fake_camera_gap"] = 0.01
    results = chapter.evaluate_claims(run)
    assert "esd-less-janus-than-vsd" not in {r["id"] for r in results}
    assert chapter.summary_markdown(run, results).count("ESD against VSD is not judged") == 2


def test_the_fidelity_caption_names_arms_below_an_empty_render(scratch):
    """An arm whose PSNR tail ends below what an all-white render scores has diverged, and the caption says so."""
    run = Run("sds-3d-gradients", _params())
    _record(run, VARIANTS[REPRODUCED])
    assert "No arm ends below the PSNR of an empty render." in chapter.fidelity_caption(run)
    for s in SEEDS:
        run.per_seed[s]["green-cube/sds_high/curve_psnr"] = _flat(3.0, s, run.params.eval_points + 1, "low")
    assert "diverged" in chapter.fidelity_caption(run) and "SDS, high CFG on the green cube" in \
        chapter.fidelity_caption(run)


def test_a_profile_without_the_amortised_runs_leaves_asd_out(scratch):
    """amortised_steps = 0 (the cpu profile's budget): no amortised metrics, no ASD claims, and the summary
    says so instead of reading curves that were never trained."""
    run = Run("sds-3d-gradients", chapter.Params.for_profile("smoke", seeds=SEEDS, fidelity_objects=OBJECTS,
                                                             chroma_objects=COLOURED, amortised_steps=0))
    _record(run, VARIANTS[REPRODUCED])
    results = chapter.evaluate_claims(run)
    assert [r["id"] for r in results] == CLAIM_IDS[:-2]
    assert "ASD.** Not run at profile `smoke`" in chapter.summary_markdown(run, results)
    assert "amortised generator" not in chapter.tables_markdown(run)
    assert experiment.run_amortised(run, SEEDS[0], bed=None) == {}


def test_a_profile_without_the_diversity_runs_leaves_its_claims_out(scratch):
    """diversity_shape = None (the cpu profile's budget): no diversity claims or table, and the page says why."""
    run = Run("sds-3d-gradients", _params().model_copy(update=dict(diversity_shape=None)))
    _record(run, VARIANTS[REPRODUCED])
    results = chapter.evaluate_claims(run)
    assert [r["id"] for r in results] == [c for c in CLAIM_IDS if c not in ("vsd-diverse", "vsd-more-diverse-than-sds")]
    assert "Diversity (particles of a colour-free prompt) is not run at profile `smoke`" in \
        chapter.summary_markdown(run, results)
    assert "colour spread" not in chapter.tables_markdown(run)
    assert "the diversity runs" in chapter.scope_markdown(run)
    jobs = experiment.object_jobs(run.params, experiment.Prompts())
    assert not [j for j in jobs if j[0] in experiment.DIVERSITY_ARMS]


def test_left_out_arms_leave_their_claims_out(scratch):
    """left_out_arms (the cpu profile's budget): the arms are not run, the claims reading them are not stated,
    the summary and the scope say so, and a claim whose diagnosis was left out keeps no dangling link."""
    left = ["cds_random", "csd", "csm"]
    run = Run("sds-3d-gradients", _params().model_copy(update=dict(left_out_arms=left)))
    _record(run, VARIANTS[REPRODUCED])
    gone = {"cds-schedule-hurts", "csm-beats-sds", "denoising-term-needed", "csm-beats-csd"}
    results = chapter.evaluate_claims(run)
    assert [r["id"] for r in results] == [c for c in CLAIM_IDS if c not in gone]
    assert {r["id"]: r for r in results}["cds-fixed-noise-hurts"]["diagnosis"] is None
    assert not [j for j in experiment.object_jobs(run.params, experiment.Prompts()) if j[0] in left]
    summary = chapter.summary_markdown(run, results)
    assert summary.count("not run at profile `smoke` (its arms are left out)") == 4
    assert "csm-beats-csd" in chapter.scope_markdown(run)
    with pytest.raises(ParameterError, match="left_out_arms"):
        chapter.Params.for_profile("smoke", left_out_arms=["vsd"])


def test_janus_probes_choose_the_probe_runs(scratch):
    p = _params().model_copy(update=dict(janus_probes=["red-front-cube"]))
    jobs = experiment.object_jobs(p, experiment.Prompts())
    assert {j[1] for j in jobs if j[0] in experiment.JANUS_ARMS} == {"red-front-cube"}
    assert [j[0] for j in jobs if j[1] == "red-front-cube"] == list(experiment.JANUS_ARMS)
    assert experiment.arm_method(p, "vsd_noview_particles").particles == p.particles
    with pytest.raises(ParameterError, match="janus_probes"):
        chapter.Params.for_profile("smoke", janus_probes=["torus"])
    with pytest.raises(ParameterError, match="janus_probes"):
        chapter.Params.for_profile("smoke", janus_probes=[])


# ------------------------------------------------------------------------------------------ the new measures


def test_sample_chroma_is_max_minus_min_over_object_pixels():
    img = torch.ones(2, 3, 4, 4)  # white background
    red, grey = torch.tensor(v3.COLOURS["red"]), torch.tensor([0.5, 0.5, 0.5])
    img[0, :, :2, :] = red[:, None, None]  # 8 red pixels in the first image
    img[1, :, :1, :] = grey[:, None, None]  # 4 grey pixels (chroma 0) in the second
    expected = (8 * float(red.max() - red.min()) + 4 * 0.0) / 12
    assert experiment.sample_chroma(img) == pytest.approx(expected)
    assert experiment.sample_chroma(torch.ones(1, 3, 4, 4)) == 0.0  # no object pixels
    # a pastel as displayed: pink over white at opacity 0.5 from a stronger colour reads as pink (0.3), the
    # truth's own chroma, with no opaque pixel at all (why the chapter measures the displayed colour)
    pink = torch.tensor(v3.COLOURS["pink"])
    half = 0.5 * (1 - 2 * (1 - pink)) + 0.5
    assert experiment.sample_chroma(half[None, :, None, None].expand(1, 3, 4, 4)) == pytest.approx(0.3, abs=1e-6)
    truth = v3.render_field(v3.scene_field("sphere", "pink"), v3.turntable(4), 16)
    assert experiment.sample_chroma(truth) == pytest.approx(0.3, abs=0.02)


def test_palette_margin_is_one_particle_in_the_nearest_colour():
    rgb = {k: np.array(v) for k, v in v3.COLOURS.items()}
    d = min(np.linalg.norm(rgb[a] - rgb[b]) for a in rgb for b in rgb if a < b)
    assert palette_margin(4) == pytest.approx(math.sqrt(3) / 4 * d)
    # the std over 4 particles (population, as scene_metrics) when one takes the nearest other colour
    a, b, dist = closest_palette_pair()
    assert dist == pytest.approx(d)
    colours = torch.tensor(np.stack([rgb[a]] * 3 + [rgb[b]]))
    assert float(colours.std(0, unbiased=False).norm()) == pytest.approx(palette_margin(4), rel=1e-5)
    # flat-coloured renders keep the palette colour, so the margin holds for rendered particles
    render = v3.render_field(v3.scene_field("cube", a), v3.turntable(4), 8)
    assert torch.allclose(experiment.object_colour(render), torch.tensor(rgb[a], dtype=torch.float32), atol=0.01)


def test_curves_need_two_windows():
    with pytest.raises(ParameterError, match="eval_points"):
        chapter.Params.for_profile("smoke", eval_points=2, iterations=4, amortised_steps=4)


def test_median3_removes_isolated_pixels_and_keeps_regions():
    """The prior-chroma filter: an isolated coloured pixel on white goes, a 4x4 coloured block stays."""
    img = torch.ones(1, 3, 8, 8)
    img[0, :, 1, 6] = torch.tensor([1.0, 0.0, 0.0])  # one red noise pixel
    img[0, :, 3:7, 1:5] = torch.tensor([0.0, 0.6, 0.0])[:, None, None]  # a green object
    out = experiment.median3(img)
    assert torch.equal(out[0, :, 1, 6], torch.ones(3))
    assert torch.equal(out[0, :, 4:6, 2:4], img[0, :, 4:6, 2:4])
    assert experiment.sample_chroma(out) == pytest.approx(0.6)
    assert experiment.sample_chroma(img) > 0.6  # unfiltered, the noise pixel counts as a saturated object pixel
