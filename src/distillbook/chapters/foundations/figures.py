"""The chapter's figures: soft targets, accuracy against temperature, learning curves, ablation, omitted digit."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from distillbook.chapters.foundations.claims import at_temperature, curve_arms
from distillbook.chapters.foundations.params import ablation_settings, longest_ablation
from distillbook.core import claims as claims_lib
from distillbook.core.plotting import mean_std_band, reference_band
from distillbook.core.results import Run
from distillbook.methods.kd import soft_targets
from distillbook.models.mlp import predict_logits
from distillbook.testbeds import digits


def plot_accuracy_vs_temperature(run: Run):
    temps = run.params.temperatures
    fig, ax = plt.subplots(figsize=(7, 5.2), layout="constrained")

    def pct(name):
        return 100 * np.asarray(run.values(name))

    reference_band(ax, pct("teacher_test_acc"), label="teacher (all labels)", color="k", linestyle=":")
    reference_band(ax, pct("label_only_test_acc"), label="student, labels only", color="C3")
    reference_band(ax, pct("pseudo_label_test_acc"), label="student, teacher's arg-max labels + unlabelled", color="C4",
                   linestyle="-.")
    mean_std_band(ax, temps, pct("soft_all_test_acc"), label="student, soft targets + unlabelled", color="C0")
    mean_std_band(ax, temps, pct("soft_labelled_test_acc"), label="student, soft targets, labelled only", color="C2",
                  marker="s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(temps, [f"{t:g}" for t in temps])
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Student accuracy vs temperature ({run.params.labelled_per_class} labels per class)")
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
    """Test accuracy against training step for every arm the claims read as a curve (mean ± std over seeds)."""
    p = run.params
    base_steps = run.values("curve_steps")[0]
    longer = longest_ablation(p)
    fig, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    for k, (label, name, t) in enumerate(curve_arms(p)):
        per_seed = run.values(name) if t is None else at_temperature(run, name, t)
        steps = base_steps if name.startswith(("label_only", "pseudo", "soft_")) else \
            run.values(f"ablation_steps{longer}_curve_steps")[0]
        mean_std_band(ax, steps, 100 * np.asarray(per_seed), label=label, color=f"C{k}", marker=None,
                      linestyle="--" if name.startswith("ablation") else "-")
    ax.axvspan(base_steps[-2 * claims_lib.WINDOW] if len(base_steps) >= 2 * claims_lib.WINDOW else base_steps[0],
               base_steps[-1], color="0.9", zorder=0, label="the two windows the convergence check compares")
    ax.set_xlabel("student training step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Student learning curves (mean ± std over seeds)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    return fig


def plot_soft_vs_argmax_ablation(run: Run):
    """Soft targets (T = mnist_temperature) against arg-max labels on the full transfer set, per student setting."""
    import pandas as pd
    import seaborn as sns

    p = run.params
    base = f"{'x'.join(map(str, p.student_hidden))} units, {p.student_steps} steps"
    settings = [(base, run.values("pseudo_label_test_acc"),
                 at_temperature(run, "soft_all_test_acc", p.mnist_temperature))]
    for label, hidden, steps in ablation_settings(p):
        settings.append((f"{'x'.join(map(str, hidden))} units, {steps} steps",
                         run.values(f"ablation_{label}_argmax_test_acc"), run.values(f"ablation_{label}_soft_test_acc")))
    rows = [{"student": name, "targets": arm, "test accuracy (%)": 100 * v}
            for name, hard, soft in settings
            for arm, values in (("teacher's arg-max labels", hard), (f"soft targets, T = {p.mnist_temperature:g}", soft))
            for v in values]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.pointplot(data=pd.DataFrame(rows), x="student", y="test accuracy (%)", hue="targets", errorbar="sd",
                  dodge=0.3, linestyle="none", capsize=0.1, ax=ax)
    ax.set_xlabel("student setting")
    ax.set_title("Soft targets vs arg-max labels on the full transfer set (mean ± std)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_omitted_class(run: Run):
    temps = run.params.temperatures
    fig, ax = plt.subplots(figsize=(7, 4.2))
    k = run.params.omit_class
    mean_std_band(ax, temps, 100 * np.asarray(run.values("omit_class_adjusted_acc")), label="after bias shift (chosen on val)",
                  color="C0")
    mean_std_band(ax, temps, 100 * np.asarray(run.values("omit_class_raw_acc")), label="raw", color="C1", marker="s")
    ax.axhline(10, color="gray", linestyle=":", label="chance (10%)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(temps, [f"{t:g}" for t in temps])
    ax.set_ylim(-3, 103)
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel(f"test accuracy on digit {k} (%)")
    ax.set_title(f"A student that never saw a {k}")
    ax.legend(fontsize=8)
    return fig
