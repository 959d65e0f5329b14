"""Every chapter's claims can fail: made-up per-seed numbers, inside each metric's declared floor and ceiling,
reach each of the three verdicts for every claim (issue 13, rule 4).

A claim whose region lies beyond its own metric's bounds, or whose margin leaves no room inside them, fails here.
Each chapter's own tests check the wiring (which recorded metric feeds which arm).
"""

import importlib

import numpy as np
import pytest

from distillbook.core import catalog
from distillbook.core.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, decision_line

SEEDS = 5
PATTERN = np.array([0.0, 1.0, -1.0, 0.5, -0.5])


def _chapter_claims():
    out = []
    for chapter in catalog.CHAPTERS:
        if not chapter.written:
            continue
        module = importlib.import_module(f"distillbook.chapters.{chapter.id.replace('-', '_')}")
        for claim in module.claims(module.Params.for_profile("cpu")):
            out.append(pytest.param(claim, id=f"{chapter.id}:{claim.id}"))
    return out


def _targets(claim: Claim) -> dict[str, np.ndarray]:
    """Per-seed statistics d_s that must give each verdict."""
    line = decision_line(claim.region, claim.margin)
    lo_m = claim.floor if claim.floor is not None else -np.inf  # the metric's own bounds (for the arms)
    hi_m = claim.ceiling if claim.ceiling is not None else np.inf
    if claim.statistic == "value":
        lo_b, hi_b = lo_m, hi_m  # where the statistic d can lie
    elif claim.statistic == "difference":
        lo_b, hi_b = -(hi_m - lo_m), hi_m - lo_m
    else:
        lo_b, hi_b = 0.0, np.inf
    if claim.region[0] == "within":
        a, b = line
        width = b - a
        inside, outside = (a + b) / 2, b + 0.5 * width
        spread = width
    else:
        scale = (hi_b - lo_b) if np.isfinite(hi_b - lo_b) else max(1.0, abs(line))
        sign = 1.0 if claim.region[0] == ">" else -1.0
        room = (hi_b - line) if sign > 0 else (line - lo_b)  # how far the region reaches inside the bounds
        assert room > 0, f"{claim.id}: the claimed region lies beyond the metric's own bound"
        step = min(0.05 * scale, room / 2)
        inside, outside, spread = line + sign * step, line - sign * step, 4 * step
    tiny = 1e-3 * abs(spread)
    centre = (inside + outside) / 2
    if claim.statistic == "value":  # keep the straddling values inside the metric's own bounds
        spread = min(spread, 0.9 * (hi_b - centre), 0.9 * (centre - lo_b))
    return {REPRODUCED: inside + tiny * PATTERN, NOT_REPRODUCED: outside + tiny * PATTERN,
            INCONCLUSIVE: centre + spread * PATTERN}


def _arms(claim: Claim, d: np.ndarray):
    """Arms a (and b) inside the metric's bounds whose statistic is d."""
    lo_b = claim.floor if claim.floor is not None else None
    hi_b = claim.ceiling if claim.ceiling is not None else None
    if claim.statistic == "value":
        return d, None
    if claim.statistic == "ratio":
        base = lo_b if lo_b is not None else 0.0
        room = (hi_b - base) if hi_b is not None else 1.0
        b = np.full(SEEDS, base + 0.3 * room / max(1.0, float(np.max(np.abs(d)))))
        return base + d * (b - base), b
    if lo_b is not None and hi_b is not None:
        b = np.full(SEEDS, (lo_b + hi_b) / 2 - d.mean() / 2)
    elif hi_b is not None:
        b = np.full(SEEDS, hi_b - max(1.0, float(np.max(np.abs(d)))) - 1.0)
    elif lo_b is not None:
        b = np.full(SEEDS, lo_b + max(1.0, float(np.max(np.abs(d)))) + 1.0)
    else:
        b = np.ones(SEEDS)
    return b + d, b


@pytest.mark.parametrize("claim", _chapter_claims())
@pytest.mark.parametrize("expected", [REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE])
def test_every_claim_can_reach_every_verdict(claim, expected):
    d = _targets(claim)[expected]
    a, b = _arms(claim, d)
    for arm in (a, b):
        if arm is None:
            continue
        if claim.floor is not None:
            assert np.all(arm >= claim.floor - 1e-9), f"{claim.id}: {expected} needs values below the floor"
        if claim.ceiling is not None:
            assert np.all(arm <= claim.ceiling + 1e-9), f"{claim.id}: {expected} needs values above the ceiling"
    kwargs = {}
    if claim.reaches is not None:  # a baseline that falls well short of the bound
        bound = claim.ceiling if claim.reaches == "ceiling" else claim.floor
        other = claim.floor if claim.reaches == "ceiling" else claim.ceiling
        short = (bound + other) / 2 if other is not None else bound - np.sign(bound or 1.0) * (abs(bound) + 1.0)
        kwargs["baseline"] = np.full(SEEDS, short)
    r = claim.evaluate(a, b, **kwargs)
    assert r["verdict"] == expected, (claim.id, r["measured"], r["reason"])
