"""The book's figure style and the plots every chapter uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

PALETTE = "colorblind"


def set_style() -> None:
    """Seaborn's whitegrid at notebook scale, the colourblind palette, crisp inline figures."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "figure.figsize": (6.4, 4.0),
                         "axes.titleweight": "bold", "legend.frameon": False})
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:
        pass


def mean_std_band(ax, x: Sequence[float], per_seed: Sequence[Sequence[float]], *, label: str,
                  color=None, marker: str | None = "o", linestyle: str = "-"):
    """Plot the seed mean of ``per_seed`` (seeds x points) with a ±1 std band."""
    y = np.asarray(per_seed, dtype=float)
    if y.ndim != 2 or y.shape[1] != len(x):
        raise ValueError(f"per_seed must be (seeds, {len(x)}), got {y.shape}")
    mean = y.mean(axis=0)
    std = y.std(axis=0, ddof=1) if len(y) > 1 else np.zeros_like(mean)
    (line,) = ax.plot(x, mean, marker=marker, linestyle=linestyle, label=f"{label} (n={len(y)})", color=color)
    ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color(), linewidth=0)
    return line


def reference_band(ax, per_seed: Sequence[float], *, label: str, color=None, linestyle: str = "--"):
    """A horizontal line at the seed mean of a scalar, with a ±1 std band."""
    y = np.asarray(per_seed, dtype=float)
    mean, std = y.mean(), (y.std(ddof=1) if len(y) > 1 else 0.0)
    line = ax.axhline(mean, linestyle=linestyle, label=f"{label} (n={len(y)})", color=color)
    ax.axhspan(mean - std, mean + std, alpha=0.15, color=line.get_color(), linewidth=0)
    return line


VERDICT_COLOURS = {"reproduced": "#1b7837", "not reproduced": "#b2182b", "inconclusive": "#8c8c8c"}
REGION_COLOUR = "#4393c3"


def claim_region(r: dict) -> tuple[str, float | tuple[float, float], float | tuple[float, float]]:
    """``(kind, decision line, claimed bound)`` of a claim result: kind is '>', '<' or 'within'."""
    kind, bound, line = r["region_kind"], r["region_bound"], r["decision_line"]
    if kind == "within":
        return kind, (float(line[0]), float(line[1])), (float(bound[0]), float(bound[1]))
    return kind, float(line), float(bound)


def claim_distance(r: dict) -> tuple[float, float, float]:
    """A claim's 95% interval and mean as signed distances from its decision line, ``(lo, mean, hi)``.

    The unit is the seeds' standard deviation of the claim's statistic, so that
    claims about different quantities share one axis; the sign is positive in
    the claimed direction (inside the region). A ``within [a, b]`` claim
    measures the distance to the nearer bound, min(x - a, b - x), so its
    interval maps to [smaller end, largest value over the interval]. The
    verdict reads off the result: reproduced when lo > 0 (≥ 0 for ``within``),
    not reproduced when hi ≤ 0 (< 0 for ``within``). A statistic with zero
    spread sits at ±inf (or 0 on the line); a missing interval gives NaNs.
    """
    kind, line, _ = claim_region(r)
    m = r["measured"]
    if m["mean"] is None or None in m["ci95"]:
        return math.nan, math.nan, math.nan
    lo, hi = (float(x) for x in m["ci95"])
    mean, s = float(m["mean"]), float(m.get("std") or 0.0)
    if not all(math.isfinite(x) for x in (lo, hi, mean)):
        return math.nan, math.nan, math.nan

    def scaled(x: float) -> float:
        if s > 0 and math.isfinite(s):
            return x / s
        return 0.0 if x == 0 else math.copysign(math.inf, x)

    if kind == ">":
        return scaled(lo - line), scaled(mean - line), scaled(hi - line)
    if kind == "<":
        return scaled(line - hi), scaled(line - mean), scaled(line - lo)
    a, b = line

    def inside(x):
        return min(x - a, b - x)

    peak = inside(min(max((a + b) / 2, lo), hi))
    return scaled(min(inside(lo), inside(hi))), scaled(inside(mean)), scaled(peak)


def _verdict_label(r: dict) -> str:
    return r["verdict"] + (f" ({r['reason']})" if r.get("reason") else "")


def forest_plot(results: Sequence[dict], *, title: str | None = None):
    """One row per claim: its per-seed statistics (ticks), 95% interval (bar), claimed region (shaded) and
    decision line (the claimed bound moved by the margin, dashed), coloured by verdict.

    Each row has its own x-axis, since claims measure different quantities.
    """
    results = list(results)
    if not results:
        raise ValueError("forest_plot needs at least one claim result")
    fig, axes = plt.subplots(len(results), 1, figsize=(7.0, 0.9 * len(results) + 0.6), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        m = r["measured"]
        lo, hi = (np.nan if x is None else x for x in m["ci95"])  # None: an excess ratio undefined in every seed
        kind, line, bound = claim_region(r)
        per_seed = np.array([np.nan if x is None else x for x in m["per_seed"]], dtype=float)
        marks = [*line] if kind == "within" else [line, bound]
        span = [v for v in [lo, hi, *per_seed.tolist(), *marks] if np.isfinite(v)]
        left, right = min(span), max(span)
        pad = 0.15 * (right - left or abs(right) or 1.0)
        left, right = left - pad, right + pad
        colour = VERDICT_COLOURS[r["verdict"]]
        if kind == "within":
            ax.axvspan(line[0], line[1], color=REGION_COLOUR, alpha=0.15, linewidth=0)
        else:
            ax.axvspan(*((line, right) if kind == ">" else (left, line)), color=REGION_COLOUR, alpha=0.15,
                       linewidth=0)
            if bound != line:
                ax.axvline(bound, color=REGION_COLOUR, linewidth=0.8)
            ax.axvline(line, color="k", linestyle="--", linewidth=0.8)
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [0, 0], color=colour, linewidth=4, solid_capstyle="butt")
        if m["mean"] is not None and np.isfinite(m["mean"]):
            ax.plot([m["mean"]], [0], "o", color="white", markeredgecolor=colour, markersize=7)
        ax.plot(per_seed, np.full_like(per_seed, 0.35), "|", color=colour, markersize=8)
        ax.set_xlim(left, right)
        ax.set_ylim(-0.6, 0.8)
        ax.set_yticks([])
        ax.set_title(f"{r['id']}: {_verdict_label(r)}", loc="left", fontsize=9, color=colour, fontweight="bold")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", visible=False)
    axes[-1, 0].set_xlabel("claim statistic (each row its own units): 95% interval, seed ticks, "
                           "claimed region shaded, decision line dashed", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def scoreboard_forest(results_by_chapter: Mapping[str, Sequence[dict]], *, title: str | None = None,
                      clip: float = 100.0):
    """Every claim of every chapter on one axis: :func:`claim_distance` of its 95% interval, by verdict.

    One row per claim, grouped under its chapter (the keys, in order). Zero is
    each claim's decision line; right of it is the claimed direction. The axis
    is linear near zero and logarithmic beyond (asinh); distances beyond
    ``clip`` standard deviations, or infinite because the statistic did not
    vary over seeds, end in an arrow at the edge; a statistic without an
    interval (a saturated ratio) is a cross on the line. An inconclusive
    claim's reason other than "interval spans the region" follows its id, as
    does "by group" where the verdict is the groups' (the bar is then the
    mean over groups).
    """
    chapters = [(name, list(results)) for name, results in results_by_chapter.items() if results]
    if not chapters:
        raise ValueError("scoreboard_forest needs at least one chapter with claim results")
    n_rows = sum(len(rs) + 1 for _, rs in chapters)
    fig, ax = plt.subplots(figsize=(7.2, 0.2 * n_rows + 1.6), layout="constrained")
    edge = clip * 1.6
    ax.axvspan(0, edge, color=REGION_COLOUR, alpha=0.12, linewidth=0)
    ax.axvline(0, color="k", linestyle="--", linewidth=0.9)
    y, ticks, labels, colours = n_rows, [], [], []
    for name, results in chapters:
        y -= 1
        ax.axhline(y, color="#bbbbbb", linewidth=0.6)
        ticks.append(y)
        labels.append(name)
        colours.append(("black", "bold"))
        for r in results:
            y -= 1
            colour = VERDICT_COLOURS[r["verdict"]]
            lo, mean, hi = claim_distance(r)
            reason = r.get("reason")
            label = r["id"] + (f" · {reason}" if reason and reason != "interval spans the region" else "")
            if r.get("groups") and not r.get("pooled"):
                label += " · by group"  # the verdict is the groups'; the bar is the mean over groups
            ticks.append(y)
            labels.append(label)
            colours.append((colour, "normal"))
            if math.isnan(mean):
                ax.plot([0], [y], marker="x", color=colour, markersize=6, linestyle="none")
                continue
            a, m, b = (float(np.clip(v, -clip, clip)) for v in (lo, mean, hi))
            ax.plot([a, b], [y, y], color=colour, linewidth=3.2, solid_capstyle="butt")
            ax.plot([m], [y], "o", color="white", markeredgecolor=colour, markeredgewidth=1.3, markersize=5)
            for value, end in ((lo, a), (hi, b)):
                if abs(value) > clip:
                    ax.plot([end], [y], marker=">" if value > 0 else "<", color=colour, markersize=6,
                            linestyle="none")
    ax.set_xscale("asinh", linear_width=2.0)
    steps = [v for v in (1, 3, 10, 30, 100, 300, 1000) if v <= clip]
    xticks = [-v for v in reversed(steps)] + [0] + steps
    ax.set_xticks(xticks, [f"{v:g}" for v in xticks])
    ax.set_xlim(-edge, edge)
    ax.set_ylim(-0.7, n_rows - 0.3)
    ax.set_yticks(ticks, labels)
    for tick, (colour, weight) in zip(ax.get_yticklabels(), colours):
        tick.set_color(colour)
        tick.set_fontweight(weight)
    ax.tick_params(axis="y", labelsize=7.5, length=0)
    ax.tick_params(axis="x", labelsize=8, top=True, labeltop=True)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#e4e4e4", linewidth=0.6)
    ax.set_xlabel("distance of the 95% interval (bar) and mean (dot) from the decision line,\n"
                  "in seed standard deviations of the statistic; positive = in the claimed direction\n"
                  "(axis linear within ±2, logarithmic beyond)", fontsize=8)
    handles = [plt.Line2D([], [], color=c, linewidth=3.2, label=v) for v, c in VERDICT_COLOURS.items()]
    handles.append(plt.Line2D([], [], color="k", linestyle="--", linewidth=0.9, label="decision line"))
    fig.legend(handles=handles, loc="outside upper center", ncol=4, fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return fig
