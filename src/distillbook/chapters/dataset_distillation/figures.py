"""The chapter's figures: accuracy against size and against label storage, the distilled images, the matching loss."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from distillbook.chapters.dataset_distillation.claims import EVERY_IPC, LABELS, arms_at, matched_arms
from distillbook.core import claims as claims_lib
from distillbook.core.plotting import mean_std_band
from distillbook.chapters.dataset_distillation.experiment import match_every
from distillbook.core.results import Run
from distillbook.testbeds import digits


def plot_accuracy_vs_ipc(run: Run):
    ipcs = run.params.ipcs
    fig, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    for k, (method, label) in enumerate(LABELS.items()):
        at = [i for i in ipcs if method in arms_at(run, i)]
        if not at:
            continue
        per_seed = np.stack([claims_lib.curve(run.values(f"curve_{method}_ipc{i}")).values() for i in at], axis=1)
        if method in EVERY_IPC:
            mean_std_band(ax, at, 100 * per_seed, label=label, color=f"C{k}")
        else:  # run at the largest IPC only
            ax.errorbar(at, 100 * per_seed.mean(0), yerr=100 * per_seed.std(0, ddof=1), fmt="o", capsize=3,
                        color=f"C{k}", label=label)
    full = 100 * claims_lib.curve(run.values("full_data_curve")).values()
    ax.axhline(full.mean(), color="k", linestyle=":", label="whole training set (hard labels)")
    ax.set_xscale("log")
    ax.set_xticks(ipcs, [str(i) for i in ipcs])
    ax.set_xlabel("images per class (IPC)")
    ax.set_ylabel("test accuracy of fresh networks (%)")
    ax.set_title("Distilled sets: accuracy against size")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_images(shown: dict[str, torch.Tensor], ipc: int, image_shape=(1, *digits.IMAGE_SHAPE), max_classes: int = 10):
    """The first image of the first ``max_classes`` classes for each method at ``ipc``."""
    methods = [m for m in ("random", "mtt", "ast", "sre2l", "infer") if f"{m}-ipc{ipc}" in shown]
    n_classes = min(max_classes, len(shown[f"{methods[0]}-ipc{ipc}"]) // ipc)
    fig, axes = plt.subplots(len(methods), n_classes, figsize=(10, 1.15 * len(methods) + 0.4),
                             layout="constrained", squeeze=False)
    for r, method in enumerate(methods):
        x = shown[f"{method}-ipc{ipc}"]
        for c in range(n_classes):
            ax = axes[r, c]
            image = x[c * ipc].reshape(image_shape)
            if image_shape[0] == 1:
                ax.imshow(image[0], cmap="gray_r")
            else:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel({"ast": "smooth", "sre2l": "SRe2L"}.get(method, method.upper() if method != "random"
                                                                             else "random"), fontsize=9)
            if r == 0:
                ax.set_title(str(c), fontsize=9)
    fig.suptitle(f"Distilled images, first of each of the first {n_classes} classes (IPC {ipc}, one seed)")
    return fig


def plot_matching_loss(run: Run):
    p = run.params
    every = match_every(p)
    fig, axes = plt.subplots(1, len(p.ipcs), figsize=(5 * len(p.ipcs), 3.8), layout="constrained", squeeze=False)
    matched = matched_arms(run)
    for ax, ipc in zip(axes[0], p.ipcs):
        for method, color in (("mtt", "C2"), ("ast", "C3"), ("mtt_augmented_experts", "C4")):
            if (ipc, method) not in matched:
                continue
            curves = run.values(f"match_loss_{method}_ipc{ipc}")
            steps = [every * (i + 1) for i in range(len(curves[0]))]
            mean_std_band(ax, steps, curves, label=LABELS[method], color=color, marker=None)
        ax.set_xlabel("matching iteration")
        ax.set_ylabel("normalised matching loss")
        ax.set_title(f"IPC {ipc}")
        ax.legend(fontsize=8)
    fig.suptitle("Trajectory-matching loss (mean ± std over seeds)")
    return fig


def plot_accuracy_vs_label_bytes(run: Run):
    large = run.params.ipcs[-1]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for k, (method, label) in enumerate(LABELS.items()):
        if method not in arms_at(run, large):
            continue
        acc = 100 * claims_lib.curve(run.values(f"curve_{method}_ipc{large}")).values()
        size = run.values(f"bytes_{method}_ipc{large}")[0]
        ax.errorbar(size, acc.mean(), yerr=acc.std(ddof=1), fmt="o", capsize=3, color=f"C{k}", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("stored label size (bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy against label storage (IPC {large})")
    ax.legend(fontsize=8)
    return fig
