"""The chapter's figures: ``plot_*`` functions returning matplotlib figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from distillbook.chapters.dmd_one_step.params import DIGIT_LABELS, RING_LABELS, Params
from distillbook.core.plotting import mean_std_band, reference_band
from distillbook.core.results import Run
from distillbook.testbeds import digits, ring2d


def _steps(p: Params, total: int) -> list[int]:
    return [0] + [round(total * (k + 1) / p.eval_points) for k in range(p.eval_points)]


def plot_teacher_nfe(run: Run):
    """Teacher quality against its number of sampling steps, on both test beds."""
    p = run.params
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    nfes = p.teacher_nfes
    mean_std_band(axes[0], nfes, np.asarray([[s[f"ring_sw_teacher{n}"] for n in nfes] for s in run.per_seed.values()]),
                  label="MLP teacher", color="C0")
    reference_band(axes[0], run.values("ring_sw_oracle"), label=f"exact score, {max(nfes)} steps", color="C2")
    reference_band(axes[0], run.values("ring_sw_data"), label="data vs data", color="k", linestyle=":")
    axes[0].set_ylabel("sliced Wasserstein to data")
    axes[0].set_title("ring2d")

    def name(n):
        return f"digits_cfid_teacher{n}_w{p.guidance_scale:g}"

    mean_std_band(axes[1], nfes, np.asarray([[s[name(n)] for n in nfes] for s in run.per_seed.values()]),
                  label=f"guided teacher (w={p.guidance_scale:g})", color="C0")
    axes[1].set_ylabel("cFID (classifier features)")
    axes[1].set_title("digits")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.set_xlabel("sampling steps (network evaluations)")
        ax.legend(fontsize=8)
    fig.suptitle(f"The teacher with few steps ({p.sampler.upper()} sampler)")
    return fig


def plot_ring_training(run: Run):
    """SW of each ring2d student's EMA generator along training, with the teacher as reference."""
    p = run.params
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained", sharey=True)
    steps = _steps(p, p.ring_steps)
    top = max(p.teacher_nfes)
    for ax, arms, title in ((axes[0], ["dmd", "dmd2", "dmd2_gan", "sid", "sim"], "default learning rates"),
                            (axes[1], ["dmd_fast", "sid_fast", "sim_fast"], f"{p.lr_multiplier:g}x learning rates")):
        for arm in arms:
            color = f"C{list(RING_LABELS).index(arm.removesuffix('_fast'))}"
            mean_std_band(ax, steps, run.values(f"ring_curve_{arm}"), label=RING_LABELS[arm.removesuffix("_fast")],
                          color=color, marker=None)
        reference_band(ax, run.values(f"ring_sw_teacher{top}"), label=f"teacher, {top} steps", color="k")
        ax.set_xlabel("generator updates")
        ax.set_title(title)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("sliced Wasserstein to data (log scale)")
    fig.suptitle("ring2d: one-step students along training (EMA generator, mean ± std over seeds)")
    return fig


def plot_ring_samples(shown: dict[str, torch.Tensor], mixture: ring2d.Mixture, top: int):
    panels = [("data", "data"), ("teacher1", "teacher, 1 step"), (f"teacher{top}", f"teacher, {top} steps"),
              ("dmd", "DMD, 1 fake update"), ("dmd2", "DMD2 (TTUR)"), ("dmd2_gan", "DMD2 + GAN"),
              ("sid", "SiD"), ("sim", "SIM")]
    panels = [(k, t) for k, t in panels if k in shown]
    fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(12, 6.2), layout="constrained", squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        x = shown[key][:1000]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color="C0")
        ax.scatter(mixture.means[:, 0], mixture.means[:, 1], s=25, marker="x", color="C3")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"ring2d samples (first seed, {min(1000, len(shown['data'])):,} points; crosses: the 8 mode centres)")
    return fig


def plot_digits_quality(run: Run):
    """cFID against recall for every digits student and the teacher (mean ± std over seeds)."""
    p = run.params
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    top, w = max(p.teacher_nfes), p.guidance_scale
    points = [(f"teacher{top}_w{w:g}", f"teacher, {top} steps, w={w:g}"), (f"teacher{top}_w1", f"teacher, {top} steps, w=1"),
              (f"teacher1_w{w:g}", f"teacher, 1 step, w={w:g}")] + list(DIGIT_LABELS.items())
    for k, (name, label) in enumerate(points):
        recall, fid = np.asarray(run.values(f"digits_recall_{name}")), np.asarray(run.values(f"digits_cfid_{name}"))
        marker = "s" if name.startswith("teacher") else "o"
        axes[0].errorbar(recall.mean(), fid.mean(), xerr=recall.std(ddof=1), yerr=fid.std(ddof=1), fmt=marker,
                         capsize=3, color=f"C{k}", label=label)
    axes[0].set_xlabel("recall (share of real digits covered)")
    axes[0].set_ylabel("cFID (lower is better)")
    axes[0].set_yscale("log")
    axes[0].set_title("Quality against diversity")
    axes[0].legend(fontsize=7)
    steps = _steps(p, p.digits_steps)
    for k, (name, label) in enumerate(DIGIT_LABELS.items()):
        mean_std_band(axes[1], steps, run.values(f"digits_curve_{name}"), label=label, color=f"C{k + 3}", marker=None)
    reference_band(axes[1], run.values(f"digits_cfid_teacher{top}_w{w:g}"), label=f"teacher, {top} steps", color="C0")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("generator updates")
    axes[1].set_ylabel("cFID (log scale)")
    axes[1].set_title("Along training (EMA generator)")
    axes[1].legend(fontsize=7)
    fig.suptitle("digits: one-step students against the teacher (mean ± std over seeds)")
    return fig


def plot_digit_samples(shown: dict[str, torch.Tensor], top: int, guidance: float, per_class: int = 3):
    rows = [(f"teacher1_w{guidance:g}", "teacher, 1 step"), (f"teacher{top}_w{guidance:g}", f"teacher, {top} steps")]
    rows += [(k, v.split(" (")[0]) for k, v in DIGIT_LABELS.items()]
    rows = [(k, t) for k, t in rows if k in shown]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 0.42 * len(rows) + 0.6), layout="constrained", squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], rows):
        x = shown[key].clamp(-1, 1)
        labels = torch.arange(len(x)) % digits.N_CLASSES
        picks = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(digits.N_CLASSES)])
        strip = torch.cat([x[i].reshape(8, 8) for i in picks], dim=1)
        ax.imshow(strip, cmap="gray_r", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"digits: {per_class} samples per class 0-9, same noise in every row (first seed)")
    return fig


def plot_learning_rate_robustness(run: Run):
    """Final SW per seed at the default and the high learning rates (strip plot)."""
    import pandas as pd
    import seaborn as sns

    p = run.params
    rows = [{"method": RING_LABELS[arm].split(" (")[0], "learning rates": rate, "SW": value}
            for arm in ("dmd", "sid", "sim")
            for rate, suffix in (("default", ""), (f"{p.lr_multiplier:g}x", "_fast"))
            for value in run.values(f"ring_sw_{arm}{suffix}")]
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    sns.stripplot(pd.DataFrame(rows), x="method", y="SW", hue="learning rates", dodge=True, size=7, ax=ax)
    ax.set_ylabel("final sliced Wasserstein to data")
    ax.set_xlabel("")
    ax.set_title("ring2d: robustness to the learning rate (one dot per seed)")
    return fig
