"""The chapter's figures: soft targets, accuracy against temperature, learning curves, omitted digit."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from distillbook.chapters.foundations.claims import ACC_MARGIN, curve_arms
from distillbook.chapters.foundations.experiment import omit_arms, soft_name
from distillbook.core import claims as claims_lib
from distillbook.core.plotting import mean_std_band
from distillbook.core.results import Run
from distillbook.methods.kd import soft_targets
from distillbook.models.mlp import predict_logits
from distillbook.testbeds import digits


def plot_gain_vs_temperature(run: Run):
    """What soft targets add to every training label: each student's tail test accuracy with soft targets at T
    minus the same student's on the labels alone, paired by seed (mean ± std over seeds), with the margin."""
    p = run.params
    fig, ax = plt.subplots(figsize=(7, 4.8), layout="constrained")

    def gain(group, temperatures):
        hard = np.asarray(run.values(f"{group}_hard_test_acc"))
        return 100 * np.stack([np.asarray(run.values(f"{group}_{soft_name(t)}_test_acc")) - hard
                               for t in temperatures], axis=1)

    wide, small = "×".join(map(str, p.wide_hidden)), "×".join(map(str, p.small_hidden))
    mean_std_band(ax, p.wide_temperatures(), gain("wide", p.wide_temperatures()), label=f"{wide} student", color="C0")
    mean_std_band(ax, p.temperatures, gain("small", p.temperatures), label=f"{small} student", color="C1", marker="s")
    for group, name, color in (("wide", wide, "C0"), ("small", small, "C1")):
        lead = 100 * (np.asarray(run.values("teacher_test_acc")) - np.asarray(run.values(f"{group}_hard_test_acc")))
        ax.axhline(lead.mean(), color=color, linestyle=":", label=f"teacher's lead over the {name} student alone")
    ax.axhline(0, color="0.3", linewidth=1)
    ax.axhline(100 * ACC_MARGIN, color="0.5", linestyle="--", linewidth=1,
               label="margin (a claim needs its whole interval above it)")
    ticks = sorted(set(p.temperatures) | set(p.wide_temperatures()))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel("accuracy gain over labels alone (points)")
    ax.set_title("What soft targets add to every training label (paired by seed)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    return fig


def plot_soft_targets(teacher: torch.nn.Module, data: digits.Digits, temperatures=(1.0, 4.0, 16.0),
                      labels=(3, 5, 8)):
    """A few test digits and the teacher's distribution over classes at several temperatures."""
    picks = [int(torch.nonzero(data.test.y == c)[0]) for c in labels]
    logits = predict_logits(teacher, data.test.x[picks])
    n = len(picks)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 5.6), gridspec_kw={"height_ratios": [1, 1.3]})
    for col, (i, z) in enumerate(zip(picks, logits)):
        axes[0, col].imshow(data.test.x[i].reshape(digits.IMAGE_SHAPE), cmap="gray_r")
        axes[0, col].set_title(f"test image, label {int(data.test.y[i])}")
        axes[0, col].axis("off")
        ax = axes[1, col]
        for t in temperatures:
            ax.plot(range(10), soft_targets(z, t).numpy(), marker="o", label=f"T = {t:g}")
        ax.set_yscale("log")
        ax.set_ylim(1e-8, 2)
        ax.set_xticks(range(10))
        ax.set_xlabel("class")
        if col == 0:
            ax.set_ylabel("teacher probability (log scale)")
    handles, names = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(temperatures), bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("The teacher's soft targets: raising T exposes how digits resemble each other")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_learning_curves(run: Run):
    """Test accuracy against training step for every arm the claims read as a curve (mean ± std over seeds),
    one panel per student group; the grey band marks the two windows the convergence check compares."""
    panels = curve_arms(run.params)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.4), layout="constrained")
    for ax, (panel, arms) in zip(axes, panels.items()):
        group = arms[0][1].split("_")[0]
        steps = run.values(f"{group}_curve_steps")[0]
        for k, (label, name) in enumerate(arms):
            mean_std_band(ax, steps, 100 * np.asarray(run.values(name)), label=label, color=f"C{k}", marker=None)
        first = steps[-2 * claims_lib.WINDOW] if len(steps) >= 2 * claims_lib.WINDOW else steps[0]
        ax.axvspan(first, steps[-1], color="0.9", zorder=0)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("student training step")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_ylabel("test accuracy (%)")
    fig.suptitle("Student learning curves (mean ± std over seeds)")
    return fig


def plot_omitted_class(run: Run):
    """Accuracy on the digit the student never saw, raw and after the bias shift: without a teacher, and with
    the teacher's soft targets at each temperature (mean ± std over seeds, one tick per seed)."""
    p = run.params
    arms = omit_arms(p)
    labels = ["no teacher" if a == "omit_labels_only" else f"soft targets, T = {a.removeprefix('omit_T')}" for a in arms]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.arange(len(arms))
    for offset, (name, label, color) in zip((-0.12, 0.12), (("omit_class_raw_acc", "raw", "C1"),
                                                            ("omit_class_adjusted_acc", "after bias shift "
                                                             "(chosen on validation)", "C0"))):
        values = 100 * np.asarray(run.values(name))
        ax.errorbar(x + offset, values.mean(0), yerr=values.std(0, ddof=1) if len(values) > 1 else None, fmt="o",
                    capsize=4, color=color, label=label)
        ax.plot(np.broadcast_to(x + offset, values.shape).T, values.T, "_", color=color, alpha=0.5)
    ax.axhline(10, color="gray", linestyle=":", label="chance (10%)")
    ax.set_xticks(x, labels)
    ax.set_ylim(-3, 103)
    ax.set_ylabel(f"test accuracy on digit {p.omit_class} (%)")
    ax.set_title(f"A student that never saw a {p.omit_class}")
    ax.legend(fontsize=8)
    return fig
