"""The verdict rule on synthetic numbers, its interval against scipy, and why it is a t-interval."""

import json

import numpy as np
import pytest
from scipy import stats

from distillbook.core.claims import (INCONCLUSIVE, NOT_CONVERGED, NOT_REPRODUCED, REPRODUCED, SATURATED, SPANS,
                                TOO_FEW_SEEDS, Claim, ClaimError, count_verdicts, curve, diagnosis_markdown,
                                markdown_table, relative_change, rise_then_fall, t_interval, tail_mean, verdict)

WHY = "made-up numbers"
BEATS = Claim("a-beats-b", 1, "A beats B", a="A", b="B", margin=0.0, rationale=WHY)


def test_reproduced_when_interval_inside_region():
    a = [0.90, 0.91, 0.92, 0.90, 0.93]
    b = [0.80, 0.82, 0.81, 0.80, 0.79]
    r = BEATS.evaluate(a, b)
    assert r["verdict"] == REPRODUCED
    assert r["measured"]["ci95"][0] > 0
    assert r["measured"]["per_seed"] == pytest.approx(np.subtract(a, b).tolist())


def test_not_reproduced_when_interval_outside_region():
    r = BEATS.evaluate([0.70, 0.71, 0.69, 0.72, 0.70], [0.80, 0.82, 0.81, 0.80, 0.79])
    assert r["verdict"] == NOT_REPRODUCED
    assert r["measured"]["ci95"][1] < 0


def test_inconclusive_when_interval_straddles():
    r = BEATS.evaluate([0.81, 0.79, 0.83, 0.78, 0.80], [0.80, 0.80, 0.80, 0.80, 0.80])
    assert r["verdict"] == INCONCLUSIVE
    lo, hi = r["measured"]["ci95"]
    assert lo < 0 < hi


def test_pairing_matters():
    # Large seed-to-seed spread but a steady paired gain: the paired interval sees it, the unpaired one would not.
    b = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    a = b + np.array([0.010, 0.011, 0.009, 0.010, 0.012])
    assert BEATS.evaluate(a, b)["verdict"] == REPRODUCED
    assert stats.ttest_ind(a, b).pvalue > 0.5


def test_too_few_seeds_is_inconclusive():
    assert BEATS.evaluate([0.9, 0.95], [0.1, 0.2])["verdict"] == INCONCLUSIVE


def test_within_region_and_ratio():
    about_equal = Claim("eq", 2, "A matches B", a="A", b="B", region=("within", (-0.01, 0.01)), margin=0,
                        rationale=WHY)
    assert about_equal.evaluate([0.800, 0.801, 0.799, 0.800], [0.800, 0.800, 0.800, 0.801])["verdict"] == REPRODUCED
    assert about_equal.evaluate([0.90, 0.91, 0.92, 0.90], [0.80, 0.80, 0.80, 0.80])["verdict"] == NOT_REPRODUCED
    at_most = Claim("ratio", 3, "A costs at most 1.5x B", a="A", b="B", statistic="ratio", region=("<", 1.5),
                    margin=0, rationale=WHY)
    assert at_most.evaluate([1.2, 1.3, 1.25], [1.0, 1.0, 1.0])["verdict"] == REPRODUCED
    assert at_most.evaluate([2.2, 2.3, 2.25], [1.0, 1.0, 1.0])["verdict"] == NOT_REPRODUCED


def test_value_claim_needs_no_b():
    above_half = Claim("v", None, "most are recognised", a="acc", statistic="value", region=(">", 0.5), margin=0,
                       rationale=WHY)
    assert above_half.evaluate([0.9, 0.85, 0.95])["verdict"] == REPRODUCED
    with pytest.raises(ClaimError, match="no b"):
        above_half.evaluate([0.9, 0.85, 0.95], [0.1, 0.1, 0.1])


def test_t_interval_matches_scipy():
    x = np.random.default_rng(2).normal(1.0, 0.5, size=6)
    ref = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert t_interval(x) == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_constant_values_give_a_point_interval():
    assert t_interval([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))


def _coverage(interval, n, reps=2000):
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(reps):
        lo, hi = interval(rng.normal(0.0, 1.0, size=n))
        hits += lo <= 0.0 <= hi
    return hits / reps


def _percentile_bootstrap(x, resamples=2000, rng=np.random.default_rng(1)):
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    return tuple(np.quantile(means, [0.025, 0.975]))


@pytest.mark.parametrize("n", [3, 5, 8])
def test_the_rule_keeps_95_percent_coverage_where_a_bootstrap_does_not(n):
    """Why the rule uses t: at the seed counts chapters afford, the percentile bootstrap under-covers."""
    assert _coverage(t_interval, n) == pytest.approx(0.95, abs=0.015)
    assert _coverage(_percentile_bootstrap, n, reps=1000) < 0.92


def test_region_boundaries():
    assert verdict((0.0, 1.0), (">", 0.0), 5) == INCONCLUSIVE  # touching the bound is not inside
    assert verdict((-1.0, 0.0), (">", 0.0), 5) == NOT_REPRODUCED
    with pytest.raises(ValueError, match="region"):
        verdict((0, 1), ("!=", 0.0), 5)


def test_bad_claims_fail_early():
    with pytest.raises(ValueError, match="need a and b"):
        Claim("x", 1, "s", a="A", statistic="difference", margin=0, rationale=WHY)
    with pytest.raises(ValueError, match="one value per seed"):
        BEATS.evaluate([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        BEATS.evaluate([1, 2, float("nan")], [1, 2, 3])


def test_rise_then_fall():
    steps = np.linspace(0, 1, 9)
    bump = np.stack([np.sin(np.pi * steps) + 0.01 * k for k in range(4)])
    assert (rise_then_fall(bump) > 0).all()
    assert (rise_then_fall(np.stack([steps] * 4)) <= 0).all()  # monotone: no peak inside


def test_rise_then_fall_on_flat_noise_is_not_reproduced_more_than_chance():
    """Cross-fitting the peak: pure noise must not look like a peak (the in-sample arg-max would)."""
    rng = np.random.default_rng(0)
    claim = Claim("peak", None, "rises then falls", a="peak height", statistic="value", region=(">", 0.0), margin=0,
                  rationale=WHY)
    verdicts = [claim.evaluate(rise_then_fall(rng.normal(size=(5, 8))))["verdict"] for _ in range(400)]
    assert verdicts.count(REPRODUCED) / len(verdicts) < 0.05


def test_markdown_table_lists_every_claim():
    rows = [BEATS.evaluate([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])]
    table = markdown_table(rows)
    assert "a-beats-b" in table and "reproduced" in table and table.count("\n") == 2


def test_mean_std_text_and_derived_seeds():
    import torch

    from distillbook.core.claims import mean_std_text
    from distillbook.core.runtime import derived_generator, derived_seed

    assert mean_std_text([1.0, 2.0, 3.0]) == "2 ± 1"
    assert mean_std_text([0.5]) == "0.5"
    # the seeds every chapter derives: numpy's SeedSequence, so reruns before and after the refactor agree
    assert derived_seed(3, 11, 16) == int(np.random.SeedSequence([3, 11, 16]).generate_state(1)[0])
    assert len({derived_seed(s, k) for s in range(20) for k in range(20)}) == 400
    assert torch.equal(torch.rand(3, generator=derived_generator(1, 2)), torch.rand(3, generator=derived_generator(1, 2)))


# ------------------------------------------------------------------------------------------------------------
# The rules of issue 13, each shown firing on made-up numbers.

def _claim(**kw):
    base = dict(a="A", b="B", margin=0.0, rationale=WHY)
    return Claim(kw.pop("id", "c"), 1, "A beats B", **{**base, **kw})


def test_margin_is_required_with_a_rationale():
    with pytest.raises(TypeError, match="margin"):
        Claim("x", 1, "s", a="A", b="B", rationale=WHY)
    with pytest.raises(ClaimError, match="rationale"):
        Claim("x", 1, "s", a="A", b="B", margin=0.1, rationale="  ")
    with pytest.raises(ClaimError, match="margin"):
        Claim("x", 1, "s", a="A", b="B", margin=-0.1, rationale=WHY)
    with pytest.raises(ClaimError, match="margin must be 0"):
        Claim("x", 1, "s", a="A", b="B", margin=0.1, rationale=WHY, region=("within", (0, 1)))


def test_a_margin_turns_a_small_confident_gain_into_not_reproduced():
    b = np.array([0.80, 0.81, 0.82, 0.79, 0.80])
    a = b + np.array([0.001, 0.0012, 0.0009, 0.0011, 0.001])  # +0.1 points in every seed
    assert _claim(margin=0.0).evaluate(a, b)["verdict"] == REPRODUCED
    r = _claim(margin=0.005).evaluate(a, b)
    assert r["verdict"] == NOT_REPRODUCED and r["decision_line"] == pytest.approx(0.005)
    assert _claim(margin=0.005).evaluate(b + 0.01 + a - b, b)["verdict"] == REPRODUCED


def test_margin_on_a_less_than_claim_moves_the_line_down():
    c = _claim(statistic="ratio", region=("<", 1.0), margin=0.1)
    b = [1.0, 1.0, 1.0, 1.0]
    assert c.evaluate([0.85, 0.86, 0.84, 0.85], b)["verdict"] == REPRODUCED
    assert c.evaluate([0.95, 0.96, 0.94, 0.95], b)["verdict"] == NOT_REPRODUCED  # below 1 but not by 0.1


@pytest.mark.parametrize("interval, expected", [
    ((0.1, 0.2), REPRODUCED), ((0.0, 0.2), INCONCLUSIVE), ((-0.2, 0.0), NOT_REPRODUCED),
    ((-0.2, -0.1), NOT_REPRODUCED), ((-0.1, 0.1), INCONCLUSIVE)])
def test_boundaries_of_greater_than(interval, expected):
    assert verdict(interval, (">", 0.0), 5) == expected


@pytest.mark.parametrize("interval, expected", [
    ((-0.2, -0.1), REPRODUCED), ((-0.2, 0.0), INCONCLUSIVE), ((0.0, 0.2), NOT_REPRODUCED),
    ((0.1, 0.2), NOT_REPRODUCED), ((-0.1, 0.1), INCONCLUSIVE)])
def test_boundaries_of_less_than(interval, expected):
    assert verdict(interval, ("<", 0.0), 5) == expected


@pytest.mark.parametrize("interval, expected", [
    ((0.0, 1.0), REPRODUCED), ((0.2, 0.8), REPRODUCED), ((-0.1, 0.5), INCONCLUSIVE), ((0.5, 1.1), INCONCLUSIVE),
    ((1.0, 1.2), INCONCLUSIVE), ((1.01, 1.2), NOT_REPRODUCED), ((-0.5, -0.01), NOT_REPRODUCED),
    ((-0.5, 0.0), INCONCLUSIVE), ((-1.0, 2.0), INCONCLUSIVE)])
def test_boundaries_of_within_are_closed(interval, expected):
    assert verdict(interval, ("within", (0.0, 1.0)), 5) == expected


def test_boundaries_with_a_margin():
    assert verdict((0.5, 0.6), (">", 0.0), 5, margin=0.5) == INCONCLUSIVE
    assert verdict((0.5001, 0.6), (">", 0.0), 5, margin=0.5) == REPRODUCED
    assert verdict((0.4, 0.5), (">", 0.0), 5, margin=0.5) == NOT_REPRODUCED
    assert verdict((-0.6, -0.5), ("<", 0.0), 5, margin=0.5) == INCONCLUSIVE
    assert verdict((-0.5, -0.4), ("<", 0.0), 5, margin=0.5) == NOT_REPRODUCED


@pytest.mark.parametrize("region", [("within", (1.0, 0.0)), ("within", (0.5, 0.5)), ("within", (float("nan"), 1)),
                                    (">", float("nan")), ("<", float("inf")), ("within", 3.0), (">", "0")])
def test_reversed_and_nan_bounds_are_refused(region):
    with pytest.raises(ClaimError, match="region|bound"):
        _claim(region=region)
    with pytest.raises(ValueError):
        verdict((0.0, 1.0), region, 5)


def test_ratio_denominators_must_be_positive():
    c = _claim(statistic="ratio", region=("<", 1.5))
    with pytest.raises(ClaimError, match="denominator"):
        c.evaluate([1.0, 1.1, 1.2], [1.0, 0.0, 1.0])
    with pytest.raises(ClaimError, match="denominator"):  # 1.25 / -1 would otherwise read as "< 1.5"
        c.evaluate([1.25, 1.25, 1.3], [-1.0, -1.0, -1.0])


def test_ratio_uses_the_excess_over_the_floor():
    c = _claim(statistic="ratio", region=("<", 1.5), floor=0.10)
    a, b = [0.20, 0.21, 0.22, 0.21], [0.17, 0.17, 0.17, 0.17]  # raw ratio about 1.24, excess ratio about 1.57
    raw = _claim(statistic="ratio", region=("<", 1.5)).evaluate(a, b)
    assert raw["verdict"] == REPRODUCED
    r = c.evaluate(a, b)
    assert r["measured"]["mean"] == pytest.approx(np.mean((np.array(a) - 0.1) / 0.07))
    assert r["verdict"] != REPRODUCED and "floor" in r["quantity"]
    # a measured, per-seed floor
    r = c.evaluate(a, b, floor=[0.09, 0.10, 0.11, 0.10])
    assert r["measured"]["per_seed"][2] == pytest.approx((0.22 - 0.11) / (0.17 - 0.11))


def test_excess_ratio_with_denominator_at_the_floor_is_saturated():
    c = _claim(statistic="ratio", region=("<", 1.5), floor=0.10)
    r = c.evaluate([0.2, 0.21, 0.22], [0.10, 0.12, 0.11])
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, SATURATED)
    assert r["measured"]["per_seed"][0] is None and r["measured"]["mean"] == pytest.approx(0.11 / 0.02 / 2 + 0.12 / 0.01 / 2)
    r = c.evaluate([0.2, 0.21, 0.22], [0.10, 0.09, 0.10])  # undefined in every seed: nulls, valid JSON
    assert r["measured"]["mean"] is None and r["measured"]["ci95"] == [None, None]
    json.dumps(r, allow_nan=False)


def test_arms_at_a_ceiling_are_saturated():
    c = _claim(ceiling=1.0, saturation_tol=0.01, margin=0.005)
    r = c.evaluate([1.0, 0.995, 1.0, 0.999], [0.99, 1.0, 0.998, 0.997])
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, SATURATED)
    assert r["saturation"]["saturated"] and "ceiling" in r["saturation"]["why"]
    # one arm short of the ceiling: the comparison can move
    assert c.evaluate([1.0, 0.995, 1.0, 0.999], [0.90, 0.91, 0.92, 0.90])["verdict"] == REPRODUCED


def test_a_claim_about_reaching_a_bound_needs_a_baseline_that_falls_short():
    c = Claim("all-modes", 1, "covers all 8 modes", a="modes", statistic="value", region=(">", 7.5), margin=0,
              rationale=WHY, ceiling=8.0, saturation_tol=0.0, reaches="ceiling")
    with pytest.raises(ClaimError, match="baseline"):
        c.evaluate([8, 8, 8])
    r = c.evaluate([8, 8, 8, 8], baseline=[8, 8, 8, 8])
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, SATURATED)
    assert "baseline" in r["saturation"]["why"]
    # the baseline falls short: the test bed can tell them apart, and a constant 8/8 is the point of the claim
    r = c.evaluate([8.0, 8.0, 8.0, 8.0], baseline=[6, 7, 5, 6])
    assert r["verdict"] == REPRODUCED
    # a baseline that reaches the bound in three seeds of four does not show the test bed can tell them apart
    r = c.evaluate([8.0, 8.0, 8.0, 8.0], baseline=[8, 8, 8, 7])
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, SATURATED)
    with pytest.raises(ClaimError, match="baseline is only"):
        _claim().evaluate([1, 2, 3], [0, 0, 0], baseline=[1, 1, 1])


def test_identical_statistics_are_refused():
    with pytest.raises(ClaimError, match="every seed"):
        _claim().evaluate([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])  # identical arms (constrained = masked)
    with pytest.raises(ClaimError, match="every seed"):
        _claim(statistic="value", b=None, region=("within", (0.4, 0.6))).evaluate([0.5, 0.5, 0.5])  # a constant
    # below 3 seeds the verdict is "too few seeds" anyway
    assert _claim().evaluate([0.7, 0.8], [0.7, 0.8])["reason"] == TOO_FEW_SEEDS


def test_too_few_seeds_reason():
    r = BEATS.evaluate([0.9, 0.95], [0.1, 0.2])
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, TOO_FEW_SEEDS)
    r = BEATS.evaluate([0.81, 0.79, 0.83, 0.78], [0.80, 0.80, 0.79, 0.81])
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, SPANS)


def test_tail_mean_and_relative_change():
    c = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert tail_mean(c, 3) == pytest.approx(5.0)
    assert relative_change(c, 3) == pytest.approx((5.0 - 2.0) / 5.0)
    assert relative_change([1.0] * 6, 3) == 0.0
    with pytest.raises(ValueError, match="2 \\* window"):
        relative_change([1.0] * 5, 3)


def test_an_unconverged_arm_makes_the_claim_inconclusive():
    rising = [[0.5, 0.55, 0.6, 0.7, 0.8, 0.85, 0.9 + 0.01 * s] for s in range(4)]  # still rising at the end
    flat = [[0.5, 0.79, 0.80, 0.80, 0.80, 0.80, 0.80, 0.80 + 0.001 * s] for s in range(4)]
    c = _claim(margin=0.01)
    r = c.evaluate(curve(rising), curve(flat))
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, NOT_CONVERGED)
    assert r["convergence"]["converged"] is False and len(r["convergence"]["drift_a"]) == 4
    # the value read is the tail mean, not the last point
    assert r["a"]["mean"] == pytest.approx(np.mean([np.mean(x[-3:]) for x in rising]))
    plateau = [[0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9 + 0.001 * s] for s in range(4)]
    assert c.evaluate(curve(plateau), curve(flat))["verdict"] == REPRODUCED
    # the paper's own claim at a fixed budget may be judged unconverged, and says so
    matched = _claim(margin=0.01, budget_matched="paper, Table 2: every method at 10k steps")
    r = matched.evaluate(curve(rising), curve(flat))
    assert r["verdict"] == REPRODUCED and r["convergence"]["budget_matched"]


def test_best_mid_run_then_climbing_back_is_not_converged():
    climbs_back = [[0.5, 0.3, 0.2, 0.18, 0.22, 0.28, 0.35 + 0.01 * s] for s in range(4)]
    c = _claim(region=("<", 0.0), margin=0.0)
    r = c.evaluate(curve(climbs_back), [0.5, 0.5, 0.52, 0.49])
    assert r["reason"] == NOT_CONVERGED


def test_groups_agree_or_the_claim_fails():
    cube = ([0.90, 0.91, 0.92, 0.90], [0.80, 0.81, 0.80, 0.82])
    sphere_flipped = ([0.70, 0.71, 0.69, 0.70], [0.80, 0.81, 0.80, 0.82])
    sphere_agrees = ([0.86, 0.87, 0.88, 0.86], [0.80, 0.81, 0.80, 0.82])
    c = _claim(margin=0.01)
    both = c.evaluate({"cube": cube[0], "sphere": sphere_agrees[0]}, {"cube": cube[1], "sphere": sphere_agrees[1]})
    assert both["verdict"] == REPRODUCED and set(both["groups"]) == {"cube", "sphere"}
    # the average over the two objects favours A, but the sphere goes the other way in every seed
    mixed = c.evaluate({"cube": cube[0], "sphere": sphere_flipped[0]}, {"cube": cube[1], "sphere": sphere_flipped[1]})
    assert mixed["verdict"] == NOT_REPRODUCED
    assert mixed["groups"]["cube"]["verdict"] == REPRODUCED and mixed["groups"]["sphere"]["verdict"] == NOT_REPRODUCED
    pooled = _claim(margin=0.01, pooled="the paper reports the mean over its prompts")
    r = pooled.evaluate({"cube": cube[0], "sphere": sphere_agrees[0]}, {"cube": cube[1], "sphere": sphere_agrees[1]})
    assert r["verdict"] == REPRODUCED and r["groups"]["sphere"]["verdict"] == REPRODUCED
    noisy = ([0.80, 0.85, 0.78, 0.83], [0.80, 0.81, 0.80, 0.82])
    r = c.evaluate({"cube": cube[0], "sphere": noisy[0]}, {"cube": cube[1], "sphere": noisy[1]})
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, SPANS)
    with pytest.raises(ClaimError, match="same groups"):
        c.evaluate({"cube": cube[0], "sphere": noisy[0]}, {"sphere": noisy[1], "cube": cube[1]})


def test_diagnosis_status_and_text():
    explained = _claim(id="x", explanation="the teacher is under-trained", diagnosis="longer-teacher")
    untested = _claim(id="y", explanation="the prior has one mode per prompt")
    bare = _claim(id="z")
    nr = ([0.70, 0.71, 0.69, 0.70], [0.80, 0.81, 0.80, 0.82])
    results = [explained.evaluate(*nr), untested.evaluate(*nr), bare.evaluate(*nr),
               _claim(id="longer-teacher").evaluate([0.9, 0.91, 0.92], [0.8, 0.8, 0.81])]
    assert [r["diagnosis_status"] for r in results] == ["tested by longer-teacher", "untested explanation",
                                                         "no explanation", None]
    text = diagnosis_markdown(results)
    assert "Tested by claim **longer-teacher**: reproduced" in text and "untested explanation" in text
    counts = count_verdicts(results + [BEATS.evaluate([0.9, 0.95], [0.1, 0.2])])
    assert counts[NOT_REPRODUCED] == 3 and counts["inconclusive: too few seeds"] == 1


def test_markdown_table_shows_margin_reason_and_groups():
    c = _claim(id="per-object", margin=0.01)
    r = c.evaluate({"cube": [0.9, 0.91, 0.92], "sphere": [0.7, 0.71, 0.69]},
                   {"cube": [0.8, 0.8, 0.81], "sphere": [0.8, 0.8, 0.81]})
    table = markdown_table([r, BEATS.evaluate([0.9, 0.95], [0.1, 0.2])])
    assert "by ≥ 0.01" in table and "sphere: not reproduced" in table and "(too few seeds)" in table


def test_curve_difference_reads_both_tails_and_the_larger_drift():
    from distillbook.core.claims import curve_difference

    high = [[0.5, 0.4, 0.35, 0.35, 0.35, 0.35 + 0.001 * s] for s in range(3)]
    low = [[0.5, 0.3, 0.2, 0.2, 0.2, 0.2 + 0.002 * s] for s in range(3)]
    arm = curve_difference(high, low)
    assert arm.values() == pytest.approx([np.mean(h[-3:]) - np.mean(lo[-3:]) for h, lo in zip(high, low)])
    assert arm.drift() == pytest.approx([max(relative_change(h), relative_change(lo)) for h, lo in zip(high, low)])
    r = Claim("rise", 1, "SW rises", a="rise", statistic="value", margin=0.05, rationale=WHY).evaluate(arm)
    assert r["reason"] == NOT_CONVERGED


def test_an_arm_that_reached_its_floor_has_converged():
    # the online student drops onto its teacher's floor at the end: it cannot move further, so it counts as settled
    onto_floor = [[0.40, 0.35, 0.32, 0.30, 0.29, 0.28, 0.272, 0.270 + 0.001 * s] for s in range(4)]
    offline = [[0.45, 0.40, 0.38, 0.37, 0.37, 0.37, 0.37, 0.37 + 0.001 * s] for s in range(4)]
    floor = [0.27, 0.27, 0.272, 0.271]
    c = _claim(region=("<", 0.0), margin=0.01)
    assert c.evaluate(curve(onto_floor), curve(offline))["reason"] == NOT_CONVERGED
    settled = _claim(region=("<", 0.0), margin=0.01, saturation_tol=0.01)
    r = settled.evaluate(curve(onto_floor), curve(offline), floor=floor)
    assert r["verdict"] == REPRODUCED and r["convergence"]["converged"]


def test_pooled_groups_of_derived_arms():
    from distillbook.core.claims import derived

    pooled = _claim(margin=0.01, pooled="the paper reports the mean")
    a = {"x": derived([0.9, 0.91, 0.92], [0.0, 0.0, 0.0]), "y": derived([0.8, 0.82, 0.81], [0.0, 0.05, 0.0])}
    b = {"x": [0.7, 0.7, 0.71], "y": [0.7, 0.69, 0.7]}
    r = pooled.evaluate(a, b)
    assert r["reason"] == NOT_CONVERGED and r["convergence"]["drift_a"] == pytest.approx([0.0, 0.05, 0.0])
    assert r["a"]["mean"] == pytest.approx(np.mean([0.9, 0.91, 0.92, 0.8, 0.82, 0.81]))


def test_diagnosis_text_follows_the_reason():
    rising = [[0.5, 0.55, 0.6, 0.7, 0.8, 0.85, 0.9 + 0.01 * s] for s in range(4)]
    flat = [[0.5, 0.79, 0.80, 0.80, 0.80, 0.80, 0.80, 0.80 + 0.001 * s] for s in range(4)]
    c = _claim(id="moving", margin=0.01, explanation="soft targets carry little here")
    text = diagnosis_markdown([c.evaluate(curve(rising), curve(flat))])
    assert "still moving" in text and "on the paper's side" in text and "untested explanation" in text


def test_a_still_moving_curve_can_reproduce_a_claim_about_its_movement_but_not_refute_it():
    from distillbook.core.claims import derived

    shape = _claim(statistic="value", b=None, margin=0.05, movement_is_the_claim="a turn-up is a rising end")
    rising = [0.05, 0.04, 0.06]  # drifts above the tolerance: still rising
    assert shape.evaluate(derived([0.20, 0.22, 0.21], rising))["verdict"] == REPRODUCED
    r = shape.evaluate(derived([0.01, 0.02, 0.015], rising))
    assert (r["verdict"], r["reason"]) == (INCONCLUSIVE, NOT_CONVERGED)
    assert shape.evaluate(derived([0.01, 0.02, 0.015], [0.0, 0.001, 0.0]))["verdict"] == NOT_REPRODUCED


def test_an_arm_at_its_ceiling_has_converged():
    climbing_to_one = [[0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0, 1.0 - 0.001 * s] for s in range(4)]
    low = [[0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6 + 0.001 * s] for s in range(4)]
    c = _claim(margin=0.01, ceiling=1.0, saturation_tol=0.005)
    r = c.evaluate(curve(climbing_to_one), curve(low))
    assert r["verdict"] == REPRODUCED and r["convergence"]["converged"]


RESULT_KEYS = {"id", "paper", "reference", "statement", "paper_figure", "paper_value", "statistic", "quantity", "region",
               "region_kind", "region_bound", "margin", "decision_line", "rationale", "measured", "a", "b", "n_seeds", "verdict", "reason",
               "saturation", "convergence", "pooled", "groups", "explanation", "diagnosis", "diagnosis_status"}


def test_the_result_record_is_what_claims_json_documents():
    """The site, the forest plots and the scoreboard read these keys from claims.json."""
    c = _claim(ceiling=1.0, saturation_tol=0.01, margin=0.01, explanation="e", diagnosis="d")
    r = c.evaluate(curve([[0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8]] * 3), [0.7, 0.71, 0.69])
    assert set(r) == RESULT_KEYS
    assert set(r["measured"]) == {"mean", "std", "per_seed", "ci95"}
    assert set(r["a"]) == {"name", "mean", "std", "per_seed"}
    assert set(r["saturation"]) == {"floor", "ceiling", "tol", "reaches", "baseline", "saturated", "why"}
    assert set(r["convergence"]) == {"window", "tol", "drift_a", "drift_b", "settled_a", "settled_b", "converged",
                                     "budget_matched", "movement_is_the_claim"}
    assert r["region_kind"] == ">" and r["region_bound"] == 0.0
    grouped = c.evaluate({"x": [0.9, 0.91, 0.92], "y": [0.9, 0.92, 0.91]}, {"x": [0.7, 0.71, 0.69], "y": [0.7, 0.7, 0.72]})
    assert set(grouped) == RESULT_KEYS
    assert set(grouped["groups"]["x"]) == {"verdict", "reason", "measured", "a", "b"}
    assert grouped["saturation"]["saturated"] is False and grouped["diagnosis_status"] is None
    r = c.evaluate([1.0, 1.0, 0.995], [0.999, 1.0, 1.0])
    assert r["saturation"]["why"].startswith("both arms sit") and "ceiling" in r["saturation"]["why"]
    v = _claim(statistic="value", b=None, margin=0.0, ceiling=1.0, saturation_tol=0.01).evaluate([1.0, 0.999, 1.0])
    assert v["saturation"]["why"].startswith("the measured value sits")


def test_settled_drifts_are_what_the_rule_read():
    """An arm whose tail sits at its ceiling counts as settled: its raw drift is kept, the settled one is 0."""
    c = _claim(ceiling=1.0, saturation_tol=0.01)
    r = c.evaluate(curve([[0.2, 0.4, 0.6, 0.995, 1.0, 1.0]] * 3), [0.7, 0.71, 0.69])
    assert min(r["convergence"]["drift_a"]) > 0.02 and r["convergence"]["settled_a"] == [0.0, 0.0, 0.0]
    assert r["convergence"]["converged"] is True


def test_side_is_the_one_boundary_rule():
    from distillbook.core.claims import ACROSS, INSIDE, OUTSIDE, side

    assert side((0.2, 0.3), (">", 0.0), 0.1) == INSIDE and side((0.05, 0.1), (">", 0.0), 0.1) == OUTSIDE
    assert side((0.05, 0.2), (">", 0.0), 0.1) == ACROSS and side((-0.3, -0.2), ("<", 0.0), 0.1) == INSIDE
    assert side((-0.01, 0.01), ("within", (-0.02, 0.02))) == INSIDE
    assert side((0.03, 0.05), ("within", (-0.02, 0.02))) == OUTSIDE
