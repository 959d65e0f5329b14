"""The chapter's figures: ``plot_*`` functions returning matplotlib figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from distillbook.chapters.dmd_one_step.claims import few_steps
from distillbook.chapters.dmd_one_step.params import DIGIT_LABELS, TWO_D_LABELS, Params
from distillbook.core.plotting import mean_std_band, reference_band
from distillbook.core.results import Run
from distillbook.testbeds import digits, ring2d

# one colour per method, kept across figures (tab10 indices far apart for the arms compared in one panel)
COLORS = {"dmd": "C1", "dmd2": "C0", "sid": "C2", "sim": "C3", "weak_dmd2": "C0", "weak_dmd2_gan": "C4",
          "vsd": "C0", "sds": "C1", "sid_cfg": "C2", "sid_zero": "C5", "sid_anti": "C3", "sid_anti_mild": "C6"}


def _steps(p: Params, total: int) -> list[int]:
    return [0] + [round(total * (k + 1) / p.eval_points) for k in range(p.eval_points)]


def plot_teacher_nfe(run: Run):
    """Teacher quality against its number of sampling steps, with the exact-score oracle and the data floor."""
    p = run.params
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    nfes = p.teacher_nfes

    def per_seed(name):
        return np.asarray([[s[name.format(n)] for n in nfes] for s in run.per_seed.values()])

    for ax, bed in zip(axes[:2], ("ring", "grid")):
        mean_std_band(ax, nfes, per_seed(bed + "_sw_teacher{}"), label="MLP teacher", color="C0")
        mean_std_band(ax, nfes, per_seed(bed + "_sw_oracle{}"), label="exact-score oracle", color="C2")
        if bed == "ring":
            mean_std_band(ax, nfes, per_seed("ring_sw_weak_teacher{}"),
                          label=f"under-trained teacher ({p.weak_teacher_steps} steps)", color="C3")
        reference_band(ax, run.values(f"{bed}_sw_data"), label="data vs data (floor)", color="k", linestyle=":")
        ax.set_ylabel("sliced Wasserstein to data")
        ax.set_yscale("log")
        ax.set_title(f"{bed}2d")

    def name(n):
        return f"digits_cfid_teacher{n}_w{p.guidance_scale:g}"

    mean_std_band(axes[2], nfes, np.asarray([[s[name(n)] for n in nfes] for s in run.per_seed.values()]),
                  label=f"guided teacher (w={p.guidance_scale:g})", color="C0")
    reference_band(axes[2], run.values("digits_cfid_data"), label="data resample (floor)", color="k", linestyle=":")
    axes[2].set_ylabel("cFID (classifier features)")
    axes[2].set_title("digits")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.set_xlabel("sampling steps (network evaluations)")
        ax.legend(fontsize=8)
    fig.suptitle(f"The teachers with few and many steps ({p.sampler.upper()} sampler; mean ± std over seeds)")
    return fig


def plot_grid_training(run: Run):
    """grid2d: SW, rare modes and recall of DMD and DMD2 along training, against teacher, oracle and floor."""
    p = run.params
    top, few = max(p.teacher_nfes), few_steps(p)
    steps = _steps(p, p.grid_steps)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    for ax, metric, ylabel in ((axes[0], "sw", "sliced Wasserstein to data (log scale)"),
                               (axes[1], "rare", "rare corner modes covered (of 4)"),
                               (axes[2], "recall", "recall (share of data reached)")):
        for arm in ("dmd", "dmd2"):
            mean_std_band(ax, steps, run.values(f"grid_{metric}_curve_{arm}"), label=TWO_D_LABELS[arm],
                          color=COLORS[arm], marker=None)
        reference_band(ax, run.values(f"grid_{metric}_teacher{top}"), label=f"teacher, {top} steps", color="k")
        reference_band(ax, run.values(f"grid_{metric}_teacher{few}_{p.few_step_sampler}"),
                       label=f"teacher, {few} steps ({p.few_step_sampler})", color="0.5", linestyle="--")
        reference_band(ax, run.values(f"grid_{metric}_oracle{top}"), label=f"exact-score oracle, {top} steps",
                       color="C2", linestyle="-.")
        reference_band(ax, run.values(f"grid_{metric}_data"), label="fresh data (floor)", color="k", linestyle=":")
        ax.set_xlabel("generator updates")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.suptitle(f"grid2d: DMD with 1 and with {p.ttur_ratio} fake updates per generator update (EMA generator, "
                 "mean ± std over seeds)")
    return fig


def plot_ring_training(run: Run):
    """ring2d: the GAN arms on the under-trained teacher, and SiD/SIM at two learning rates, along training."""
    p = run.params
    top = max(p.teacher_nfes)
    steps = _steps(p, p.ring_steps)
    # no shared y-axis: a diverged high-rate seed (SW in the hundreds) would flatten the GAN panel
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    for arm in ("weak_dmd2", "weak_dmd2_gan"):
        mean_std_band(axes[0], steps, run.values(f"ring_sw_curve_{arm}"), label=TWO_D_LABELS[arm], color=COLORS[arm],
                      marker=None)
    reference_band(axes[0], run.values(f"ring_sw_weak_teacher{top}"), label=f"under-trained teacher, {top} steps",
                   color="k")
    axes[0].set_title("the GAN term, from an under-trained teacher")
    for arm in ("sid", "sim", "sid_fast", "sim_fast"):
        base = arm.removesuffix("_fast")
        mean_std_band(axes[1], steps, run.values(f"ring_sw_curve_{arm}"),
                      label=TWO_D_LABELS[base] + (f", {p.lr_multiplier:g}x rates" if arm != base else ""),
                      color=COLORS[base], marker=None, linestyle="--" if arm != base else "-")
    reference_band(axes[1], run.values(f"ring_sw_teacher{top}"), label=f"teacher, {top} steps", color="k")
    axes[1].set_title("SiD and SIM at two learning rates (near-oracle teacher)")
    for ax in axes:
        reference_band(ax, run.values("ring_sw_data"), label="fresh data (floor)", color="k", linestyle=":")
        ax.set_xlabel("generator updates")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_ylabel("sliced Wasserstein to data (log scale)")
    fig.suptitle("ring2d: one-step students along training (EMA generator, mean ± std over seeds)")
    return fig


def plot_2d_samples(shown: dict[str, torch.Tensor], mixture: ring2d.Mixture, panels: list[tuple[str, str]],
                    title: str, rare=()):
    panels = [(k, t) for k, t in panels if k in shown]
    cols = (len(panels) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(3 * cols, 6.2), layout="constrained", squeeze=False)
    lim = float(mixture.means.abs().max()) + 1
    for ax, (key, panel_title) in zip(axes.flat, panels):
        x = shown[key][:2000]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color="C0")
        ax.scatter(mixture.means[:, 0], mixture.means[:, 1], s=20, marker="x", color="C3")
        if rare:
            ax.scatter(mixture.means[list(rare), 0], mixture.means[list(rare), 1], s=80, facecolors="none",
                       edgecolors="C1")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def plot_grid_samples(shown: dict[str, torch.Tensor], mixture: ring2d.Mixture, rare, top: int, few: int,
                      few_sampler: str = "dpm"):
    panels = [("data", "data"), (f"teacher{few}_{few_sampler}", f"teacher, {few} steps ({few_sampler})"),
              (f"teacher{top}", f"teacher, {top} steps"),
              ("dmd", TWO_D_LABELS["dmd"]), ("dmd2", TWO_D_LABELS["dmd2"]), ("teacher1", "teacher, 1 step")]
    return plot_2d_samples(shown, mixture, panels, "grid2d samples (first seed, 2,000 points; crosses: mode centres, "
                           "circles: the rare corners)", rare)


def plot_ring_samples(shown: dict[str, torch.Tensor], mixture: ring2d.Mixture, top: int):
    panels = [("data", "data"), (f"teacher{top}", f"teacher, {top} steps"),
              (f"weak_teacher{top}", f"under-trained teacher, {top} steps"), ("weak_dmd2", "DMD2, under-trained teacher"),
              ("weak_dmd2_gan", "DMD2 + GAN, under-trained teacher"), ("sid", "SiD"), ("sim", "SIM"),
              ("sim_fast", "SIM, fast")]
    return plot_2d_samples(shown, mixture, panels, "ring2d samples (first seed, 2,000 points; crosses: mode centres)")


def plot_digits_quality(run: Run):
    """cFID against recall for every digits student and the teacher, and recall along training."""
    p = run.params
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    top, w = max(p.teacher_nfes), p.guidance_scale
    teachers = [(f"teacher{top}_w{w:g}", f"teacher, {top} steps, w={w:g}", "k", "s"),
                (f"teacher{top}_w1", f"teacher, {top} steps, w=1", "0.5", "s"),
                (f"teacher{few_steps(p)}_w{w:g}", f"teacher, {few_steps(p)} steps, w={w:g}", "0.7", "D")]
    points = teachers + [(k, v, COLORS[k], "o") for k, v in DIGIT_LABELS.items()]
    for name, label, color, marker in points:
        recall, fid = np.asarray(run.values(f"digits_recall_{name}")), np.asarray(run.values(f"digits_cfid_{name}"))
        axes[0].errorbar(recall.mean(), fid.mean(), xerr=recall.std(ddof=1), yerr=fid.std(ddof=1), fmt=marker,
                         capsize=3, color=color, label=label)
    axes[0].set_xlabel("recall (share of real digits covered)")
    axes[0].set_ylabel("cFID (lower is better)")
    axes[0].set_yscale("log")
    axes[0].set_title("Quality against diversity (final)")
    axes[0].legend(fontsize=7)
    steps = _steps(p, p.digits_steps)
    for ax, metric, ylabel in ((axes[1], "cfid", "cFID (log scale)"), (axes[2], "recall", "recall")):
        for name, label in DIGIT_LABELS.items():
            mean_std_band(ax, steps, run.values(f"digits_{metric}_curve_{name}"), label=label, color=COLORS[name],
                          marker=None)
        reference_band(ax, run.values(f"digits_{metric}_teacher{top}_w{w:g}"), label=f"teacher, {top} steps, w={w:g}",
                       color="k")
        ax.set_xlabel("generator updates")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    axes[1].set_title("cFID along training (EMA generator)")
    axes[2].set_title("recall along training")
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
    """Last-window SW per seed at the default and the high learning rates (strip plot)."""
    import pandas as pd
    import seaborn as sns

    from distillbook.core import claims as claims_lib

    p = run.params
    rows = [{"method": TWO_D_LABELS[arm], "learning rates": rate, "SW": value}
            for arm in ("sid", "sim")
            for rate, suffix in (("default", ""), (f"{p.lr_multiplier:g}x", "_fast"))
            for value in claims_lib.curve(run.values(f"ring_sw_curve_{arm}{suffix}")).values()]
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    sns.stripplot(pd.DataFrame(rows), x="method", y="SW", hue="learning rates", dodge=True, size=7, ax=ax)
    ax.set_ylabel(f"SW to data (last {claims_lib.WINDOW} evaluations, log scale)")
    ax.set_yscale("log")
    ax.set_xlabel("")
    ax.set_title("ring2d: robustness to the learning rate (one dot per seed)")
    return fig
