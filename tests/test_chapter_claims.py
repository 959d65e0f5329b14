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


# Levels of every curve the claims read (wide student: labels, T = 8, T = 20; small student on every label:
# labels, T = 1, 4, 20; with 50 labels: alone, soft on them, arg-max / soft on every image), the omitted-digit
# accuracy at T = 20 per seed, and the expected verdicts. Levels differ by at least 0.001 so that no arm's noise
# equals another's (identical arms are refused as a claim that cannot fail).
VARIANTS = {
    "reproduced": dict(
        levels=dict(wide_hard=0.95, wide_soft_T10=0.971, wide_soft_T20=0.970, small_hard=0.94, small_soft_T1=0.93,
                    small_soft_T4=0.96, small_soft_T20=0.931, small_few=0.80, small_few_soft=0.84,
                    small_few_unlabelled_argmax=0.90, small_few_unlabelled_soft=0.95),
        rising=(), omitted=[0.90, 0.92, 0.88, 0.91], verdict="reproduced"),
    "not reproduced": dict(
        levels=dict(wide_hard=0.95, wide_soft_T10=0.90, wide_soft_T20=0.93, small_hard=0.94, small_soft_T1=0.95,
                    small_soft_T4=0.90, small_soft_T20=0.951, small_few=0.80, small_few_soft=0.78,
                    small_few_unlabelled_argmax=0.90, small_few_unlabelled_soft=0.75),
        rising=(), omitted=[0.10, 0.20, 0.15, 0.12], verdict="not reproduced"),
    "inconclusive": dict(
        # every claim's a arm still climbing (not converged); the omitted digit's interval spans the 0.52 line
        levels=dict(wide_hard=0.95, wide_soft_T10=0.971, wide_soft_T20=0.970, small_hard=0.94, small_soft_T1=0.93,
                    small_soft_T4=0.96, small_soft_T20=0.931, small_few=0.80, small_few_soft=0.84,
                    small_few_unlabelled_argmax=0.90, small_few_unlabelled_soft=0.95),
        rising=("wide_soft_T10", "wide_soft_T20", "small_soft_T4", "small_few_soft", "small_few_unlabelled_soft"),
        omitted=[0.30, 0.80, 0.45, 0.60], verdict="inconclusive"),
}
CLAIM_IDS = ["soft-targets-beat-hard-labels", "high-temperatures-alike", "small-net-moderate-temperature-beats-high",
             "small-net-moderate-temperature-beats-1", "soft-targets-regularise", "semi-supervised-transfer",
             "soft-beats-pseudo-labels", "omitted-class-recognised"]


def _record(run, seed, curves, omitted):
    # omitted-digit students: without a teacher, T = 1, T = 20
    run.record(seed, **{f"{name}_curve": c for name, c in curves.items()}, omit_class_adjusted_acc=[0.0, 0.2, omitted])


@pytest.mark.parametrize("variant", VARIANTS)
def test_foundations_claims_reach_every_verdict(scratch, variant):
    spec = VARIANTS[variant]
    params = foundations.Params.for_profile("smoke", seeds=SEEDS)
    assert params.temperatures == [1.0, 4.0, 20.0] and params.wide_temperatures() == [4.0, 10.0, 20.0]
    run = Run("foundations", params)
    for s in SEEDS:
        _record(run, s, {k: (_rising if k in spec["rising"] else _flat)(v, s) for k, v in spec["levels"].items()},
                spec["omitted"][s])
    results = foundations.evaluate_claims(run)
    assert [r["id"] for r in results] == CLAIM_IDS
    assert {r["id"]: r["verdict"] for r in results} == {r["id"]: spec["verdict"] for r in results}
    if variant == "inconclusive":
        reasons = {r["id"]: r["reason"] for r in results}
        assert reasons.pop("omitted-class-recognised") == "interval spans the region"
        assert set(reasons.values()) == {"not converged"}
    for r in results:  # every claim says what it reads and why its margin
        assert (r["margin"] > 0 or r["region_kind"] == "within") and r["rationale"]
        assert r["explanation"] and r["diagnosis"]


def test_foundations_claims_read_tail_means_and_saturate_at_the_ceiling(scratch):
    params = foundations.Params.for_profile("smoke", seeds=SEEDS)
    run = Run("foundations", params)
    levels = VARIANTS["reproduced"]["levels"]
    for s in SEEDS:
        top = [0.999, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0 - 0.001 * (s % 2)]
        curves = {k: _flat(v, s) for k, v in levels.items()}
        curves.update(small_few_unlabelled_argmax=top, small_few_unlabelled_soft=top, wide_soft_T20=top)
        _record(run, s, curves, 0.9 + _noise(s))
    by_id = {r["id"]: r for r in foundations.evaluate_claims(run)}
    # both arms within one test image (0.002) of perfect accuracy in every seed: the test bed cannot decide
    assert by_id["soft-beats-pseudo-labels"]["verdict"] == "inconclusive"
    assert by_id["soft-beats-pseudo-labels"]["reason"] == "saturated"
    # the arm is the mean of the last 3 evaluations, not the last point
    expected = np.mean([1.0, 1.0, 1.0 - 0.001 * (1 % 2)])
    assert by_id["soft-targets-beat-hard-labels"]["a"]["per_seed"][1] == pytest.approx(expected)


def test_run_settings_are_not_overrides():
    params = foundations.Params.for_profile("cpu", device="cpu", threads=2, tracking="offline")
    assert params.overrides_from_preset() == {}
    assert foundations.Params.for_profile("cpu", alpha=0.3).overrides_from_preset() == {"alpha": 0.3}


def test_claims_need_enough_evaluations():
    from distillbook.core.params import ParameterError

    with pytest.raises(ParameterError, match="evaluations"):
        foundations.Params.for_profile("smoke", eval_every=10)  # 30 steps: 3 evaluations
