"""Each chapter's claims are wired to the right measurements: made-up per-seed numbers give known verdicts."""

import numpy as np
import pytest

from distillbook.chapters import foundations
from distillbook.core.results import Run

SEEDS = [0, 1, 2, 3]
N_EVALS = 8  # evaluations per made-up learning curve (the claims need >= 2 windows of 3)


def _noise(seed: int, arm: float = 0.0) -> float:
    """Small, deterministic, different per seed and per arm (so that no difference is the same in every seed)."""
    return float(np.random.default_rng([seed, int(1000 * arm)]).uniform(0.0, 0.004))


def _flat(level: float, seed: int) -> list[float]:
    """A converged learning curve: rises, then sits at ``level`` (+ seed noise) for its last 6 evaluations."""
    e = _noise(seed, level)  # the noise differs between arms, so no difference is a constant
    return [level - 0.2, level - 0.1] + [level + e] * (N_EVALS - 2)


def _rising(level: float, seed: int) -> list[float]:
    """A curve still climbing 1 point per evaluation at the end (tail moves > 0.5% against the window before)."""
    return list(level - 0.01 * np.arange(N_EVALS)[::-1] + _noise(seed, level))


# (label-only, arg-max, T = 1, T = 4, T = 20 on the whole training set; T = 1 and T = 4 on the labelled set;
#  longer-training arg-max and soft; omitted-digit accuracy at T = 20 per seed) and the expected verdicts.
VARIANTS = {
    "reproduced": dict(
        levels=dict(label=0.80, argmax=0.90, t1=0.90, t4=0.95, t20=0.96, lab_t1=0.82, lab_t4=0.86,
                    long_argmax=0.90, long_soft=0.96),
        rising=(), omitted=[0.90, 0.92, 0.88, 0.91],
        verdict="reproduced"),
    "not reproduced": dict(
        levels=dict(label=0.90, argmax=0.97, t1=0.96, t4=0.90, t20=0.85, lab_t1=0.88, lab_t4=0.84,
                    long_argmax=0.97, long_soft=0.90),
        rising=(), omitted=[0.10, 0.20, 0.15, 0.12],
        verdict="not reproduced"),
    "inconclusive": dict(
        # every claim's a arm still climbing (not converged); the omitted digit's interval spans the 0.52 line
        levels=dict(label=0.80, argmax=0.90, t1=0.90, t4=0.95, t20=0.96, lab_t1=0.82, lab_t4=0.86,
                    long_argmax=0.90, long_soft=0.96),
        rising=("t4", "t20", "lab_t4", "long_soft"), omitted=[0.30, 0.80, 0.45, 0.60],
        verdict="inconclusive"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_foundations_claims_reach_every_verdict(scratch, variant):
    spec = VARIANTS[variant]
    params = foundations.Params.for_profile("smoke", seeds=SEEDS)  # temperatures [1, 4, 20], ablation_steps [60]
    assert params.temperatures == [1.0, 4.0, 20.0] and foundations.longest_ablation(params) == 60
    run = Run("foundations", params)
    for s in SEEDS:
        c = {k: (_rising if k in spec["rising"] else _flat)(v, s) for k, v in spec["levels"].items()}
        run.record(s, label_only_curve=c["label"], pseudo_label_curve=c["argmax"],
                   soft_all_curves=[c["t1"], c["t4"], c["t20"]],
                   soft_labelled_curves=[c["lab_t1"], c["lab_t4"], _flat(0.5, s)],
                   ablation_steps60_argmax_curve=c["long_argmax"], ablation_steps60_soft_curve=c["long_soft"],
                   omit_class_adjusted_acc=[0.1, 0.2, spec["omitted"][s]])
    results = foundations.evaluate_claims(run)
    assert [r["id"] for r in results] == [
        "distilled-beats-labels", "soft-beats-pseudo-labels", "soft-beats-pseudo-labels-60-steps",
        "temperature-above-1-helps", "temperature-above-1-helps-small-transfer", "soft-targets-regularise",
        "omitted-class-recognised"]
    assert {r["id"]: r["verdict"] for r in results} == {r["id"]: spec["verdict"] for r in results}
    if variant == "inconclusive":
        reasons = {r["id"]: r["reason"] for r in results}
        assert reasons.pop("omitted-class-recognised") == "interval spans the region"
        assert set(reasons.values()) == {"not converged"}
    for r in results:  # every claim says what it reads and why its margin
        assert r["margin"] > 0 and r["rationale"]
        assert r["explanation"] and r["diagnosis"]


def test_foundations_claims_read_tail_means_and_saturate_at_the_ceiling(scratch):
    params = foundations.Params.for_profile("smoke", seeds=SEEDS)
    run = Run("foundations", params)
    for s in SEEDS:
        top = [0.999, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0 - 0.001 * (s % 2)]
        run.record(s, label_only_curve=_flat(0.8, s), pseudo_label_curve=top, soft_all_curves=[top, top, top],
                   soft_labelled_curves=[_flat(0.8, s), _flat(0.85, s), _flat(0.9, s)], ablation_steps60_argmax_curve=top,
                   ablation_steps60_soft_curve=top, omit_class_adjusted_acc=[0.1, 0.2, 0.9 + _noise(s)])
    by_id = {r["id"]: r for r in foundations.evaluate_claims(run)}
    # both arms within one test image (0.002) of perfect accuracy in every seed: the test bed cannot decide
    assert by_id["soft-beats-pseudo-labels"]["verdict"] == "inconclusive"
    assert by_id["soft-beats-pseudo-labels"]["reason"] == "saturated"
    # the arm is the mean of the last 3 evaluations, not the last point
    expected = np.mean([1.0, 1.0, 1.0 - 0.001 * (1 % 2)])
    assert by_id["distilled-beats-labels"]["a"]["per_seed"][1] == pytest.approx(expected)


def test_run_settings_are_not_overrides():
    params = foundations.Params.for_profile("cpu", device="cpu", threads=2, tracking="offline")
    assert params.overrides_from_preset() == {}
    assert foundations.Params.for_profile("cpu", alpha=0.3).overrides_from_preset() == {"alpha": 0.3}


def test_claims_need_enough_evaluations():
    from distillbook.core.params import ParameterError

    with pytest.raises(ParameterError, match="evaluations"):
        foundations.Params.for_profile("smoke", eval_every=10)  # 30 steps: 3 evaluations
