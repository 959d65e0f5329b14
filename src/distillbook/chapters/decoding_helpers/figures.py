"""The chapter's figures, drawn from the recorded per-seed numbers."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from distillbook.core.results import Run

from .claims import PAPER_ANSWER, PAPER_STEPS
from .experiment import BLOCK_ARMS, DRAFT_ARMS


def _bars(ax, run: Run, names: list[str], labels: list[str], ylabel: str, title: str, scale: float = 1.0):
    values = [scale * np.asarray(run.values(n), dtype=float) for n in names]
    ax.bar(range(len(names)), [x.mean() for x in values], yerr=[x.std(ddof=1) if len(x) > 1 else 0 for x in values],
           capsize=4, color=[f"C{i}" for i in range(len(names))])
    for i, x in enumerate(values):
        ax.scatter(np.full(len(x), i), x, color="k", s=10, zorder=3)
    ax.set_xticks(range(len(names)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def plot_distillspec(run: Run):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    arms = list(DRAFT_ARMS)
    labels = [DRAFT_ARMS[a][0] for a in arms]
    _bars(axes[0], run, [f"alpha_{a}" for a in arms], labels, "acceptance rate alpha", "Draft acceptance rate")
    lo = min(np.min(run.values(f"alpha_{a}")) for a in arms)
    axes[0].set_ylim(max(0, lo - 0.05), 1)
    for i, a in enumerate(arms):
        if a not in BLOCK_ARMS:
            continue
        measured, analytic = run.values(f"block_measured_{a}"), run.values(f"block_analytic_{a}")
        axes[1].scatter(analytic, measured, color=f"C{i}", label=DRAFT_ARMS[a][0])
    lims = axes[1].get_xlim()
    axes[1].plot(lims, lims, "k--", lw=1, label="measured = analytic")
    axes[1].set_xlabel(f"analytic block efficiency (gamma = {run.params.gamma})")
    axes[1].set_ylabel("measured tokens per target call")
    axes[1].set_title("Speculative sampling: formula against measurement (one dot per seed)")
    axes[1].legend(fontsize=7)
    fig.suptitle("DistillSpec: distilled drafts (mean ± std over seeds, dots: seeds)")
    return fig


def plot_swiftkv(run: Run):
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    ratio = float(np.mean(run.values("kv_prefill_flops_ratio")))
    for i, (name, label, flops) in enumerate((("base", "base model", 1.0), ("rewired", "rewired (no training)", ratio),
                                              ("distilled", "rewired + distilled q/k/v", ratio))):
        y = 100 * np.asarray(run.values(f"kv_agree_{name}"))
        ax.errorbar(100 * flops, y.mean(), yerr=y.std(ddof=1), fmt="o", capsize=4, color=f"C{i}", label=label)
    ax.set_xlabel("prefill FLOPs (% of the base model)")
    ax.set_ylabel("agreement with the oracle's next token (%)")
    ax.set_title(f"SwiftKV, k = {run.params.kv_k} of {run.params.kv_layers} layers")
    ax.legend(fontsize=8)
    return fig


def plot_dparallel(run: Run):
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    p = run.params
    base = np.asarray(run.values("dp_steps_base"))
    for i, (name, label) in enumerate((("ce", "CE only"), ("dparallel", "CE + entropy (dParallel)"))):
        curves = np.asarray(run.values(f"dp_steps_curve_{name}"))
        x = np.linspace(0, p.dp_tune_steps, curves.shape[1] + 1)[1:]
        ax.plot(x, curves.T, color=f"C{i}", lw=0.8, alpha=0.5)
        ax.plot(x, curves.mean(0), color=f"C{i}", lw=2, label=label)
    ax.axhline(base.mean(), color="k", ls=":", label="base (before fine-tuning)")
    ax.axhline(1 + (PAPER_STEPS - 1) / (PAPER_ANSWER - 1) * (p.dp_digits - 1), color="C3", ls="--", label="the paper's share of the answer length")
    ax.set_xlabel("fine-tuning steps")
    ax.set_ylabel(f"decoding steps per answer ({p.dp_digits} tokens)")
    ax.set_title(f"dParallel: threshold decoding at tau = {p.dp_tau:g} (thin: seeds)")
    ax.legend(fontsize=8)
    return fig


def plot_decog(run: Run):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    names = ["prompt", "hard", "decog_answers", "decog"]
    labels = ["prompting (LM alone)", "hard DFA masking", "Deco-G, answer-only HMM", "Deco-G, prompt-aware HMM"]
    _bars(axes[0], run, [f"dg_compliance_{n}" for n in names], labels, "format compliance (%)", "Compliance", 100)
    _bars(axes[1], run, [f"dg_accuracy_{n}" for n in names], labels, "correct answers (%)", "Accuracy", 100)
    fig.suptitle("Deco-G: format-constrained decoding (mean ± std over seeds, dots: seeds)")
    return fig
