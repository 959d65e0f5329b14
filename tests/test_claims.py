"""The verdict rule on synthetic numbers, its interval against scipy, and why it is a t-interval."""

import numpy as np
import pytest
from scipy import stats

from distillbook.claims import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, markdown_table, rise_then_fall,
                                t_interval, verdict)

BEATS = Claim("a-beats-b", 1, "A beats B", a="A", b="B")


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
    # Large seed-to-seed spread but a constant paired gain: the paired interval sees it.
    b = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    assert BEATS.evaluate(b + 0.01, b)["verdict"] == REPRODUCED


def test_too_few_seeds_is_inconclusive():
    assert BEATS.evaluate([0.9, 0.95], [0.1, 0.2])["verdict"] == INCONCLUSIVE


def test_within_region_and_ratio():
    about_equal = Claim("eq", 2, "A matches B", a="A", b="B", region=("within", (-0.01, 0.01)))
    assert about_equal.evaluate([0.800, 0.801, 0.799, 0.800], [0.800, 0.800, 0.800, 0.801])["verdict"] == REPRODUCED
    assert about_equal.evaluate([0.90, 0.91, 0.92, 0.90], [0.80, 0.80, 0.80, 0.80])["verdict"] == NOT_REPRODUCED
    at_most = Claim("ratio", 3, "A costs at most 1.5x B", a="A", b="B", statistic="ratio", region=("<", 1.5))
    assert at_most.evaluate([1.2, 1.3, 1.25], [1.0, 1.0, 1.0])["verdict"] == REPRODUCED
    assert at_most.evaluate([2.2, 2.3, 2.25], [1.0, 1.0, 1.0])["verdict"] == NOT_REPRODUCED


def test_value_claim_needs_no_b():
    above_half = Claim("v", None, "most are recognised", a="acc", statistic="value", region=(">", 0.5))
    assert above_half.evaluate([0.9, 0.85, 0.95])["verdict"] == REPRODUCED
    with pytest.raises(ValueError, match="no b"):
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
        Claim("x", 1, "s", a="A", statistic="difference")
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
    claim = Claim("peak", None, "rises then falls", a="peak height", statistic="value", region=(">", 0.0))
    verdicts = [claim.evaluate(rise_then_fall(rng.normal(size=(5, 8))))["verdict"] for _ in range(400)]
    assert verdicts.count(REPRODUCED) / len(verdicts) < 0.05


def test_markdown_table_lists_every_claim():
    rows = [BEATS.evaluate([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])]
    table = markdown_table(rows)
    assert "a-beats-b" in table and "reproduced" in table and table.count("\n") == 2


def test_mean_std_text_and_derived_seeds():
    import torch

    from distillbook.claims import mean_std_text
    from distillbook.runtime import derived_generator, derived_seed

    assert mean_std_text([1.0, 2.0, 3.0]) == "2 ± 1"
    assert mean_std_text([0.5]) == "0.5"
    # the seeds every chapter derives: numpy's SeedSequence, so reruns before and after the refactor agree
    assert derived_seed(3, 11, 16) == int(np.random.SeedSequence([3, 11, 16]).generate_state(1)[0])
    assert len({derived_seed(s, k) for s in range(20) for k in range(20)}) == 400
    assert torch.equal(torch.rand(3, generator=derived_generator(1, 2)), torch.rand(3, generator=derived_generator(1, 2)))
