"""The chapter's figures: the test bed's domains, base/novel accuracy per method, HM against shots, and the
test curves the claims read."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from distillbook.chapters.clip_prompt_learning.claims import ARM_LABELS
from distillbook.chapters.clip_prompt_learning.experiment import BIOMED_ARMS, SRC_ARMS, Bed
from distillbook.core import claims as cl
from distillbook.core.plotting import mean_std_band, reference_band
from distillbook.core.results import Run
from distillbook.core.runtime import derived_generator
from distillbook.testbeds.captioned import DOMAIN_WORDS


def plot_domains(bed: Bed, per_domain: int = 6):
    """A few images of each domain with a caption of each."""
    fig, axes = plt.subplots(len(DOMAIN_WORDS), per_domain, figsize=(1.5 * per_domain, 1.7 * len(DOMAIN_WORDS)),
                             layout="constrained")
    classes = list(range(0, len(bed.data.classes), max(1, len(bed.data.classes) // per_domain)))[:per_domain]
    for r, domain in enumerate(DOMAIN_WORDS):
        images, labels = bed.data.labelled(domain, classes, 1, derived_generator(0, 99, r))
        for ax, image, label in zip(axes[r], images, labels):
            ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(bed.data.classnames[classes[int(label)]], fontsize=8)
        axes[r, 0].set_ylabel(domain)
    fig.suptitle("The captioned test bed: one scene per class, three domains")
    return fig


def plot_base_novel(run: Run):
    """Base, novel and HM per method on the target domain (bars: mean, dots: seeds)."""
    import pandas as pd
    import seaborn as sns

    p = run.params
    k = max(p.shots)
    arms = ["zeroshot", "ensemble", f"coop-{k}"] + list(SRC_ARMS)
    rows = [{"method": ARM_LABELS.get(arm) or f"CoOp ({k} shots)", "split": split, "accuracy": value}
            for arm in arms for split in ("base", "novel", "hm") for value in run.values(f"{arm}/{split}")]
    data = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(11, 4), layout="constrained")
    sns.barplot(data, x="method", y="accuracy", hue="split", errorbar="sd", alpha=0.7, ax=ax)
    sns.stripplot(data, x="method", y="accuracy", hue="split", dodge=True, palette="dark:k", size=3, ax=ax,
                  legend=False)
    ax.set(xlabel="", ylabel="accuracy (10-way)", ylim=(0, 1),
           title=f"{p.domain}: base and novel classes, {k} shots per base class for the learners")
    ax.tick_params(axis="x", labelrotation=15)
    return fig


def plot_shots(run: Run):
    """HM against shots: CoOp on the target domain; BiomedCoOp's variants on the medical-like domain."""
    p = run.params
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")

    def per_seed(fmt):  # one row of values against shots per seed
        return [[run.values(fmt.format(k=k))[s] for k in p.shots] for s in range(len(run.seeds))]

    mean_std_band(axes[0], p.shots, per_seed("coop-{k}/hm"), label="CoOp", color="C0")
    reference_band(axes[0], run.values("zeroshot/hm"), label="zero-shot", color="C7")
    reference_band(axes[0], run.values("ensemble/hm"), label="template ensemble", color="C2", linestyle=":")
    axes[0].set(title=f"{p.domain}: CoOp against zero-shot")
    w = f"{p.wrong_share:g}"
    for i, arm in enumerate(BIOMED_ARMS):
        mean_std_band(axes[1], p.shots, per_seed(f"medical/{arm}-w{w}-{{k}}/hm"), label=f"{ARM_LABELS[arm]}",
                      color=f"C{i}")
    mean_std_band(axes[1], p.shots, per_seed("medical/biomed-w0-{k}/hm"), label="BiomedCoOp, no wrong descriptions",
                  color="C3", linestyle="--", marker="s")
    reference_band(axes[1], run.values("medical/zeroshot/hm"), label="zero-shot", color="C7")
    axes[1].set(title=f"medical-like: {w} of the descriptions wrong")
    for ax in axes:
        ax.set(xscale="log", xticks=p.shots, xticklabels=[str(k) for k in p.shots],
               xlabel="labelled images per base class", ylabel="harmonic mean of base and novel accuracy")
        ax.legend(fontsize=8)
    return fig


def plot_curves(run: Run):
    """HM on the test sets during prompt training (mean ± std over seeds): what the claims' tail windows read."""
    p = run.params
    k, lo, w = max(p.shots), min(p.shots), f"{p.wrong_share:g}"
    steps = np.arange(1, p.prompt_evals + 1) * (p.prompt_steps // p.prompt_evals)
    panels = {f"{p.domain}, checkerboard split": [(f"coop-{k}", f"CoOp ({k} shots)"), ("ivlp", "IVLP"),
                                                  ("ivlp_l1_kl", "IVLP + L1 + KL"), ("promptsrc", "PromptSRC (live prompts)")],
              f"{p.domain}, halves split": [(f"halves/coop-{k}", f"CoOp ({k} shots)"), ("halves/ivlp", "IVLP"),
                                            ("halves/promptsrc", "PromptSRC (live prompts)")],
              f"medical-like, {w} wrong descriptions": [(f"medical/{arm}-w{w}-{s}", f"{ARM_LABELS[arm]}, {s} shots")
                                                         for s in (lo, k) for arm in ("coop", "biomed")]}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    for ax, (title, arms) in zip(axes, panels.items()):
        for i, (arm, label) in enumerate(arms):
            mean_std_band(ax, steps, run.values(f"{arm}/hm_curve"), label=label, color=f"C{i}")
        ax.axvspan(steps[-cl.WINDOW], steps[-1], color="0.9", zorder=0)
        ax.set(title=title, xlabel="prompt-training step", ylabel="HM (test)")
        ax.legend(fontsize=7)
    return fig
