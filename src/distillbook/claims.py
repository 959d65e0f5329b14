"""Paper claims as falsifiable comparisons over seeds, and the one verdict rule.

A :class:`Claim` names a per-seed *statistic* and the *region* the paper says
it lies in:

- ``difference``: d_s = a_s - b_s (paired by seed);
- ``ratio``:      d_s = a_s / b_s;
- ``value``:      d_s = a_s (e.g. a statistic the chapter computed per seed).

The region is ``> t``, ``< t`` or ``within [lo, hi]``.

**The verdict rule** (used by every chapter). Take the seed-level statistics
d_1..d_n and the paired Student-t 95% interval of their mean,

    mean(d) ± t_{0.975, n-1} * std(d) / sqrt(n).

Then

- ``reproduced`` when the interval lies wholly inside the claimed region,
- ``not reproduced`` when it lies wholly outside it,
- ``inconclusive`` otherwise, and always with fewer than 3 seeds.

Why t and not a bootstrap: with the 3 to 10 seeds a chapter affords, a
percentile bootstrap interval is too narrow (it covers the true mean about
84% of the time at n = 5 instead of 95%), which would call claims reproduced
too easily; the t-interval keeps its 95% (``tests/test_claims.py`` measures
both). Both arms of a difference share the seed, so the interval is paired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
MIN_SEEDS = 3
CONFIDENCE = 0.95


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


def verdict(interval: tuple[float, float], region: tuple[str, float | tuple[float, float]], n_seeds: int) -> str:
    """Apply the rule of the module docstring to an interval and a claimed region."""
    lo, hi = interval
    kind, bound = region
    if kind == ">":
        inside, outside = lo > bound, hi <= bound
    elif kind == "<":
        inside, outside = hi < bound, lo >= bound
    elif kind == "within":
        a, b = bound
        inside, outside = (a <= lo and hi <= b), (hi < a or lo > b)
    else:
        raise ValueError(f"region kind must be '>', '<' or 'within', got {kind!r}")
    if n_seeds < MIN_SEEDS:
        return INCONCLUSIVE
    return REPRODUCED if inside else NOT_REPRODUCED if outside else INCONCLUSIVE


@dataclass(frozen=True)
class Claim:
    """One paper claim, stated so that measured numbers can refute it.

    ``paper`` is the paper's number in ``papers.tsv`` (``None`` for the classic
    papers of the foundations chapter, which ``reference`` names instead).
    ``a``/``b`` name the measured quantities; ``statistic`` and ``region``
    say what the paper claims about them (see the module docstring).
    """

    id: str
    paper: int | None
    statement: str
    a: str
    b: str | None = None
    statistic: Literal["difference", "ratio", "value"] = "difference"
    region: tuple[str, float | tuple[float, float]] = (">", 0.0)
    paper_figure: str | None = None
    paper_value: str | float | None = None
    reference: str | None = None

    def __post_init__(self):
        if self.statistic not in ("difference", "ratio", "value"):
            raise ValueError(f"claim {self.id}: statistic must be difference, ratio or value")
        if (self.statistic == "value") != (self.b is None):
            raise ValueError(f"claim {self.id}: 'value' takes only a, the others need a and b")
        verdict((0.0, 0.0), self.region, MIN_SEEDS)  # validates the region

    def evaluate(self, a: Sequence[float], b: Sequence[float] | None = None) -> dict:
        """Measure the claim on per-seed values (same seed order in ``a`` and ``b``)."""
        a_arr = np.asarray(a, dtype=float)
        if self.statistic == "value":
            if b is not None:
                raise ValueError(f"claim {self.id}: a 'value' claim takes no b")
            d = a_arr
        else:
            if b is None:
                raise ValueError(f"claim {self.id}: needs per-seed values for b ({self.b})")
            b_arr = np.asarray(b, dtype=float)
            if a_arr.shape != b_arr.shape:
                raise ValueError(f"claim {self.id}: a and b need one value per seed each, got {a_arr.shape} and {b_arr.shape}")
            d = a_arr - b_arr if self.statistic == "difference" else a_arr / b_arr
        interval = t_interval(d)
        result = {
            "id": self.id,
            "paper": self.paper,
            "reference": self.reference,
            "statement": self.statement,
            "paper_figure": self.paper_figure,
            "paper_value": self.paper_value,
            "statistic": self.statistic,
            "quantity": _quantity(self),
            "region": _region_text(self.region),
            "measured": {**_summary(d), "ci95": list(interval)},
            "a": {"name": self.a, **_summary(a_arr)},
            "b": None if b is None else {"name": self.b, **_summary(np.asarray(b, dtype=float))},
            "n_seeds": int(d.size),
            "verdict": verdict(interval, self.region, int(d.size)),
        }
        return result


def _summary(x: np.ndarray) -> dict:
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "per_seed": [float(v) for v in x],
    }


def _quantity(claim: Claim) -> str:
    return {"difference": f"{claim.a} − {claim.b}", "ratio": f"{claim.a} / {claim.b}", "value": claim.a}[claim.statistic]


def _region_text(region) -> str:
    kind, bound = region
    if kind == "within":
        return f"within [{bound[0]:g}, {bound[1]:g}]"
    return f"{kind} {bound:g}"


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
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}g} ± {std:.2g}"


VERDICT_MARK = {REPRODUCED: "**reproduced**", NOT_REPRODUCED: "**not reproduced**", INCONCLUSIVE: "*inconclusive*"}


def markdown_table(results: Sequence[dict], digits: int = 3) -> str:
    """The claims table every chapter ends with: claim, paper, paper's figure, ours (A and B), statistic, verdict."""
    rows = ["| claim | paper | paper's figure | ours (mean ± std over seeds) | claimed → measured [95% CI] | verdict |",
            "|---|---|---|---|---|---|"]
    symbol = {"difference": "A − B", "ratio": "A / B", "value": "A"}
    for r in results:
        paper = f"#{r['paper']}" if r["paper"] is not None else (r.get("reference") or "")
        figure = " — ".join(str(x) for x in (r.get("paper_figure"), r.get("paper_value")) if x) or "—"
        ours = f"A = {r['a']['name']}: {format_mean_std(r['a']['mean'], r['a']['std'], digits)}"
        if r.get("b"):
            ours += f"; B = {r['b']['name']}: {format_mean_std(r['b']['mean'], r['b']['std'], digits)}"
        m = r["measured"]
        stat = (f"{symbol[r['statistic']]} {r['region']} → {m['mean']:.{digits}g} "
                f"[{m['ci95'][0]:.{digits}g}, {m['ci95'][1]:.{digits}g}]")
        rows.append(f"| **{r['id']}**: {r['statement']} | {paper} | {figure} | {ours} | {stat} | {VERDICT_MARK[r['verdict']]} |")
    return "\n".join(rows)
