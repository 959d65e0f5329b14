"""The book's figure style and the plots every chapter uses.

Used by: ``foundations``, ``lm-kd-dynamics``, ``dataset-distillation``, ``dmd-one-step``.
"""

from __future__ import annotations

from collections.abc import Sequence

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
