"""Paper claims as falsifiable comparisons over seeds, and the one verdict rule.

A :class:`Claim` names a per-seed *statistic* and the *region* the paper says
it lies in:

- ``difference``: d_s = a_s - b_s (paired by seed);
- ``ratio``:      d_s = (a_s - f) / (b_s - f), with f the metric's floor (0 if it has none);
- ``value``:      d_s = a_s (e.g. a statistic the chapter computed per seed).

The region is ``> t``, ``< t`` or ``within [lo, hi]``, and every claim states
a **margin** δ ≥ 0, the smallest effect worth reporting, fixed before the run,
with its ``rationale`` (a bare "> 0" must say why zero is the meaningful line).

**The verdict rule** (used by every chapter). Take the seed-level statistics
d_1..d_n and the paired Student-t 95% interval of their mean,

    mean(d) ± t_{0.975, n-1} * std(d) / sqrt(n).

The decision line is t + δ for ``>`` and t - δ for ``<`` (a ``within`` region
carries its tolerance in its bounds, so its margin is 0). Then

- ``reproduced`` when the interval lies wholly beyond the decision line (inside the region),
- ``not reproduced`` when it lies wholly on the other side (the effect, if any, is smaller than δ),
- ``inconclusive`` otherwise, with a reason.

Before the interval is read, the experiment itself must be able to decide:

1. **Room to move.** A metric with a floor or ceiling (a data-vs-data
   distance, perfect accuracy) declares it. A comparison whose arms all sit
   within ``saturation_tol`` of the same bound in every seed is
   ``inconclusive`` (saturated). A claim *about* reaching a bound
   (``reaches``) needs a ``baseline`` arm whose 95% interval falls short of
   it by more than the tolerance, or it is saturated too. Ratios use the
   excess over the floor.
2. **Convergence.** An arm read off a training curve is passed as
   :func:`curve` (seeds × evaluations): its value is the mean of the last
   ``window`` evaluations and its drift the relative change of that mean
   against the window before. Any seed drifting more than ``convergence_tol``
   makes the claim ``inconclusive`` (not converged), unless the paper's own
   claim is made at a fixed budget (``budget_matched`` cites where). A seed
   whose tail sits within ``saturation_tol`` of a declared floor or ceiling
   counts as converged: it has reached the bound it was moving towards. A
   claim whose effect *is* the curve's movement (a turn-up at the end) says
   so in ``movement_is_the_claim``: a still-moving arm may then reproduce it,
   but not refute it.
3. **Enough seeds.** Fewer than 3 seeds is ``inconclusive`` (too few seeds).
4. **Claims that can fail.** With 3 or more seeds, a statistic identical in
   every seed (a configuration constant, identical arms, a guarantee by
   construction) is refused with :class:`ClaimError`: it is a fact about the
   set-up, to compute and state in prose. (A ``reaches`` claim is exempt: a
   bound reached in every seed is its point, and its baseline shows the test
   bed can tell.) Below 3 seeds the verdict is "too few seeds" anyway.
5. **Groups.** Arms given as ``{group: values}`` (objects, probes, tasks) get
   a verdict per group; the claim is reproduced only when every group is, not
   reproduced when any group is, inconclusive otherwise. A claim the paper
   makes about the average over its groups says so in ``pooled`` and is judged
   on the per-seed mean over groups, the per-group verdicts shown beside it.
6. **Diagnosis.** A claim names the ``explanation`` a chapter gives if it does
   not reproduce and the ``diagnosis`` (a claim id or metric of the chapter)
   whose run tests it; an explanation without one is printed as an
   "untested explanation".

Why t and not a bootstrap: with the 3 to 10 seeds a chapter affords, a
percentile bootstrap interval is too narrow (it covers the true mean about
84% of the time at n = 5 instead of 95%), which would call claims reproduced
too easily; the t-interval keeps its 95% (``tests/test_claims.py`` measures
both). Both arms of a difference share the seed, so the interval is paired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Literal

import numpy as np
from scipy import stats

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
TOO_FEW_SEEDS, SPANS, NOT_CONVERGED, SATURATED = ("too few seeds", "interval spans the region", "not converged",
                                                  "saturated")
REASONS = (TOO_FEW_SEEDS, SPANS, NOT_CONVERGED, SATURATED)
MIN_SEEDS = 3
CONFIDENCE = 0.95
WINDOW = 3
CONVERGENCE_TOL = 0.02  # default: a tail mean that moves by more than 2% against the window before


class ClaimError(ValueError):
    """A claim that cannot be stated or measured as given (the message names the claim)."""


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean: mean ± t_{(1+c)/2, n-1} * s / sqrt(n) (a point for n = 1)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("values must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite, got {x.tolist()}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean
    half = float(stats.t.ppf((1 + confidence) / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean - half, mean + half


def _check_region(region) -> None:
    try:
        kind, bound = region
    except (TypeError, ValueError):
        raise ValueError(f"region must be ('>', t), ('<', t) or ('within', (lo, hi)), got {region!r}") from None
    if kind in (">", "<"):
        if not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ValueError(f"region bound must be a finite number, got {bound!r}")
    elif kind == "within":
        try:
            lo, hi = bound
        except (TypeError, ValueError):
            raise ValueError(f"a 'within' region needs (lo, hi), got {bound!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"region bounds must be finite, got ({lo}, {hi})")
        if not lo < hi:
            raise ValueError(f"a 'within' region needs lo < hi, got ({lo}, {hi})")
    else:
        raise ValueError(f"region kind must be '>', '<' or 'within', got {kind!r}")


def decision_line(region, margin: float = 0.0) -> float | tuple[float, float]:
    """Where the verdict is decided: t + δ for '>', t - δ for '<', the bounds for 'within'."""
    kind, bound = region
    return bound + margin if kind == ">" else bound - margin if kind == "<" else tuple(bound)


def verdict(interval: tuple[float, float], region: tuple[str, float | tuple[float, float]], n_seeds: int,
            margin: float = 0.0) -> str:
    """Apply the interval rule of the module docstring (margin included) to an interval and a region.

    Boundaries: an interval touching the decision line is not inside the
    region (">": lo must exceed it) but is outside it ("<=" the line counts
    as outside); a 'within' region is closed on both ends.
    """
    _check_region(region)
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    lo, hi = interval
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"interval must be finite with lo <= hi, got {interval}")
    if n_seeds < MIN_SEEDS:
        return INCONCLUSIVE
    where = side(interval, region, margin)
    return REPRODUCED if where == INSIDE else NOT_REPRODUCED if where == OUTSIDE else INCONCLUSIVE


INSIDE, OUTSIDE, ACROSS = "inside", "outside", "across"


def side(interval: tuple[float, float], region, margin: float = 0.0) -> str:
    """Where an interval lies against a region's decision line: ``inside`` (wholly beyond it, in the region),
    ``outside`` (wholly on the other side) or ``across``. The one place the boundaries are decided (see
    :func:`verdict`)."""
    lo, hi = interval
    kind, _ = region
    line = decision_line(region, margin)
    if kind == ">":
        inside, outside = lo > line, hi <= line
    elif kind == "<":
        inside, outside = hi < line, lo >= line
    else:
        a, b = line
        inside, outside = (a <= lo and hi <= b), (hi < a or lo > b)
    return INSIDE if inside else OUTSIDE if outside else ACROSS


# ----------------------------------------------------------------------------------------------- convergence

def tail_mean(values: Sequence[float], window: int = WINDOW) -> float:
    """Mean of the last ``window`` evaluations of a curve (the value a claim reads, never the last point)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size < window:
        raise ValueError(f"a curve needs at least window={window} evaluations, got {x.size}")
    return float(x[-window:].mean())


def relative_change(values: Sequence[float], window: int = WINDOW) -> float:
    """|mean(last window) - mean(window before)| / |mean(last window)|: how much the curve still moves."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size < 2 * window:
        raise ValueError(f"convergence needs at least 2 * window = {2 * window} evaluations, got {x.size}")
    last, before = x[-window:].mean(), x[-2 * window:-window].mean()
    return float(abs(last - before) / max(abs(last), 1e-12))


@dataclass(frozen=True)
class Curves:
    """Per-seed curves (seeds × evaluations) of one arm: the claim reads their tail and checks their drift."""

    per_seed: Sequence[Sequence[float]]
    window: int = WINDOW

    def values(self) -> np.ndarray:
        return np.array([tail_mean(c, self.window) for c in self.per_seed])

    def drift(self) -> np.ndarray:
        return np.array([relative_change(c, self.window) for c in self.per_seed])


@dataclass(frozen=True)
class CurveDifference(Curves):
    """An arm that is the difference of two curves per seed (e.g. SW at a high learning rate minus SW at the
    default): its value is tail(a) - tail(b), and its drift the larger of the two curves' own drifts (the
    relative change of a difference near zero would be ill-posed)."""

    minus: Sequence[Sequence[float]] = ()

    def values(self) -> np.ndarray:
        return np.array([tail_mean(a, self.window) - tail_mean(b, self.window)
                         for a, b in zip(self.per_seed, self.minus, strict=True)])

    def drift(self) -> np.ndarray:
        return np.array([max(relative_change(a, self.window), relative_change(b, self.window))
                         for a, b in zip(self.per_seed, self.minus, strict=True)])


def curve_difference(curves_a: Sequence[Sequence[float]], curves_b: Sequence[Sequence[float]],
                     window: int = WINDOW) -> CurveDifference:
    """Mark an arm as the per-seed difference of two curves' tails (see :class:`CurveDifference`)."""
    if len(curves_a) != len(curves_b):
        raise ValueError(f"curve_difference needs one curve per seed in each, got {len(curves_a)} and {len(curves_b)}")
    return CurveDifference([list(map(float, c)) for c in curves_a], window, [list(map(float, c)) for c in curves_b])


@dataclass(frozen=True)
class Derived(Curves):
    """An arm whose value is not its own curve's tail but whose convergence is read from curves (e.g. a
    weight-averaged model's accuracy, judged by the drift of the live model it averages)."""

    value: Sequence[float] = ()
    drifts: Sequence[float] = ()

    def values(self) -> np.ndarray:
        return np.asarray(self.value, dtype=float)

    def drift(self) -> np.ndarray:
        return np.asarray(self.drifts, dtype=float)


def derived(values: Sequence[float], drifts: Sequence[float], window: int = WINDOW) -> Derived:
    """Mark an arm as per-seed values with the per-seed drifts of the curves they come from."""
    if len(values) != len(drifts):
        raise ValueError(f"derived needs one drift per value, got {len(values)} and {len(drifts)}")
    return Derived((), window, tuple(map(float, values)), tuple(map(float, drifts)))


def curve(per_seed: Sequence[Sequence[float]], window: int = WINDOW) -> Curves:
    """Mark an arm as read off training curves (see the module docstring, rule 2)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return Curves([list(map(float, c)) for c in per_seed], window)


Arm = Sequence[float] | Curves
Grouped = Mapping[str, Arm]


# ----------------------------------------------------------------------------------------------- the claim

@dataclass(frozen=True)
class Claim:
    """One paper claim, stated so that measured numbers can refute it.

    ``paper`` is the paper's number in ``papers.tsv`` (``None`` for the classic
    papers of the foundations chapter, which ``reference`` names instead).
    ``a``/``b`` name the measured quantities; ``statistic``, ``region`` and
    ``margin`` say what the paper claims about them and what effect is worth
    reporting; the other fields carry the rules of the module docstring.
    """

    id: str
    paper: int | None
    statement: str
    _: KW_ONLY
    a: str
    margin: float
    rationale: str
    b: str | None = None
    statistic: Literal["difference", "ratio", "value"] = "difference"
    region: tuple[str, float | tuple[float, float]] = (">", 0.0)
    paper_figure: str | None = None
    paper_value: str | float | None = None
    reference: str | None = None
    floor: float | None = None
    ceiling: float | None = None
    saturation_tol: float = 0.0
    reaches: Literal["floor", "ceiling"] | None = None
    convergence_tol: float = CONVERGENCE_TOL
    budget_matched: str | None = None
    movement_is_the_claim: str | None = None
    pooled: str | None = None
    explanation: str | None = None
    diagnosis: str | None = None

    def __post_init__(self):
        def fail(msg):
            raise ClaimError(f"claim {self.id}: {msg}")

        if self.statistic not in ("difference", "ratio", "value"):
            fail("statistic must be difference, ratio or value")
        if (self.statistic == "value") != (self.b is None):
            fail("'value' takes only a, the others need a and b")
        try:
            _check_region(self.region)
        except ValueError as e:
            fail(str(e))
        if not isinstance(self.margin, (int, float)) or not math.isfinite(self.margin) or self.margin < 0:
            fail(f"margin must be a finite number >= 0, got {self.margin!r}")
        if self.region[0] == "within" and self.margin != 0:
            fail("a 'within' region carries its tolerance in its bounds: margin must be 0")
        if not isinstance(self.rationale, str) or not self.rationale.strip():
            fail("rationale must say why the margin (or zero) is the meaningful line")
        for name in ("floor", "ceiling"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v)):
                fail(f"{name} must be a finite number or None, got {v!r}")
        if self.floor is not None and self.ceiling is not None and not self.floor < self.ceiling:
            fail(f"floor must be below ceiling, got {self.floor} and {self.ceiling}")
        if not math.isfinite(self.saturation_tol) or self.saturation_tol < 0:
            fail(f"saturation_tol must be a finite number >= 0, got {self.saturation_tol}")
        if self.reaches not in (None, "floor", "ceiling"):
            fail(f"reaches must be 'floor', 'ceiling' or None, got {self.reaches!r}")
        if not math.isfinite(self.convergence_tol) or self.convergence_tol <= 0:
            fail(f"convergence_tol must be a finite number > 0, got {self.convergence_tol}")
        for name in ("budget_matched", "movement_is_the_claim", "pooled", "explanation", "diagnosis"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                fail(f"{name} must be a non-empty string or None")

    # ---------------------------------------------------------------------------------------- evaluation

    def evaluate(self, a: Arm | Grouped, b: Arm | Grouped | None = None, *,
                 floor: float | Sequence[float] | None = None, ceiling: float | Sequence[float] | None = None,
                 baseline: Arm | Grouped | None = None) -> dict:
        """Measure the claim on per-seed values (same seed order in ``a``, ``b`` and ``baseline``).

        ``a``/``b`` are per-seed values, :func:`curve` s, or ``{group: either}``.
        ``floor``/``ceiling`` override the claim's constants with measured
        (per-seed) bounds; ``baseline`` is the arm that must fall short of the
        bound a ``reaches`` claim is about.
        """
        if self.statistic == "value" and b is not None:
            raise ClaimError(f"claim {self.id}: a 'value' claim takes no b")
        if self.statistic != "value" and b is None:
            raise ClaimError(f"claim {self.id}: needs per-seed values for b ({self.b})")
        if self.reaches is not None and baseline is None:
            raise ClaimError(f"claim {self.id}: a claim about reaching the {self.reaches} needs a baseline arm "
                             "that falls short of it")
        if self.reaches is None and baseline is not None:
            raise ClaimError(f"claim {self.id}: baseline is only for claims about reaching a bound (reaches=...)")
        if isinstance(a, Mapping):
            return self._evaluate_groups(a, b, floor, ceiling, baseline)
        if isinstance(b, Mapping) or isinstance(baseline, Mapping):
            raise ClaimError(f"claim {self.id}: give groups for a and b (and baseline) alike")
        return self._evaluate_one(a, b, floor, ceiling, baseline)

    def _evaluate_groups(self, a, b, floor, ceiling, baseline) -> dict:
        names = list(a)
        for other, label in ((b, "b"), (baseline, "baseline")):
            if other is not None and (not isinstance(other, Mapping) or list(other) != names):
                raise ClaimError(f"claim {self.id}: {label} needs the same groups as a, in order: {names}")
        if len(names) < 2:
            raise ClaimError(f"claim {self.id}: groups need at least two names, got {names}")

        def pick(x, g):
            return None if x is None else x[g] if isinstance(x, Mapping) else x

        groups = {g: self._evaluate_one(a[g], pick(b, g), pick(floor, g), pick(ceiling, g), pick(baseline, g))
                  for g in names}
        if self.pooled:
            def mean_arm(x):
                return None if x is None else _mean_over_groups([x[g] for g in names])
            floor_mean = None if floor is None else np.mean([np.asarray(pick(floor, g), float) for g in names], axis=0)
            ceil_mean = None if ceiling is None else np.mean([np.asarray(pick(ceiling, g), float) for g in names], axis=0)
            result = self._evaluate_one(mean_arm(a), mean_arm(b), floor_mean, ceil_mean, mean_arm(baseline))
        else:  # the summary row shows the mean over groups; the verdict comes from the groups' own
            result = self._evaluate_one(_mean_over_groups([a[g] for g in names]),
                                        None if b is None else _mean_over_groups([b[g] for g in names]),
                                        None, None, None, decide=False)
            verdict_, reason, saturated, converged = _combined(list(groups.values()))
            result["verdict"], result["reason"] = verdict_, reason
            result["saturation"]["saturated"], result["convergence"]["converged"] = saturated, converged
        result["groups"] = {g: {k: r[k] for k in ("verdict", "reason", "measured", "a", "b")} for g, r in groups.items()}
        result["diagnosis_status"] = self._diagnosis_status(result["verdict"])
        return result

    def _evaluate_one(self, a, b, floor, ceiling, baseline, decide: bool = True) -> dict:
        a_vals, a_drift, a_curve = _resolve(a)
        b_vals, b_drift, b_curve = _resolve(b) if b is not None else (None, None, None)
        base_vals = _resolve(baseline)[0] if baseline is not None else None
        n = a_vals.size
        for vals, label in ((a_vals, "a"), (b_vals, "b"), (base_vals, "baseline")):
            if vals is None:
                continue
            if vals.shape != a_vals.shape:
                raise ClaimError(f"claim {self.id}: a and {label} need one value per seed each, "
                                 f"got {a_vals.shape} and {vals.shape}")
            if not np.all(np.isfinite(vals)):
                raise ClaimError(f"claim {self.id}: {label} values must be finite, got {vals.tolist()}")
        fl = self._bound(floor, self.floor, n, "floor")
        ce = self._bound(ceiling, self.ceiling, n, "ceiling")

        saturated, why = self._saturation(a_vals, b_vals, base_vals, fl, ce)
        if self.statistic == "difference":
            d = a_vals - b_vals
        elif self.statistic == "ratio":
            zero = fl if fl is not None else np.zeros(n)
            num, den = a_vals - zero, b_vals - zero
            if np.any(den <= 0):
                if fl is None:
                    raise ClaimError(f"claim {self.id}: a ratio needs every denominator ({self.b}) > 0, got "
                                     f"{b_vals.tolist()}")
                saturated, why = True, f"{self.b} is at or below the floor in some seed, so the excess ratio is undefined"
                den = np.where(den <= 0, np.nan, den)
            d = num / den
        else:
            d = a_vals.copy()

        finite = d[np.isfinite(d)]
        interval = t_interval(finite) if finite.size else (math.nan, math.nan)
        if (decide and not saturated and self.reaches is None and n >= MIN_SEEDS and finite.size == n
                and np.ptp(d) == 0):
            raise ClaimError(f"claim {self.id}: the statistic {_quantity(self)} is {d[0]:g} in every seed; a fact "
                             "about the set-up (a configuration constant, identical arms, a guarantee by "
                             "construction) belongs in the prose, computed, not in the claims table")

        settled_a = None if a_drift is None else self._settled(a_drift, a_vals, fl, ce)
        settled_b = None if b_drift is None else self._settled(b_drift, b_vals, fl, ce)
        drifts = [x for x in (settled_a, settled_b) if x is not None]
        converged = None if not drifts else bool(all(np.all(x <= self.convergence_tol) for x in drifts))
        reason = None
        if saturated:
            v, reason = INCONCLUSIVE, SATURATED
        elif n < MIN_SEEDS:
            v, reason = INCONCLUSIVE, TOO_FEW_SEEDS
        else:
            v = verdict(interval, self.region, n, self.margin)
            reason = SPANS if v == INCONCLUSIVE else None
            moving_ok = self.movement_is_the_claim is not None and v == REPRODUCED
            if converged is False and not self.budget_matched and not moving_ok:
                v, reason = INCONCLUSIVE, NOT_CONVERGED
        result = {
            "id": self.id,
            "paper": self.paper,
            "reference": self.reference,
            "statement": self.statement,
            "paper_figure": self.paper_figure,
            "paper_value": self.paper_value,
            "statistic": self.statistic,
            "quantity": _quantity(self, fl is not None and self.statistic == "ratio"),
            "region": region_text(self.region),
            "region_kind": self.region[0],
            "region_bound": _plain_line(self.region[1]),
            "margin": float(self.margin),
            "decision_line": _plain_line(decision_line(self.region, self.margin)),
            "rationale": self.rationale,
            "measured": _measured(d, interval),
            "a": {"name": self.a, **_summary(a_vals)},
            "b": None if b_vals is None else {"name": self.b, **_summary(b_vals)},
            "n_seeds": int(n),
            "verdict": v,
            "reason": reason,
            "saturation": {"floor": None if fl is None else _summary(fl)["mean"],
                           "ceiling": None if ce is None else _summary(ce)["mean"],
                           "tol": float(self.saturation_tol), "reaches": self.reaches,
                           "baseline": None if base_vals is None else _summary(base_vals),
                           "saturated": bool(saturated), "why": why},
            "convergence": {"window": a_curve or b_curve, "tol": float(self.convergence_tol),
                            "drift_a": None if a_drift is None else a_drift.tolist(),
                            "drift_b": None if b_drift is None else b_drift.tolist(),
                            "settled_a": None if settled_a is None else settled_a.tolist(),
                            "settled_b": None if settled_b is None else settled_b.tolist(),
                            "converged": converged, "budget_matched": self.budget_matched,
                            "movement_is_the_claim": self.movement_is_the_claim},
            "pooled": self.pooled,
            "groups": None,
            "explanation": self.explanation,
            "diagnosis": self.diagnosis,
            "diagnosis_status": self._diagnosis_status(v),
        }
        return result

    def _bound(self, given, constant, n, name):
        value = given if given is not None else constant
        if value is None:
            return None
        arr = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy() if np.ndim(value) == 0 else \
            np.asarray(value, dtype=float)
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            raise ClaimError(f"claim {self.id}: {name} must be a finite number or one finite value per seed, "
                             f"got {np.asarray(value).tolist()}")
        return arr

    def _settled(self, drift, values, fl, ce) -> np.ndarray:
        """Per-seed drift, 0 where the arm's tail sits within ``saturation_tol`` of a bound: a curve that has
        reached its floor or ceiling has nowhere further to go (rule 2 reads the rest)."""
        at_bound = np.zeros(values.shape, dtype=bool)
        for bound in (fl, ce):
            if bound is not None:
                at_bound |= np.abs(values - bound) <= self.saturation_tol + 1e-12
        return np.where(at_bound, 0.0, drift)

    def _saturation(self, a, b, base, fl, ce) -> tuple[bool, str | None]:
        tol = self.saturation_tol
        for bound, name in ((fl, "floor"), (ce, "ceiling")):
            if bound is None:
                continue
            if self.reaches == name:
                lo, hi = t_interval(base) if base.size > 1 else (base[0], base[0])
                short = hi < bound.min() - tol if name == "ceiling" else lo > bound.max() + tol
                if not short:
                    return True, (f"the baseline does not fall short of the {name} (its 95% interval "
                                  f"[{lo:.4g}, {hi:.4g}] reaches within {tol:g} of it): the test bed cannot tell the "
                                  "arms apart")
                continue
            arms = [x for x in (a, b) if x is not None]
            if all(np.all(np.abs(x - bound) <= tol + 1e-12) for x in arms):
                which = "both arms sit" if len(arms) == 2 else "the measured value sits"
                return True, f"{which} within {tol:g} of the {name} ({_summary(bound)['mean']:.4g}) in every seed"
        return False, None

    def _diagnosis_status(self, v: str) -> str | None:
        if v == REPRODUCED:
            return None
        if self.diagnosis:
            return f"tested by {self.diagnosis}"
        return "untested explanation" if self.explanation else "no explanation"


def _combined(groups: list[dict]) -> tuple[str, str | None, bool, bool | None]:
    """(verdict, reason, saturated, converged) of a claim judged per group: reproduced only if every group
    reproduces, not reproduced if any group does not, else inconclusive with the first group's reason;
    saturated if all groups are, converged unless some group is not."""
    verdicts = [r["verdict"] for r in groups]
    if all(v == REPRODUCED for v in verdicts):
        v, reason = REPRODUCED, None
    elif NOT_REPRODUCED in verdicts:
        v, reason = NOT_REPRODUCED, None
    else:
        v, reason = INCONCLUSIVE, _first_reason([r["reason"] for r in groups if r["verdict"] == INCONCLUSIVE])
    states = [r["convergence"]["converged"] for r in groups]
    converged = None if all(s is None for s in states) else all(s is not False for s in states)
    return v, reason, all(r["saturation"]["saturated"] for r in groups), converged


def _resolve(arm) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    if isinstance(arm, Curves):
        return arm.values(), arm.drift(), arm.window
    return np.asarray(arm, dtype=float).reshape(-1), None, None


def _mean_over_groups(arms):
    """Per-seed mean over groups (curves averaged point-wise, so the pooled arm keeps a drift)."""
    if all(type(x) is Curves for x in arms):
        stacked = np.mean([np.asarray(x.per_seed, dtype=float) for x in arms], axis=0)
        return Curves(stacked.tolist(), arms[0].window)
    if all(isinstance(x, Curves) for x in arms):  # derived arms: mean value, the worst drift of any group
        return derived(np.mean([x.values() for x in arms], axis=0), np.max([x.drift() for x in arms], axis=0),
                       arms[0].window)
    return np.mean([_resolve(x)[0] for x in arms], axis=0)


def _measured(d: np.ndarray, interval) -> dict:
    """Summary of the per-seed statistic; a seed whose excess ratio is undefined is null (JSON has no NaN)."""
    finite = d[np.isfinite(d)]
    if finite.size == 0:
        return {"mean": None, "std": None, "per_seed": [None] * d.size, "ci95": [None, None]}
    out = _summary(finite)
    out["per_seed"] = [float(v) if np.isfinite(v) else None for v in d]
    out["ci95"] = [float(x) for x in interval]
    return out


def _first_reason(reasons):
    for r in (SATURATED, NOT_CONVERGED, TOO_FEW_SEEDS, SPANS):
        if r in reasons:
            return r
    return SPANS


def _summary(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=float)
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "per_seed": [float(v) for v in x],
    }


def _plain_line(line):
    return [float(x) for x in line] if isinstance(line, tuple) else float(line)


def _quantity(claim: Claim, excess: bool = False) -> str:
    if claim.statistic == "ratio" and excess:
        return f"({claim.a} − floor) / ({claim.b} − floor)"
    return {"difference": f"{claim.a} − {claim.b}", "ratio": f"{claim.a} / {claim.b}", "value": claim.a}[claim.statistic]


def region_text(region, margin: float = 0.0) -> str:
    kind, bound = region
    if kind == "within":
        return f"within [{bound[0]:g}, {bound[1]:g}]"
    return f"{kind} {bound:g}" + (f" by ≥ {margin:g}" if margin else "")


def rise_then_fall(curves: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-seed statistic for "rises then falls" (a peak inside the curve).

    For each seed s, the peak index k_s is the interior arg-max of the *other*
    seeds' mean curve (cross-fitted, so that noise in a seed cannot pick its
    own peak), and d_s = min(c_s[k_s] - c_s[0], c_s[k_s] - c_s[-1]). Positive
    means the seed rose to that peak and fell after it. Negate the curves for
    "falls then rises" (a U-shape). Needs at least 2 seeds.
    """
    c = np.asarray(curves, dtype=float)
    if c.ndim != 2 or c.shape[1] < 3 or c.shape[0] < 2:
        raise ValueError("curves must be (seeds >= 2, points >= 3)")
    out = np.empty(len(c))
    for s in range(len(c)):
        others = np.delete(c, s, axis=0).mean(axis=0)
        k = 1 + int(np.argmax(others[1:-1]))
        out[s] = min(c[s, k] - c[s, 0], c[s, k] - c[s, -1])
    return out


def mean_std_text(values: Sequence[float], digits: int = 3) -> str:
    """'mean ± std' (sample std) of per-seed values to ``digits`` significant digits; the mean alone for one seed."""
    x = np.asarray(values, dtype=float)
    return f"{x.mean():.{digits}g} ± {x.std(ddof=1):.{digits}g}" if len(x) > 1 else f"{x.mean():.{digits}g}"


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}g} ± {std:.2g}"


VERDICT_MARK = {REPRODUCED: "**reproduced**", NOT_REPRODUCED: "**not reproduced**", INCONCLUSIVE: "*inconclusive*"}


def verdict_text(r: dict) -> str:
    """'reproduced', 'not reproduced', or 'inconclusive (reason)'."""
    return r["verdict"] + (f" ({r['reason']})" if r.get("reason") else "")


def claimed_text(r: dict, digits: int = 3) -> str:
    """The claimed region with its margin, e.g. 'A − B > 0 by ≥ 0.01'."""
    symbol = {"difference": "A − B", "ratio": "A / B", "value": "A"}[r["statistic"]]
    if r["statistic"] == "ratio" and "floor" in r.get("quantity", ""):
        symbol = "(A − floor) / (B − floor)"
    margin = r.get("margin") or 0.0
    return f"{symbol} {r['region']}" + (f" by ≥ {margin:.{digits}g}" if margin else "")


def measured_text(r: dict, digits: int = 3) -> str:
    """The measured statistic, 'mean ± std [95% CI]', or 'undefined'."""
    m = r["measured"]
    if m.get("mean") is None or not math.isfinite(m["mean"]):
        return "undefined"
    lo, hi = m["ci95"]
    return f"{format_mean_std(m['mean'], m['std'], digits)} [{lo:.{digits}g}, {hi:.{digits}g}]"


def markdown_table(results: Sequence[dict], digits: int = 3) -> str:
    """The claims table every chapter ends with: claim, paper, paper's figure, ours (A and B), statistic, verdict."""
    rows = ["| claim | paper | paper's figure | ours (mean ± std over seeds) | claimed → measured [95% CI] | verdict |",
            "|---|---|---|---|---|---|"]
    for r in results:
        paper = f"#{r['paper']}" if r["paper"] is not None else (r.get("reference") or "")
        figure = " — ".join(str(x) for x in (r.get("paper_figure"), r.get("paper_value")) if x) or "—"
        ours = f"A = {r['a']['name']}: {format_mean_std(r['a']['mean'], r['a']['std'], digits)}"
        if r.get("b"):
            ours += f"; B = {r['b']['name']}: {format_mean_std(r['b']['mean'], r['b']['std'], digits)}"
        m = r["measured"]
        stat = (f"{claimed_text(r, digits)} → {m['mean']:.{digits}g} [{m['ci95'][0]:.{digits}g}, "
                f"{m['ci95'][1]:.{digits}g}]" if m["mean"] is not None else f"{claimed_text(r, digits)} → undefined")
        mark = VERDICT_MARK[r["verdict"]] + (f" ({r['reason']})" if r.get("reason") else "")
        if r.get("groups"):
            mark += "<br>" + "; ".join(f"{g}: {verdict_text(x)}" for g, x in r["groups"].items())
        conv = r.get("convergence") or {}
        if conv.get("budget_matched"):
            mark += f"<br>at the paper's fixed budget ({conv['budget_matched']})"
        if r.get("pooled"):
            mark += f"<br>pooled over groups: {r['pooled']}"
        rows.append(f"| **{r['id']}**: {r['statement']} | {paper} | {figure} | {ours} | {stat} | {mark} |")
    return "\n".join(rows)


def margins_markdown(results: Sequence[dict]) -> str:
    """Each claim's margin and why it is the smallest effect worth reporting (fixed before the run)."""
    rows = ["| claim | claimed | margin | why this margin |", "|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['id']} | {claimed_text(r)} | {r.get('margin', 0):g} | {r.get('rationale', '')} |")
    return "\n".join(rows)


def _direction(r: dict) -> str:
    """Where a claim's interval lies so far: in the claimed region, against it, or across its decision line."""
    m = r["measured"]
    if m.get("mean") is None:
        return "its statistic is undefined"
    bound = r["region_bound"]
    where = side(m["ci95"], (r["region_kind"], tuple(bound) if r["region_kind"] == "within" else bound), r["margin"])
    return {INSIDE: "so far its interval lies on the paper's side of the decision line",
            OUTSIDE: "so far its interval lies against the paper",
            ACROSS: "so far its interval spans the decision line"}[where]


def diagnosis_markdown(results: Sequence[dict]) -> str:
    """For every claim that did not reproduce: why, and the run that tests the chapter's explanation.

    A not-reproduced claim (or one whose interval spans the region) shows the chapter's explanation and its
    diagnosis; an unconverged or saturated one says so first, since the test bed decided it, not the effect.
    """
    lines = []
    by_id = {r["id"]: r for r in results}
    for r in results:
        if r["verdict"] == REPRODUCED:
            continue
        reason = r.get("reason")
        head = f"- **{r['id']}** — {verdict_text(r)}."
        if reason == NOT_CONVERGED:
            head += (f" An arm was still moving when training stopped ({_direction(r)}): a test-bed defect, "
                     "decided by a longer run, not by the explanation below.")
        elif reason == SATURATED:
            why = (r.get("saturation") or {}).get("why") or "every arm sits at a bound of the metric"
            head += f" {why[0].upper() + why[1:]}: a test-bed defect, decided by a harder test bed."
        elif reason == TOO_FEW_SEEDS:
            head += " Fewer than 3 seeds."
        if r.get("explanation"):
            head += f" Explanation offered: {r['explanation']}"
        if r.get("diagnosis"):
            test = by_id.get(r["diagnosis"])
            tail = (f" Tested by claim **{test['id']}**: {verdict_text(test)}." if test else
                    f" Tested by the metric `{r['diagnosis']}`.")
        elif r.get("explanation"):
            tail = " *(untested explanation: no run in this chapter tests it.)*"
        else:
            tail = " *(no explanation offered.)*"
        lines.append(head + tail)
    return "\n".join(lines) if lines else "Every claim reproduced."


def count_verdicts(results: Sequence[dict]) -> dict[str, int]:
    """Counts per verdict, and of inconclusive verdicts per reason ('inconclusive: saturated', ...), every
    verdict and reason present (zero where none)."""
    out = {v: 0 for v in VERDICTS} | {f"inconclusive: {reason}": 0 for reason in REASONS}
    for r in results:
        out[r["verdict"]] += 1
        if r["verdict"] == INCONCLUSIVE:
            out[f"inconclusive: {r.get('reason') or SPANS}"] += 1
    return out
