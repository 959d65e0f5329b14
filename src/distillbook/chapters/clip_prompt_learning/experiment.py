"""The test bed (a tiny CLIP pretrained on the captioned images) and one seed's experiments: zero-shot, CoOp,
IVLP to PromptSRC, BiomedCoOp, the halves split and the health references."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.chapters.clip_prompt_learning.params import Params
from distillbook.core.results import Run
from distillbook.core.runtime import derived_generator, derived_seed
from distillbook.methods import prompt_learning as pl
from distillbook.models import clip as toyclip
from distillbook.testbeds.captioned import DOMAIN_WORDS, Captioned

TEMPLATES = ("a photo of a {}", "a picture of a {}", "a sketch of a {}", "a drawing of a {}", "a scan of a {}",
             "a {}", "a {} shape")
SRC_ARMS = ("ivlp", "ivlp_l1", "ivlp_l1_kl", "promptsrc")
BIOMED_ARMS = ("coop", "coop_mse", "biomed_noprune", "biomed")


# ---------------------------------------------------------------- the pretrained CLIP


@dataclass
class Bed:
    data: Captioned
    clip: torch.nn.Module
    base: list[int]
    novel: list[int]

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    @property
    def base_names(self) -> list[str]:
        return [self.data.classnames[c] for c in self.base]

    @property
    def novel_names(self) -> list[str]:
        return [self.data.classnames[c] for c in self.novel]


def captioned(p: Params) -> Captioned:
    """The captioned test bed of these parameters (images, captions, tokenizer, class split)."""
    return Captioned(tuple(p.shapes), tuple(p.colours), p.image_size, style_share=p.style_share)


def build_bed(run: Run) -> Bed:
    """Contrastive pretraining on captioned images (first seed), or a saved model (``clip_checkpoint``)."""
    p = run.params
    data = captioned(p)
    if p.clip_checkpoint is not None:
        clip = toyclip.load_clip(p.clip_checkpoint, len(data.tokenizer), p.image_size)
    else:
        torch.manual_seed(derived_seed(run.seeds[0], 1))  # the CLIP's initial weights
        clip = toyclip.tiny_clip(len(data.tokenizer), p.image_size, p.patch_size, p.clip_width, p.clip_layers,
                                 p.clip_heads, p.clip_width, data.max_length)
        optimizer = torch.optim.AdamW(clip.parameters(), lr=p.pretrain_lr, weight_decay=0.1)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, p.pretrain_lr, total_steps=p.pretrain_steps)

        def next_batch(gen):
            return data.pretraining_batch(p.pretrain_batch, gen)

        run.fit("clip", run.seeds[0], clip.to(run.device), toyclip.pretrain_loss, next_batch,
                steps=p.pretrain_steps, optimizer=optimizer, scheduler=schedule)
    clip.eval().requires_grad_(False)
    return Bed(data, clip.to(run.device), data.base_classes, data.novel_classes)


def halves_bed(bed: Bed) -> Bed:
    """The same CLIP and images with CoOp's split: base classes are the first half of the ids."""
    data = dataclasses.replace(bed.data, split="halves")
    return Bed(data, bed.clip, data.base_classes, data.novel_classes)


# ---------------------------------------------------------------- evaluation


@dataclass
class TestSet:
    images: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor  # the frozen model's normalised image features


def test_set(bed: Bed, domain: str, classes: list[int], per_class: int, seed: int) -> TestSet:
    gen = derived_generator(seed, 7, sum(classes), len(classes), list(DOMAIN_WORDS).index(domain))
    images, labels = bed.data.labelled(domain, classes, per_class, gen)
    images, labels = images.to(bed.device), labels.to(bed.device)
    with torch.no_grad():
        features = F.normalize(toyclip.image_features(bed.clip, images), dim=-1)
    return TestSet(images, labels, features)


def test_sets(bed: Bed, domain: str, per_class: int, seed: int) -> dict[str, TestSet]:
    """The base and novel test sets of a domain."""
    return {"base": test_set(bed, domain, bed.base, per_class, seed),
            "novel": test_set(bed, domain, bed.novel, per_class, seed)}


def zero_shot_split(bed: Bed, templates=TEMPLATES) -> dict[str, torch.Tensor]:
    """Zero-shot class weights (a template ensemble; one template is the plain classifier) of the base and of the
    novel classes."""
    return {split: pl.zero_shot_weights(bed.clip, bed.data.tokenizer, names, list(templates))
            for split, names in (("base", bed.base_names), ("novel", bed.novel_names))}


@torch.no_grad()
def accuracy(learner: pl.PromptLearner | None, test: TestSet, classnames: list[str],
             weights: torch.Tensor | None = None) -> float:
    """Accuracy of a learner (prompted text, and prompted images when it has visual prompts) or of fixed class
    weights on the frozen image features."""
    if learner is None:
        return pl.accuracy(test.features @ weights.T, test.labels)
    learner.set_classnames(classnames)
    text = learner.text_features()
    images = test.features if learner.vision_prompts is None else torch.cat(
        [learner.image_features(chunk) for chunk in test.images.split(512)])
    return pl.accuracy(images @ text.T, test.labels)


def base_novel(learner, tests: dict[str, TestSet], bed: Bed, weights: dict | None = None) -> dict[str, float]:
    b = accuracy(learner, tests["base"], bed.base_names, None if weights is None else weights["base"])
    n = accuracy(learner, tests["novel"], bed.novel_names, None if weights is None else weights["novel"])
    return {"base": b, "novel": n, "hm": pl.harmonic_mean(b, n)}


@torch.no_grad()
def prototype_accuracy(bed: Bed, domain: str, test: TestSet, per_class: int, seed: int) -> float:
    """A supervised reference on the frozen image features: each base class's mean (normalised) feature from
    ``per_class`` labelled images of the domain (drawn apart from the test images), as class weights."""
    images, labels = bed.data.labelled(domain, bed.base, per_class,
                                       derived_generator(seed, 23, list(DOMAIN_WORDS).index(domain)))
    features = F.normalize(toyclip.image_features(bed.clip, images.to(bed.device)), dim=-1)
    labels = labels.to(bed.device)
    prototypes = torch.stack([features[labels == j].mean(0) for j in range(len(bed.base))])
    return accuracy(None, test, bed.base_names, F.normalize(prototypes, dim=-1))


def context_cosine(bed: Bed, learner: pl.PromptLearner, init: str = "a photo of a") -> float:
    """Mean cosine between the learned context vectors and the embeddings of the words they started as."""
    table = bed.clip.text_model.embeddings.token_embedding.weight
    start = table[torch.tensor(bed.data.tokenizer.ids(init), device=table.device)]
    return float(F.cosine_similarity(learner.ctx.detach(), start, dim=-1).mean())


# ---------------------------------------------------------------- training prompts


def coop_learner(bed: Bed, names: list[str], seed: int) -> pl.PromptLearner:
    return pl.coop(bed.clip, bed.data.tokenizer, names, generator=derived_generator(seed, 3)).to(bed.device)


def ivlp_learner(p: Params, bed: Bed, names: list[str], seed: int) -> pl.PromptLearner:
    return pl.ivlp(bed.clip, bed.data.tokenizer, names, depth=p.ivlp_depth, n_vision_ctx=p.vision_tokens,
                   generator=derived_generator(seed, 3)).to(bed.device)


def train_prompts(run: Run, name: str, seed: int, learner: pl.PromptLearner, objective,
                  shots: tuple[torch.Tensor, torch.Tensor], tests: dict[str, TestSet], bed: Bed,
                  gpa: bool = False) -> tuple[pl.PromptLearner, dict[str, list[float] | float]]:
    """CoOp's recipe (:func:`~distillbook.methods.prompt_learning.coop_optimizer`) on few-shot batches; with
    ``gpa``, the learner ends as the Gaussian-weighted average of its per-epoch prompts.

    Base and novel test accuracy of the current prompts are evaluated ``prompt_evals`` times (no selection: the
    curves only say where training stands). Returns the learner and its curves (``base``, ``novel``, ``hm``,
    ``loss`` and the objective's parts, each the mean over its evaluation interval), plus, with ``gpa``,
    ``gpa_shift`` (:func:`~distillbook.methods.prompt_learning.gpa_shift`).
    """
    p = run.params
    images, labels = shots
    weights = pl.gaussian_weights(p.gpa_epochs, p.gpa_mean, p.gpa_std)
    trainee = pl.PromptTrainee(learner, pl.GaussianPromptAggregation(learner, weights) if gpa else None)
    initial = {k: v.detach().clone() for k, v in learner.prompts().items()}

    def next_batch(gen):
        i = torch.randint(0, len(labels), (min(p.prompt_batch, len(labels)),), generator=gen)
        return images[i], labels[i]

    def evaluate(model: pl.PromptTrainee):
        scores = base_novel(model.learner, tests, bed)
        model.learner.set_classnames(bed.base_names)  # evaluation switched the names; training goes on with base
        return scores

    optimizer, schedule = pl.coop_optimizer(learner, p.prompt_lr, p.prompt_steps)
    result = run.fit(name, seed, trainee, pl.trainee_loss(objective), next_batch, steps=p.prompt_steps,
                     optimizer=optimizer, scheduler=schedule,
                     after_step=pl.gpa_after_step(p.prompt_steps // p.gpa_epochs), evaluate=evaluate,
                     eval_every=p.prompt_steps // p.prompt_evals)
    info: dict[str, list[float] | float] = {f"{k}_curve": result.column(k) for k in result.history[0] if k != "step"}
    if trainee.gpa is not None:
        last = {k: v.detach().clone() for k, v in learner.prompts().items()}
        trainee.gpa.load_into(learner)
        info["gpa_shift"] = pl.gpa_shift(initial, last, learner.prompts())
    learner.set_classnames(bed.base_names)
    return learner, info


def record_arm(out: dict, prefix: str, learner, tests: dict[str, TestSet], bed: Bed, info: dict) -> None:
    """Final base/novel/HM of the learner (GPA's aggregate for PromptSRC) and its training curves."""
    for name, v in base_novel(learner, tests, bed).items():
        out[f"{prefix}/{name}"] = v
    for name, v in info.items():
        out[f"{prefix}/{name}"] = v


# ---------------------------------------------------------------- one seed


def run_seed(run: Run, seed: int, bed: Bed) -> dict:
    """All experiments for one seed; records metrics, returns the largest-shot CoOp learner's context."""
    p = run.params
    out: dict[str, float | list[float]] = {}
    shown = {}
    k = max(p.shots)
    # ---- 1. zero-shot, template ensemble and CoOp on the target domain
    tests = test_sets(bed, p.domain, p.test_per_class, seed)
    single, ensemble = zero_shot_split(bed, TEMPLATES[:1]), zero_shot_split(bed)
    for arm, weights in (("zeroshot", single), ("ensemble", ensemble)):
        for name, v in base_novel(None, tests, bed, weights).items():
            out[f"{arm}/{name}"] = v
    few_shot = {k_: bed.data.labelled(p.domain, bed.base, k_, derived_generator(seed, 11, k_)) for k_ in p.shots}
    for k_ in p.shots:
        learner, info = train_prompts(run, f"coop-{k_}", seed, coop_learner(bed, bed.base_names, seed), pl.coop_loss,
                                      few_shot[k_], tests, bed)
        record_arm(out, f"coop-{k_}", learner, tests, bed, info)
        out[f"coop-{k_}/ctx_init_cosine"] = context_cosine(bed, learner)
        if k_ == k:
            shown["coop_context"] = learner.ctx.detach().clone()
    # ---- 2. PromptSRC from IVLP, one component at a time
    frozen_text = ensemble["base"]
    src = {"ivlp": (0.0, 0.0, 0.0, False), "ivlp_l1": (p.text_weight, p.image_weight, 0.0, False),
           "ivlp_l1_kl": (p.text_weight, p.image_weight, p.kl_weight, False),
           "promptsrc": (p.text_weight, p.image_weight, p.kl_weight, True)}
    for arm, (tw, iw, kw, gpa) in src.items():
        objective = pl.promptsrc_objective(frozen_text, tw, iw, kw)
        learner, info = train_prompts(run, f"{arm}-{k}", seed, ivlp_learner(p, bed, bed.base_names, seed), objective,
                                      few_shot[k], tests, bed, gpa=gpa)
        record_arm(out, arm, learner, tests, bed, info)
    # ---- 3. BiomedCoOp on the medical-like domain, with wrong descriptions and without
    med = test_sets(bed, "medical", p.test_per_class, seed)
    for template, tag in (("a scan of a {}", "zeroshot"), (TEMPLATES[0], "photo_template")):  # photo: CoOp's start
        for name, v in base_novel(None, med, bed, zero_shot_split(bed, (template,))).items():
            out[f"medical/{tag}/{name}"] = v
    med_shots = {k_: bed.data.labelled("medical", bed.base, k_, derived_generator(seed, 13, k_)) for k_ in p.shots}
    scale = pl.logit_scale(bed.clip)
    for wrong in (p.wrong_share, 0.0):
        texts, wrong_index = bed.data.descriptions(p.descriptions, derived_generator(seed, 17, int(100 * wrong)), wrong,
                                                   domain="medical")
        features = pl.description_features(bed.clip, bed.data.tokenizer, [texts[c] for c in bed.base])
        arms = BIOMED_ARMS if wrong else ("biomed_noprune", "biomed")
        selectivity = []
        for k_ in p.shots:
            for arm in arms:
                objective = {"coop": pl.coop_loss,
                             "coop_mse": pl.biomedcoop_objective(features, None, p.mse_weight, 0.0),
                             "biomed_noprune": pl.biomedcoop_objective(features, None, p.mse_weight, p.biomed_kl_weight),
                             "biomed": pl.biomedcoop_objective(features, p.tau, p.mse_weight, p.biomed_kl_weight)}[arm]
                tag = f"medical/{arm}-w{wrong:g}-{k_}"
                learner, info = train_prompts(run, tag, seed, coop_learner(bed, bed.base_names, seed), objective,
                                              med_shots[k_], med, bed)
                record_arm(out, tag, learner, med, bed, info)
                if arm.startswith("biomed"):
                    out[f"{tag}/reg_share"] = pl.regulariser_share(info["ce_curve"], info["mse_curve"],
                                                                   info["kl_curve"], p.mse_weight, p.biomed_kl_weight)
            if wrong and bool(wrong_index.any()) and bool((~wrong_index).any()):
                # which description indices pruning drops, scored on all the shot images at once
                with torch.no_grad():
                    u = F.normalize(toyclip.image_features(bed.clip, med_shots[k_][0].to(bed.device)), dim=-1)
                    keep = pl.prune_descriptions(pl.description_scores(u, features, scale), p.tau).cpu()
                pruned_wrong = float((~keep[wrong_index]).float().mean())
                pruned_right = float((~keep[~wrong_index]).float().mean())
                out[f"medical/pruning-{k_}/pruned_wrong"] = pruned_wrong
                out[f"medical/pruning-{k_}/pruned_right"] = pruned_right
                selectivity.append(pruned_wrong - pruned_right)
        if selectivity:
            out["medical/pruning/selectivity"] = float(np.mean(selectivity))
    # ---- 4. the halves split (diagnosis of the forgetting claims): zero-shot, CoOp, IVLP, PromptSRC
    hb = halves_bed(bed)
    h_tests = test_sets(hb, p.domain, p.test_per_class, seed)
    for name, v in base_novel(None, h_tests, hb, zero_shot_split(hb, TEMPLATES[:1])).items():
        out[f"halves/zeroshot/{name}"] = v
    h_shots = hb.data.labelled(p.domain, hb.base, k, derived_generator(seed, 19, k))
    learner, info = train_prompts(run, f"halves-coop-{k}", seed, coop_learner(hb, hb.base_names, seed), pl.coop_loss,
                                  h_shots, h_tests, hb)
    record_arm(out, f"halves/coop-{k}", learner, h_tests, hb, info)
    h_frozen = pl.zero_shot_weights(hb.clip, hb.data.tokenizer, hb.base_names, list(TEMPLATES))
    for arm in ("ivlp", "promptsrc"):
        tw, iw, kw, gpa = src[arm]
        learner, info = train_prompts(run, f"halves-{arm}-{k}", seed, ivlp_learner(p, hb, hb.base_names, seed),
                                      pl.promptsrc_objective(h_frozen, tw, iw, kw), h_shots, h_tests, hb, gpa=gpa)
        record_arm(out, f"halves/{arm}", learner, h_tests, hb, info)
    # ---- test-bed health: zero-shot against a prototype classifier on the frozen features, per domain
    base_tests = {p.domain: tests["base"], "medical": med["base"]}
    for domain in DOMAIN_WORDS:
        test = base_tests.get(domain) or test_set(bed, domain, bed.base, p.test_per_class, seed)
        template = "a scan of a {}" if domain == "medical" else TEMPLATES[0]
        out[f"health/{domain}/zeroshot"] = accuracy(
            None, test, bed.base_names, pl.zero_shot_weights(bed.clip, bed.data.tokenizer, bed.base_names, [template]))
        out[f"health/{domain}/prototype"] = prototype_accuracy(bed, domain, test, p.test_per_class, seed)
    run.record(seed, **out)
    return shown
