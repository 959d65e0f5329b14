"""The chapter's figures: the divergence zoo, teacher hacking, the capacity gap, cross-tokenizer students."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from distillbook.chapters.lm_kd_dynamics.claims import arm_label
from distillbook.chapters.lm_kd_dynamics.params import hacking_arms
from distillbook.core.plotting import mean_std_band
from distillbook.core.results import Run


def plot_divergence_zoo(run: Run):
    import pandas as pd
    import seaborn as sns

    names = run.params.zoo_divergences
    rows = []
    for metric, label in (("zoo_golden", "golden KL(oracle‖student), nats"), ("zoo_proxy", "proxy KL(teacher‖student), nats"),
                          ("zoo_valid_share", "valid samples (share)")):
        for per_seed in run.values(metric):
            rows += [{"divergence": n, "value": v, "metric": label} for n, v in zip(names, per_seed)]
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
    for ax, (label, part) in zip(axes, df.groupby("metric", sort=False)):
        sns.pointplot(data=part, x="divergence", y="value", errorbar="sd", linestyle="none", capsize=0.2, ax=ax)
        ax.set_ylabel(label)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=45)
    axes[2].axhline(np.mean(run.values("teacher_valid_share")), color="k", linestyle=":", label="teacher")
    axes[2].legend(fontsize=8)
    fig.suptitle("One student per divergence, same offline teacher samples (mean ± std over seeds)")
    return fig


def plot_teacher_hacking(run: Run):
    steps = run.values("hacking_steps")[0]
    arms = hacking_arms(run.params)
    fig, axes = plt.subplots(2, len(arms), figsize=(2.9 * len(arms), 6.5), sharex=True, sharey="row",
                             layout="constrained", squeeze=False)
    for col, arm in enumerate(arms):
        name = arm[0]
        mean_std_band(axes[0, col], steps, run.values(f"hacking_{name}_golden"), label="golden", color="C3",
                      marker=None)
        mean_std_band(axes[1, col], steps, run.values(f"hacking_{name}_proxy"), label="proxy", color="C0",
                      marker=None)
        axes[0, col].set_title(arm_label(arm).replace(", oracle", ",\noracle"), fontsize=10)
        axes[1, col].set_xlabel("distillation step")
        axes[1, col].set_yscale("log")
    axes[0, 0].set_ylabel("golden KL(oracle‖student)\n(nats/symbol)")
    axes[1, 0].set_ylabel("proxy KL(teacher‖student)\n(nats/symbol, log scale)")
    golden = np.concatenate([np.asarray(run.values(f"hacking_{arm[0]}_golden"))[:, 2:] for arm in arms])
    axes[0, 0].set_ylim(golden.min() * 0.9, golden.max() * 1.1)
    fig.suptitle("Teacher hacking: golden and proxy metrics over distillation (mean ± std over seeds)")
    return fig


def plot_capacity_gap(run: Run):
    p = run.params
    ratio = [d / p.capacity_student_dim for d in p.capacity_teacher_dims]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    mean_std_band(ax, ratio, run.values("capacity_teacher_golden"), label="teacher", color="C7", linestyle="--")
    mean_std_band(ax, ratio, run.values("capacity_student_golden"), label=f"student (width {p.capacity_student_dim})",
                  color="C3")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ratio, [f"{r:g}" for r in ratio])
    ax.set_xlabel("teacher width / student width")
    ax.set_ylabel("golden KL(oracle‖model), nats/symbol")
    ax.set_title("Capacity gap: the same student, teachers of growing width")
    ax.legend(fontsize=8)
    return fig


def plot_cross_tokenizer(run: Run):
    steps = run.values("xtok_steps")[0]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for method, label, color in (("ntp", "next-token on the transfer set", "C7"), ("uld", "ULD (+ next-token)", "C1"),
                                 ("alm", "ALM (distillation only)", "C0")):
        mean_std_band(ax, steps, run.values(f"xtok_{method}_bpc_curve"), label=label, color=color, marker=None)
    ax.axhline(np.mean(run.values("xtok_teacher_bpc")), color="k", linestyle="--", label="BPE teacher")
    ax.axhline(np.mean(run.values("oracle_bits_per_char")), color="k", linestyle=":", label="oracle (entropy rate)")
    ax.set_xlabel("student training step")
    ax.set_ylabel("held-out bits per character")
    ax.set_title("Cross-tokenizer distillation into a character-level student")
    ax.legend(fontsize=8)
    return fig
