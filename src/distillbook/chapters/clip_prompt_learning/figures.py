"""The chapter's figures: the test bed's domains, base/novel accuracy per method on both splits, BiomedCoOp
against its weight, and the training curves (test HM, loss, context drift)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from distillbook.chapters.clip_prompt_learning.claims import ARM_LABELS, src_arms
from distillbook.chapters.clip_prompt_learning.experiment import SPLITS, Bed, biomed_arms, biomed_tag
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
    """Base, novel and HM per method on the target domain, the two splits side by side (bars: mean, dots: seeds)."""
    import pandas as pd
    import seaborn as sns

    p = run.params
    k = p.forgetting_shots
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), layout="constrained", sharey=True,
                             gridspec_kw={"width_ratios": [3, 6]})
    for ax, split in zip(axes, SPLITS):
        arms = ["zeroshot", "ensemble", "coop"] + (list(src_arms(p)) if split == "halves" else [])
        rows = [{"method": ARM_LABELS[arm] if arm != "coop" else f"CoOp ({k} shots)", "classes": part,
                 "accuracy": x}
                for arm in arms for part in ("base", "novel", "hm") for x in run.values(f"{split}/{arm}/{part}")]
        data = pd.DataFrame(rows)
        sns.barplot(data, x="method", y="accuracy", hue="classes", errorbar="sd", alpha=0.7, ax=ax,
                    legend=split == "halves")
        sns.stripplot(data, x="method", y="accuracy", hue="classes", dodge=True, palette="dark:k", size=3, ax=ax,
                      legend=False)
        ax.set(xlabel="", ylabel=f"accuracy ({len(run.params.shapes) * len(run.params.colours) // 2}-way)",
               ylim=(0, 1), title=f"{p.domain}, {split} split")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1.0), title="accuracy on")
    return fig


def plot_biomed(run: Run):
    """BiomedCoOp's HM against its regulariser weight, with and without pruning, beside CoOp and zero-shot (top
    shot count); a second panel without wrong descriptions where the profile runs the control arms."""
    p = run.params
    hi = max(p.shots)
    trained = set(biomed_arms(p))
    panels = [w for w in dict.fromkeys((p.wrong_share, 0.0)) if any(a != "coop" and x == w for a, _, x in trained)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1, 4), layout="constrained", sharey=True,
                             squeeze=False)
    for ax, wrong in zip(axes[0], panels):
        for i, arm in enumerate(("biomed_noprune", "biomed")):
            weights = [lam for lam in p.biomed_weights if (arm, lam, wrong) in trained]
            hm = np.asarray([run.values(f"{biomed_tag(arm, lam, wrong, hi)}/hm") for lam in weights]).T  # seeds x λ
            if len(weights) > 1:
                mean_std_band(ax, weights, hm, label=ARM_LABELS[arm], color=f"C{i}")
            elif weights:  # one weight: a point with its seed std
                ax.errorbar(weights, hm.mean(0), yerr=hm.std(0, ddof=1), fmt="o", capsize=4, color=f"C{i}",
                            label=ARM_LABELS[arm])
        reference_band(ax, run.values(f"{biomed_tag('coop', None, p.wrong_share, hi)}/hm"), label="CoOp", color="C7")
        reference_band(ax, run.values("medical/zeroshot/hm"), label="zero-shot, 'a scan of a {}'", color="C2",
                       linestyle=":")
        ax.set(xscale="log", xticks=p.biomed_weights, xticklabels=[f"{x:g}" for x in p.biomed_weights],
               xlabel="regulariser weight λ1 = λ2", title=f"{wrong:.0%} of the descriptions wrong")
        ax.minorticks_off()
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("harmonic mean of base and novel accuracy")
    fig.suptitle(f"BiomedCoOp on the medical-like domain, halves split, {hi} shots per base class")
    return fig


def plot_curves(run: Run):
    """Test HM, training loss and the context's cosine to its initial words along prompt training (mean ± std
    over seeds): what the claims' tail windows read, and how far the prompts moved."""
    p = run.params
    learners = [(f"{split}/coop", f"CoOp, {split}") for split in SPLITS] + \
        [(f"halves/{arm}", f"{ARM_LABELS[arm]}, halves") for arm in src_arms(p)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    for i, (prefix, label) in enumerate(learners):
        hm = np.asarray(run.values(f"{prefix}/hm_curve"))
        progress = np.linspace(0, 1, hm.shape[1])  # step 0, then prompt_evals equally spaced evaluations
        mean_std_band(axes[0], progress, hm, label=label, color=f"C{i}")
        mean_std_band(axes[2], progress, run.values(f"{prefix}/ctx_cosine_curve"), label=label, color=f"C{i}")
        loss = np.asarray(run.values(f"{prefix}/loss_curve"))
        mean_std_band(axes[1], progress[1:], loss, label=label, color=f"C{i}")
    axes[0].axvspan(progress[-cl.WINDOW], 1, color="0.9", zorder=0)
    axes[0].set(title="test HM (shaded: the window the claims read)", ylabel="HM (test)")
    axes[1].set(title="training loss (mean over each evaluation interval)", ylabel="loss", yscale="log")
    axes[2].set(title="context vectors' cosine to 'a photo of a'", ylabel="mean cosine")
    for ax in axes:
        ax.set(xlabel="share of the recipe's steps")
    axes[2].legend(fontsize=7, loc="best")
    return fig
