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
    fig.suptitle("One student per divergence from the same pre-trained start, same offline teacher samples (mean ± std over seeds)")
    return fig


def plot_teacher_hacking(run: Run):
    steps = run.values("hacking_steps")[0]
    arms = hacking_arms(run.params)
    fig, axes = plt.subplots(2, len(arms), figsize=(2.6 * len(arms), 6.5), sharex=True, sharey="row",
                             layout="constrained", squeeze=False)
    teacher = np.mean(run.values("teacher_golden"))
    for col, arm in enumerate(arms):
        name = arm[0]
        mean_std_band(axes[0, col], steps, run.values(f"hacking_{name}_golden"), label="golden", color="C3",
                      marker=None)
        axes[0, col].axhline(teacher, color="k", linestyle="--", linewidth=1, label="teacher's golden KL")
        mean_std_band(axes[1, col], steps, run.values(f"hacking_{name}_proxy"), label="proxy", color="C0",
                      marker=None)
        axes[0, col].set_title(arm_label(arm).replace(", oracle", ",\noracle"), fontsize=10)
        axes[1, col].set_xlabel("distillation step")
        axes[1, col].set_yscale("log")
    axes[0, 0].set_ylabel("golden KL(oracle‖student)\n(nats/symbol)")
    axes[1, 0].set_ylabel("proxy KL(teacher‖student)\n(nats/symbol, log scale)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Teacher hacking: golden and proxy metrics over distillation from the same pre-trained student "
                 "(mean ± std over seeds)")
    return fig


def plot_hacking_split(run: Run):
    """Where each arm's golden KL moves: positions the teacher gets wrong against positions it gets right."""
    p = run.params
    steps = run.values("hacking_steps")[0]
    small = p.offline_sizes[0]
    arms = [(f"offline{small}", f"offline, {small} teacher samples"), (f"oracle{small}", f"offline, {small} oracle "
            "strings (control)"), ("online", "online")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", sharex=True)
    for (name, label), color in zip(arms, ("C3", "C7", "C0")):
        for ax, part in zip(axes, ("wrong", "right")):
            mean_std_band(ax, steps, run.values(f"hacking_{name}_golden_{part}"), label=label, color=color,
                          marker=None)
    axes[0].set_title("positions where the teacher is wrong")
    axes[1].set_title("positions where the teacher is right")
    for ax in axes:
        ax.set_xlabel("distillation step")
    axes[0].set_ylabel("golden KL(oracle‖student), nats/symbol\n(weighted by the oracle's state belief)")
    axes[0].legend(fontsize=8)
    fig.suptitle("The golden KL split by the teacher's errors (mean ± std over seeds)")
    return fig


def plot_capacity_gap(run: Run):
    p = run.params
    teacher_params = np.asarray(run.values("capacity_teacher_parameters"), dtype=float).mean(axis=0)
    fig, axes = plt.subplots(1, len(p.capacity_student_dims), figsize=(5.5 * len(p.capacity_student_dims), 4.2),
                             layout="constrained", squeeze=False)
    for ax, d in zip(axes[0], p.capacity_student_dims):
        ratio = teacher_params / run.values(f"capacity_s{d}_parameters")[0]
        mean_std_band(ax, ratio, run.values("capacity_teacher_golden"), label="teacher", color="C7", linestyle="--")
        mean_std_band(ax, ratio, run.values(f"capacity_s{d}_golden"), label=f"student (width {d})", color="C3")
        oracle = np.asarray(run.values(f"capacity_s{d}_from_oracle_golden"), dtype=float)
        ax.axhspan(oracle.mean() - oracle.std(ddof=1), oracle.mean() + oracle.std(ddof=1), color="C2", alpha=0.2)
        ax.axhline(oracle.mean(), color="C2", label="student distilled from the oracle")
        ax.set_xscale("log")
        ax.set_xlabel("teacher parameters / student parameters (log scale)")
        ax.set_ylabel("golden KL(oracle‖model), nats/symbol")
        ax.set_title(f"width-{d} student")
        ax.legend(fontsize=8)
    fig.suptitle("Capacity gap: one student size per panel, the same teacher ladder (mean ± std over seeds)")
    return fig


def plot_cross_tokenizer(run: Run):
    from distillbook.chapters.lm_kd_dynamics.claims import XTOK_LABELS

    steps = run.values("xtok_steps")[0]
    fig, ax = plt.subplots(figsize=(7.5, 4.4), layout="constrained")
    styles = {"ntp": ("C7", "-"), "uld": ("C1", "-"), "alm": ("C0", "-"), "alm_ntp": ("C2", "-"),
              "alm_debiased": ("C0", ":")}
    for method, label in XTOK_LABELS.items():
        color, linestyle = styles[method]
        mean_std_band(ax, steps, run.values(f"xtok_{method}_bpc_curve"), label=label, color=color, marker=None,
                      linestyle=linestyle)
    ax.axhline(np.mean(run.values("xtok_teacher_bpc")), color="k", linestyle="--", label="BPE teacher")
    ax.axhline(np.mean(run.values("oracle_bits_per_char")), color="k", linestyle=":", label="oracle (entropy rate)")
    ax.set_xlabel("student training step (0: the pre-trained start)")
    ax.set_ylabel("held-out bits per character")
    ax.set_title("Cross-tokenizer distillation into a pre-trained character-level student")
    ax.legend(fontsize=8)
    return fig
