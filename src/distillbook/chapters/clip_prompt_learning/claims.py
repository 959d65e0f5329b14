"""The papers' claims with their margins, their verdicts from the recorded numbers, the test-bed health table,
the numbers the prose glues, and every generated markdown text."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.chapters.clip_prompt_learning.experiment import BIOMED_ARMS, SRC_ARMS, TEMPLATES, Bed, captioned
from distillbook.chapters.clip_prompt_learning.params import Params
from distillbook.core import claims as cl
from distillbook.core.claims import Claim, Curves, mean_std_text
from distillbook.core.results import Run
from distillbook.testbeds.captioned import DOMAIN_WORDS

PROMPTSRC, BIOMEDCOOP, SURVEY = 41, 16, 34
ARM_LABELS = {"zeroshot": "zero-shot, 'a photo of a {}'", "ensemble": f"zero-shot, {len(TEMPLATES)}-template ensemble",
              "ivlp": "IVLP", "ivlp_l1": "IVLP + L1 features", "ivlp_l1_kl": "IVLP + L1 + KL",
              "promptsrc": "PromptSRC (+ GPA)", "coop": "CoOp", "coop_mse": "CoOp + ensemble MSE",
              "biomed_noprune": "BiomedCoOp, no pruning", "biomed": "BiomedCoOp"}

# ---------------------------------------------------------------- claims and verdicts


def per_seed(run: Run, name: str) -> np.ndarray:
    """A recorded scalar (e.g. a zero-shot accuracy: no training, no curve) as a per-seed array."""
    return np.asarray(run.values(name), dtype=float)


def read(run: Run, name: str) -> Curves:
    """The arm ``name`` (e.g. ``coop-16/novel``) as its per-seed test-accuracy curves."""
    return cl.curve(run.values(f"{name}_curve"))


def aggregated(run: Run, name: str) -> cl.Derived:
    """PromptSRC's arm: the GPA prompts' final accuracy, with the convergence of the prompts GPA averaged."""
    live = read(run, name)
    return cl.derived(run.values(name), live.drift(), live.window)


def gain(a: Curves, b: Curves) -> cl.Derived:
    """a - b per seed (tails), drifting as much as the more drifting of the two."""
    return cl.derived(a.values() - b.values(), np.maximum(a.drift(), b.drift()), a.window)


def test_images(p: Params) -> int:
    """Test images of one split (base or novel) of the target domain."""
    return p.test_per_class * len(captioned(p).base_classes)


def claims(p: Params) -> tuple[Claim, ...]:
    k, lo, hi, w = max(p.shots), min(p.shots), max(p.shots), f"{p.wrong_share:g}"
    n = test_images(p)
    point = f"1 point = {n / 100:g} of the {n} test images of a split, near one arm's binomial standard error"
    no_forgetting = ("PromptSRC's gain presumes that unregularised prompts forget novel classes; on the checkerboard "
                     "split every novel shape and colour is also a base attribute, so there is little to forget.")
    short = (f"the prompt learners train {p.prompt_steps} SGD steps at CoOp's rate, far fewer than the papers' "
             "epochs, so the prompts may not have moved far enough from their start to overfit the base classes.")
    shared = dict(ceiling=1.0, saturation_tol=1 / n)
    return (
        Claim("promptsrc-raises-novel", PROMPTSRC, statement=f"PromptSRC's novel accuracy exceeds IVLP's ({k} shots, "
              f"{p.domain})", a="novel accuracy, PromptSRC (GPA prompts)", b="novel accuracy, IVLP",
              paper_figure="PromptSRC Table 1 (base-to-novel, 11 datasets)", paper_value="novel 76.10 vs IVLP 71.04",
              margin=0.01, rationale=f"{point}; the paper's gain is 5 points", **shared,
              explanation=no_forgetting, diagnosis="promptsrc-raises-novel-halves"),
        Claim("promptsrc-keeps-base", PROMPTSRC, statement="...with base accuracy within 2 points of IVLP's",
              a="base accuracy, PromptSRC (GPA prompts)", b="base accuracy, IVLP", region=("within", (-0.02, 0.02)),
              paper_figure="PromptSRC Table 1", paper_value="base 84.26 vs IVLP 84.21", margin=0.0,
              rationale=f"the paper's gap is 0.05 points; ±2 points = ±{2 * n / 100:g} base images, about two "
                        "binomial standard errors of one arm", **shared,
              explanation="if PromptSRC moves base accuracy, its L1/KL training terms do it, not GPA: the IVLP + L1 + "
                          "KL arm (same training, last-epoch prompts) shows the same base accuracy.",
              diagnosis="ivlp_l1_kl/base"),
        Claim("promptsrc-raises-hm", PROMPTSRC, statement="...and a higher harmonic mean", a="HM, PromptSRC (GPA prompts)",
              b="HM, IVLP", paper_figure="PromptSRC Table 1 / README", paper_value="HM 79.97 vs 77.51",
              margin=0.01, rationale=f"{point}; the paper's gain is 2.5 HM points", **shared,
              explanation=no_forgetting, diagnosis="promptsrc-raises-novel-halves"),
        Claim("gpa-raises-hm", PROMPTSRC, statement="Gaussian prompt aggregation raises HM over the last epoch's "
              "prompts (all else equal)", a="HM, with GPA", b="HM, last epoch (IVLP + L1 + KL)",
              paper_figure="PromptSRC Table 6 (ablation)", paper_value="+0.4 to +1 HM", margin=0.002,
              rationale=f"the paper's ablation gain is 0.4 to 1 HM point, so the line sits below it: 0.2 points, "
                        f"{0.002 * n:g} test images per split", **shared,
              explanation=f"GPA averages the prompts of epochs near {p.gpa_mean:g} ± {p.gpa_std:g} of {p.gpa_epochs}, "
                          "where the cosine-decayed rate has nearly stopped the prompts, so the average sits close to "
                          "the last prompts.", diagnosis="promptsrc/gpa_shift"),
        Claim("coop-forgets-novel", PROMPTSRC, statement=f"CoOp ({k} shots) falls below zero-shot CLIP on novel "
              "classes", a="novel accuracy, CoOp", b="novel accuracy, zero-shot", region=("<", 0.0),
              paper_figure="PromptSRC Section 1 / CoCoOp Table 1", paper_value="novel 63.22 vs zero-shot 74.22",
              margin=0.01, rationale=f"{point}; the paper's drop is 11 points", **shared,
              explanation="on the checkerboard split the novel classes recombine base shapes and colours, and the "
                          "domain shift that CoOp corrects helps them as much as the base classes.",
              diagnosis="coop-forgets-novel-halves"),
        Claim("biomedcoop-gains-most-at-few-shots", BIOMEDCOOP, statement=f"BiomedCoOp's HM gain over CoOp is larger "
              f"at {lo} shot than at {hi} (medical-like domain, {w} wrong descriptions)",
              a=f"HM gain at {lo} shot", b=f"HM gain at {hi} shots",
              paper_figure="BiomedCoOp Table 1 (few-shot)", paper_value="1 shot 57.03 vs CoOp 50.16",
              margin=0.01, rationale=f"{point}; the paper's 1-shot gain alone is 6.9 points",
              explanation="at the reference weights (λ1 = λ2 = 1) the MSE and KL terms are a small share of the loss "
                          "beside the cross-entropy, so BiomedCoOp stays close to CoOp at every shot count.",
              diagnosis=f"medical/biomed-w{w}-{lo}/reg_share"),
        Claim("biomedcoop-gains-on-novel", BIOMEDCOOP, statement=f"...and at {lo} shot its gain is larger on novel "
              "classes than on base classes", a=f"novel gain at {lo} shot", b=f"base gain at {lo} shot",
              paper_figure="BiomedCoOp Table 2 (base-to-novel)", paper_value="HM 75.07 vs CoOp 67.23",
              margin=0.01, rationale=f"{point}; the paper's HM gain is 7.8 points",
              explanation="at the reference weights the regularisers are a small share of the loss, so the gain on "
                          "either split is small.", diagnosis=f"medical/biomed-w{w}-{lo}/reg_share"),
        Claim("pruning-helps-with-wrong-descriptions", BIOMEDCOOP, statement=f"With {w} wrong descriptions, pruning "
              "raises HM (per shot count)", a="HM, BiomedCoOp", b="HM, without pruning",
              paper_figure="BiomedCoOp Table 4 (ablation)", paper_value="outlier pruning helps", margin=0.005,
              rationale=f"half a point ({0.005 * n:g} test images per split): the smallest HM change worth "
                        "crediting to one component of an ablation", **shared,
              explanation="pruning drops descriptions by the robust z-score of their best-class score, and a wrong "
                          "index describes a plausible other class, so it scores like a right one and is not "
                          "singled out.", diagnosis="medical/pruning/selectivity"),
        Claim("pruning-neutral-without-wrong", BIOMEDCOOP, statement="...and changes HM by less than 1 point with "
              "none (per shot count)", a="HM, BiomedCoOp (0 wrong)", b="HM, without pruning (0 wrong)",
              region=("within", (-0.01, 0.01)), paper_figure="BiomedCoOp Section 3",
              paper_value="pruning targets hallucinated prompts", margin=0.0,
              rationale=f"±1 point (±{n / 100:g} images per split): with nothing wrong to prune, HM should move "
                        "less than one arm's binomial noise", **shared,
              explanation="pruning also drops right descriptions, which changes the KL target.", diagnosis=None),
        Claim("coop-forgets-novel-halves", PROMPTSRC, statement=f"Diagnosis: on the halves split (novel shapes unseen "
              f"in base classes), CoOp ({k} shots) falls below zero-shot on novel classes",
              a="novel accuracy, CoOp (halves)", b="novel accuracy, zero-shot (halves)", region=("<", 0.0),
              paper_figure="CoCoOp Table 1 (CoOp's split)", paper_value="novel 63.22 vs zero-shot 74.22",
              margin=0.01, rationale=f"{point}; the paper's drop is 11 points", **shared,
              explanation=short),
        Claim("promptsrc-raises-novel-halves", PROMPTSRC, statement="Diagnosis: on the halves split, PromptSRC's "
              "novel accuracy exceeds IVLP's", a="novel accuracy, PromptSRC (halves)", b="novel accuracy, IVLP (halves)",
              paper_figure="PromptSRC Table 1", paper_value="novel 76.10 vs IVLP 71.04",
              margin=0.01, rationale=f"{point}; the paper's gain is 5 points", **shared, explanation=short),
    )


def evaluate_claims(run: Run) -> list[dict]:
    p = run.params
    c = {claim.id: claim for claim in claims(p)}
    k, lo, hi, w = max(p.shots), min(p.shots), max(p.shots), f"{p.wrong_share:g}"

    def zs(name):
        return per_seed(run, name)

    def med(arm, wrong, shots, metric="hm"):
        return read(run, f"medical/{arm}-w{wrong}-{shots}/{metric}")

    def per_shot(arm, wrong):
        return {f"{s} shots": med(arm, wrong, s) for s in p.shots}

    return [
        c["promptsrc-raises-novel"].evaluate(aggregated(run, "promptsrc/novel"), read(run, "ivlp/novel")),
        c["promptsrc-keeps-base"].evaluate(aggregated(run, "promptsrc/base"), read(run, "ivlp/base")),
        c["promptsrc-raises-hm"].evaluate(aggregated(run, "promptsrc/hm"), read(run, "ivlp/hm")),
        c["gpa-raises-hm"].evaluate(aggregated(run, "promptsrc/hm"), read(run, "ivlp_l1_kl/hm")),
        c["coop-forgets-novel"].evaluate(read(run, f"coop-{k}/novel"), zs("zeroshot/novel")),
        c["biomedcoop-gains-most-at-few-shots"].evaluate(gain(med("biomed", w, lo), med("coop", w, lo)),
                                                         gain(med("biomed", w, hi), med("coop", w, hi))),
        c["biomedcoop-gains-on-novel"].evaluate(gain(med("biomed", w, lo, "novel"), med("coop", w, lo, "novel")),
                                                gain(med("biomed", w, lo, "base"), med("coop", w, lo, "base"))),
        c["pruning-helps-with-wrong-descriptions"].evaluate(per_shot("biomed", w), per_shot("biomed_noprune", w)),
        c["pruning-neutral-without-wrong"].evaluate(per_shot("biomed", "0"), per_shot("biomed_noprune", "0")),
        c["coop-forgets-novel-halves"].evaluate(read(run, f"halves/coop-{k}/novel"), zs("halves/zeroshot/novel")),
        c["promptsrc-raises-novel-halves"].evaluate(aggregated(run, "halves/promptsrc/novel"),
                                                    read(run, "halves/ivlp/novel")),
    ]


def record_health(run: Run) -> None:
    """The test-bed health rows: the pretrained CLIP's zero-shot base accuracy per domain against a prototype
    classifier on its frozen image features, perfect accuracy and chance (call after the seeds have run)."""
    p = run.params
    chance = 1 / len(captioned(p).base_classes)
    for domain in DOMAIN_WORDS:
        template = "a scan of a {}" if domain == "medical" else TEMPLATES[0]
        refs = {"prototype oracle": f"health/{domain}/prototype", "ceiling": 1.0, "chance": chance}
        if domain == "medical":
            refs["'a photo of a {}' (CoOp's start)"] = "medical/photo_template/base"
        run.health(f"pretrained CLIP, zero-shot '{template}'", f"{domain} base-class accuracy", f"health/{domain}/zeroshot",
                   lower_is_better=False, references=refs,
                   note=f"prototype: each base class's mean image feature from {p.test_per_class} labelled {domain} "
                        "images, a supervised reference for what class weights on the frozen features can reach")


def glue_values(run: Run, bed: Bed) -> dict[str, float | int | str]:
    """Every number the prose glues (call after the seeds have run: ``se_points`` reads zero-shot accuracy)."""
    p = run.params
    n = test_images(p)
    acc = float(np.mean(run.values("zeroshot/base")))
    return {"n_shapes": len(p.shapes), "n_colours": len(p.colours), "n_classes": len(bed.data.classes),
            "n_base": len(bed.data.base_classes), "n_novel": len(bed.data.novel_classes),
            "clip_layers": p.clip_layers, "clip_width": p.clip_width, "style_pct": round(100 * p.style_share),
            "shots": ", ".join(map(str, p.shots)), "max_shots": max(p.shots), "prompt_steps": p.prompt_steps,
            "prompt_lr": p.prompt_lr, "prompt_evals": p.prompt_evals, "eval_every": p.prompt_steps // p.prompt_evals,
            "window": cl.WINDOW, "n_templates": len(TEMPLATES), "descriptions": p.descriptions,
            "test_per_class": p.test_per_class, "split_images": n, "convergence_pct": 100 * cl.CONVERGENCE_TOL,
            "point_images": n / 100,
            # one arm's binomial standard error on a split, in points
            "se_points": 100 * float(np.sqrt(acc * (1 - acc) / n))}


# ---------------------------------------------------------------- markdown


def summary_markdown(run: Run, results: list[dict]) -> str:
    """Per seed, each PromptSRC component's effect; then the tables of every arm's final accuracies (mean ± std).
    ``results`` (the verdicts) are read in :func:`reading_markdown`, not here."""
    return component_effects_markdown(run) + "\n\n" + accuracy_tables_markdown(run)


def accuracy_tables_markdown(run: Run) -> str:
    """Final base, novel and HM accuracy of every arm, mean ± std over seeds."""
    p = run.params
    v = run.values
    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), mean ± std, at the last training step "
             "(PromptSRC: its GPA prompts). Accuracies are fractions.", "",
             f"**{p.domain}**, {max(p.shots)} shots per base class for the prompt learners:", "",
             "| method | base | novel | HM |", "|---|---|---|---|"]
    rows = ["zeroshot", "ensemble"] + [f"coop-{k}" for k in p.shots] + list(SRC_ARMS)
    for arm in rows:
        label = ARM_LABELS.get(arm) or f"CoOp, {arm.split('-')[1]} shots"
        lines.append(f"| {label} | {mean_std_text(v(f'{arm}/base'))} | {mean_std_text(v(f'{arm}/novel'))} | {mean_std_text(v(f'{arm}/hm'))} |")
    k = max(p.shots)
    lines += ["", f"**halves split** ({p.domain}; novel classes include shapes no base class has):", "",
              "| method | base | novel | HM |", "|---|---|---|---|"]
    for arm, label in (("zeroshot", ARM_LABELS["zeroshot"]), (f"coop-{k}", f"CoOp, {k} shots"), ("ivlp", "IVLP"),
                       ("promptsrc", ARM_LABELS["promptsrc"])):
        lines.append(f"| {label} | " + " | ".join(mean_std_text(v(f"halves/{arm}/{s}")) for s in ("base", "novel", "hm"))
                     + " |")
    lines += ["", f"**medical-like**, HM (zero-shot with 'a scan of a {{}}': {mean_std_text(v('medical/zeroshot/hm'))}):", "",
              "| method | wrong descriptions | " + " | ".join(f"{k} shots" for k in p.shots) + " |",
              "|---|---|" + "---|" * len(p.shots)]
    for wrong, arms in ((f"{p.wrong_share:g}", BIOMED_ARMS), ("0", ("biomed_noprune", "biomed"))):
        for arm in arms:
            lines.append(f"| {ARM_LABELS[arm]} | {wrong} | " +
                         " | ".join(mean_std_text(v(f"medical/{arm}-w{wrong}-{k}/hm")) for k in p.shots) + " |")
    return "\n".join(lines)


def nearest_words(bed: Bed, context: torch.Tensor, k: int = 3) -> str:
    """A markdown table: the k vocabulary words nearest (cosine) to each learned context vector."""
    table = bed.clip.text_model.embeddings.token_embedding.weight
    sims = F.normalize(context, dim=-1) @ F.normalize(table, dim=-1).T
    vocab = bed.data.tokenizer.vocab
    init = "a photo of a".split()
    lines = ["| position | initialised as | nearest words (cosine) |", "|---|---|---|"]
    for i, row in enumerate(sims):
        top = row.topk(k)
        words = ", ".join(f"{vocab[j]} ({s:.2f})" for s, j in zip(top.values.tolist(), top.indices.tolist()))
        lines.append(f"| {i + 1} | {init[i] if i < len(init) else '-'} | {words} |")
    return "\n".join(lines)


def component_effects_markdown(run: Run) -> str:
    """Per-seed effect of each PromptSRC component on novel accuracy and HM (final values), generated."""
    v = functools.partial(per_seed, run)
    steps = (("ivlp_l1", "ivlp", "L1 feature terms"), ("ivlp_l1_kl", "ivlp_l1", "KL term"),
             ("promptsrc", "ivlp_l1_kl", "GPA"))
    lines = ["| component | " + " | ".join(f"seed {s}: novel / HM" for s in run.seeds) + " |",
             "|---|" + "---|" * len(run.seeds)]
    for new, old, label in steps:
        dn, dh = v(f"{new}/novel") - v(f"{old}/novel"), v(f"{new}/hm") - v(f"{old}/hm")
        lines.append(f"| + {label} | " + " | ".join(f"{a:+.3f} / {b:+.3f}" for a, b in zip(dn, dh)) + " |")
    return "\n".join(lines)


def reading_markdown(run: Run, results: list[dict]) -> str:
    """The verdicts read against the test bed, generated from the results (so it reads right whatever they are)."""
    r = {x["id"]: x for x in results}
    v = functools.partial(per_seed, run)
    p = run.params
    k = max(p.shots)
    vt = cl.verdict_text
    conv = [x["id"] for x in results if x["convergence"]["converged"] is False]
    out = []
    out.append(f"- **Forgetting.** On the checkerboard split, CoOp's novel accuracy minus zero-shot's is "
               f"{mean_std_text(v(f'coop-{k}/novel') - v('zeroshot/novel'))} (coop-forgets-novel: "
               f"{vt(r['coop-forgets-novel'])}); on the halves split it is "
               f"{mean_std_text(v(f'halves/coop-{k}/novel') - v('halves/zeroshot/novel'))} "
               f"(coop-forgets-novel-halves: {vt(r['coop-forgets-novel-halves'])}). PromptSRC against IVLP on novel "
               f"classes: {vt(r['promptsrc-raises-novel'])} on the checkerboard, "
               f"{vt(r['promptsrc-raises-novel-halves'])} on halves.")
    out.append("- **Convergence.** " + (f"Claims whose curves still moved more than their tolerance over the last "
               f"window: {', '.join(conv)}." if conv else "Every curve-read arm moved less than its tolerance over "
               "the last window.") + f" The learning rate decays to zero by a cosine over the {p.prompt_steps} "
               "steps, so a flat tail here says that training stopped, not that the prompts reached an optimum: "
               f"CoOp's {k}-shot context vectors end at cosine {mean_std_text(v(f'coop-{k}/ctx_init_cosine'))} to the "
               "words they started as.")
    out.append(f"- **GPA.** The aggregated prompts sit {mean_std_text(v('promptsrc/gpa_shift'))} of the training "
               f"path away from the last prompts (gpa-raises-hm: {vt(r['gpa-raises-hm'])}).")
    lo, w = min(p.shots), f"{p.wrong_share:g}"
    parts = {x: np.mean([np.mean(c) for c in run.values(f"medical/biomed-w{w}-{k}/{x}_curve")]) for x in ("ce", "mse", "kl")}
    out.append(f"- **BiomedCoOp's weights.** Over training at {k} shots, the cross-entropy averages {parts['ce']:.3g}, "
               f"the MSE {parts['mse']:.3g} and the KL {parts['kl']:.3g}; the regularisers' share of the loss at "
               f"{lo} shot is {mean_std_text(v(f'medical/biomed-w{w}-{lo}/reg_share'))}. "
               f"BiomedCoOp's claims: {vt(r['biomedcoop-gains-most-at-few-shots'])} (gain largest at few shots), "
               f"{vt(r['biomedcoop-gains-on-novel'])} (gain larger on novel).")
    out.append(f"- **Pruning.** Averaged over shot counts, pruning drops wrong descriptions "
               f"{mean_std_text(v('medical/pruning/selectivity'))} more often than right ones (share of wrong minus "
               f"share of right; 1 would be perfect). pruning-helps-with-wrong-descriptions: "
               f"{vt(r['pruning-helps-with-wrong-descriptions'])}.")
    return "\n".join(out)
