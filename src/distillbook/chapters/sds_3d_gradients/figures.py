"""The chapter's figures: the prior's view words, turntables, fidelity, Janus, gradient variance, diversity and
the amortised generators."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from distillbook.chapters.sds_3d_gradients.claims import ARM_LABELS, arm_tag, object_mean
from distillbook.chapters.sds_3d_gradients.experiment import (AMORTISED_ARMS, DIVERSITY_ARMS, JANUS_ARMS, PROBE_COLOURS,
                                                              PSNR_ARMS, VARIANCE_TIMESTEPS, Bed, object_arms,
                                                              object_key, prior_samples)
from distillbook.chapters.sds_3d_gradients.params import Params
from distillbook.core.plotting import mean_std_band
from distillbook.core.results import Run
from distillbook.core.runtime import derived_seed
from distillbook.testbeds import voxel3d as v3


def _show(ax, image: torch.Tensor):
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_prior_views(bed: Bed, p: Params, seed: int = 0):
    """What the prior draws for each view word: its front bias is where Janus objects come from."""
    probe = "red-front-cube"
    prompt = bed.prompts.object_id(probe, PROBE_COLOURS[probe])
    fig, axes = plt.subplots(3, 6, figsize=(8, 4.4), layout="constrained")
    for row, view in enumerate(v3.VIEWS):
        samples = prior_samples(bed, prompt, row, 6, 1.0, seed=derived_seed(seed, 89, row))
        for ax, image in zip(axes[row], samples.cpu()):
            _show(ax, image)
        axes[row, 0].set_ylabel(f"'{view} view'")
    fig.suptitle(f"Conditional prior samples for '{bed.prompts.caption(prompt)}' with each view word")
    return fig


def plot_turntables(run: Run, shown: dict, bed: Bed):
    """Renders at four azimuths (front, side, back, side) for every method, beside the ground truth."""
    p = run.params
    obj, probe = p.fidelity_objects[0], p.janus_probes[0]
    rows = [("ground truth", bed.truth[object_key(*reversed(obj.split()))], None)]
    rows += [(ARM_LABELS[a], shown[arm_tag(obj, a)][0], obj) for a in object_arms(p, obj)]
    rows += [(f"{probe}: ground truth", bed.truth[object_key(probe, PROBE_COLOURS[probe])], None)]
    rows += [(f"{probe}: {ARM_LABELS[a]}", shown[f"{probe}/{a}"][0], probe) for a in JANUS_ARMS]
    step = p.eval_views // 4
    fig, axes = plt.subplots(len(rows), 4, figsize=(5.2, 1.25 * len(rows)), layout="constrained")
    for r, (label, images, _) in enumerate(rows):
        for col in range(4):
            _show(axes[r, col], images[col * step])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    for col, name in enumerate(("0°", "90°", "180°", "270°")):
        axes[0, col].set_title(name, fontsize=9)
    fig.suptitle(f"Turntable renders, seed {run.seeds[0]}")
    return fig


# one colour, marker and line per object arm; CDS's two ablations in CDS's colour, dashed and dotted
ARM_STYLE = {"reconstruction": ("k", "*", "-"), "sds_low": ("C0", "o", "-"), "sds_high": ("C3", "s", "-"),
             "sds_bsd": ("C7", "p", "-"), "vsd": ("C2", "^", "-"), "bsd": ("C4", "D", "-"), "cds": ("C1", "v", "-"),
             "cds_fresh": ("C1", "<", "--"), "cds_random": ("C1", ">", ":"), "csd": ("C6", "P", "-"),
             "csm": ("C9", "X", "-")}


def plot_fidelity(run: Run):
    """PSNR against saturation error (one point per seed) and PSNR along the optimisation (mean ± std)."""
    p = run.params
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6), layout="constrained")
    for arm in (a for a in PSNR_ARMS if a not in p.left_out_arms):
        colour, marker, line = ARM_STYLE[arm]
        axes[0].scatter(object_mean(run, arm, "saturation_error"), object_mean(run, arm, "psnr"),
                        label=ARM_LABELS[arm], color=colour, marker=marker, s=40)
        curves = np.mean([run.values(f"{arm_tag(o, arm)}/curve_psnr") for o in p.fidelity_objects], axis=0)
        steps = np.linspace(0, p.iterations, curves.shape[1])
        mean_std_band(axes[1], steps, curves, label=ARM_LABELS[arm], color=colour, marker=None, linestyle=line)
    axes[0].set(xlabel="|saturation − ground truth| (chroma, mean over objects)",
                ylabel="PSNR at held-out views (dB, mean over objects)",
                title="Fidelity against saturation (one point per seed)")
    axes[0].legend(fontsize=7, loc="best")
    axes[1].set(xlabel="optimisation step", ylabel="PSNR (dB, mean over objects)", title="PSNR along the optimisation")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the curves fill the axes
    return fig


def plot_janus(run: Run):
    """The Janus measure per method and probe, one dot per seed."""
    import pandas as pd
    import seaborn as sns

    rows = [{"probe": probe, "method": ARM_LABELS[arm], "Janus": value}
            for probe in run.params.janus_probes for arm in JANUS_ARMS
            for value in run.values(f"{probe}/{arm}/janus")]
    fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
    sns.barplot(pd.DataFrame(rows), x="method", y="Janus", hue="probe", errorbar="sd", alpha=0.6, ax=ax)
    sns.stripplot(pd.DataFrame(rows), x="method", y="Janus", hue="probe", dodge=True, ax=ax, legend=False,
                  palette="dark:k", size=4)
    ax.set(ylabel="front feature seen from behind\n(relative to the true front)", xlabel="",
           title=f"Janus measure (0: the truth; about 0.8: a second full front), ESD λ = {run.params.esd_lambda:g}")
    return fig


def plot_gradient_noise(run: Run):
    """The image gradient's variance and signal-to-noise ratio over noise draws, per timestep (mean ± std)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for kind, label, colour in (("sds", "SDS (fresh noise)", "C0"), ("cds", "CDS (one ODE step)", "C1")):
        mean_std_band(axes[0], VARIANCE_TIMESTEPS, run.values(f"gradient/variance_{kind}"), label=label, color=colour)
        mean_std_band(axes[1], VARIANCE_TIMESTEPS, run.values(f"gradient/snr_{kind}"), label=label, color=colour)
    axes[0].set(yscale="log", xlabel="timestep t", ylabel="E‖g − E g‖² over noise draws",
                title="Gradient variance at fixed renders")
    axes[1].set(xlabel="timestep t", ylabel="‖E g‖² / E‖g − E g‖²", title="Signal-to-noise ratio")
    axes[0].legend()
    return fig


def plot_diversity(run: Run, shown: dict):
    """Front views of the particles for the colour-free prompt: VSD's particles against independent SDS runs."""
    p = run.params
    key = f"a-{p.diversity_shape}"
    fig, axes = plt.subplots(2, p.particles, figsize=(1.4 * p.particles + 1, 3.2), layout="constrained", squeeze=False)
    for r, arm in enumerate(DIVERSITY_ARMS):
        for k, images in enumerate(shown[f"{key}/{arm}"]):
            _show(axes[r, k], images[p.eval_views // 8])
        axes[r, 0].set_ylabel(ARM_LABELS[arm], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"'a {p.diversity_shape}': {p.particles} particles, seed {run.seeds[0]}")
    return fig


def plot_amortised(run: Run):
    p = run.params
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for i, kind in enumerate(AMORTISED_ARMS):
        per_seed = np.asarray([[run.values(f"amortised/{kind}-{n}/psnr")[s] for n in p.amortised_sizes]
                               for s in range(len(run.seeds))])
        mean_std_band(axes[0], p.amortised_sizes, per_seed, label=kind.upper(), color=f"C{i}")
        for n, style in zip(p.amortised_sizes, ("-", "--")):
            curves = run.values(f"amortised/{kind}-{n}/curve_psnr")
            steps = np.linspace(0, p.amortised_steps, len(curves[0]))
            mean_std_band(axes[1], steps, curves, label=f"{kind.upper()}, {n} prompts", color=f"C{i}",
                          marker=None, linestyle=style)
    axes[0].set(xscale="log", xticks=p.amortised_sizes, xticklabels=map(str, p.amortised_sizes),
                xlabel="prompts the generator is trained on", ylabel="PSNR on the shared prompts (dB)",
                title="Amortised generator: scaling the prompt set")
    axes[0].minorticks_off()  # a log axis otherwise labels a stray minor tick between the two sizes
    axes[1].set(xlabel="generator step", ylabel="PSNR (dB)", title="Along training")
    axes[0].legend()
    axes[1].legend(fontsize=8)
    return fig
