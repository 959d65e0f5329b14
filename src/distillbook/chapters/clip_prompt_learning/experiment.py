"""The test bed (a tiny CLIP pretrained on the captioned images) and one seed's experiments: zero-shot, CoOp,
IVLP to PromptSRC, BiomedCoOp, the halves split and the health references."""

from __future__ import annotations

import dataclasses
import math
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
SRC_ARMS = ("ivlp", "promptsrc", "promptsrc_rescaled")
PAPER_VISION_TOKENS = 4  # IVLP's and PromptSRC's visual prompt tokens per layer


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
    return Captioned(tuple(p.shapes), tuple(p.colours), p.image_size, style_share=p.style_share,
                     extra_shapes=tuple(p.extra_shapes), extra_colours=tuple(p.extra_colours),
                     extra_share=p.extra_share)


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

        threads = torch.get_num_threads()
        torch.set_num_threads(p.pretrain_threads)  # alone on the machine: the seed workers start after
        try:
            run.fit("clip", run.seeds[0], clip.to(run.device), toyclip.pretrain_loss, next_batch,
                    steps=p.pretrain_steps, optimizer=optimizer, scheduler=schedule)
        finally:
            torch.set_num_threads(threads)
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


def coop_epochs(shots: int) -> int:
    """CoOp's recipe: 50 epochs at 1 shot, 100 at 2 to 4 shots, 200 at 8 or more (its configs ep50 / ep100 /
    ep200; BiomedCoOp trains with the same recipe)."""
    return 50 if shots <= 1 else 100 if shots <= 4 else 200


def recipe_steps(p: Params, n_images: int, batch: int, epochs: int) -> tuple[int, int]:
    """(steps, steps per epoch) of a recipe: ``epochs`` (times ``epoch_scale``, at least 1) passes over
    ``n_images`` few-shot images at ``batch`` (ceil(n / batch) steps each), rounded up to a multiple of
    ``prompt_evals`` so that the evaluations are equally spaced."""
    per_epoch = math.ceil(n_images / min(batch, n_images))
    steps = max(1, round(epochs * p.epoch_scale)) * per_epoch
    return math.ceil(steps / p.prompt_evals) * p.prompt_evals, per_epoch


def coop_learner(bed: Bed, names: list[str], seed: int) -> pl.PromptLearner:
    return pl.coop(bed.clip, bed.data.tokenizer, names, generator=derived_generator(seed, 3)).to(bed.device)


def ivlp_learner(p: Params, bed: Bed, names: list[str], seed: int) -> pl.PromptLearner:
    return pl.ivlp(bed.clip, bed.data.tokenizer, names, depth=p.ivlp_depth, n_vision_ctx=p.vision_tokens,
                   generator=derived_generator(seed, 3)).to(bed.device)


@dataclass(frozen=True)
class Recipe:
    """How a learner is trained: steps, batch, SGD rate (cosine decay), steps per epoch (for GPA)."""
    steps: int
    batch: int
    lr: float
    per_epoch: int


def coop_recipe(p: Params, n_images: int, shots: int) -> Recipe:
    steps, per_epoch = recipe_steps(p, n_images, p.coop_batch, coop_epochs(shots))
    return Recipe(steps, p.coop_batch, p.prompt_lr, per_epoch)


def src_recipe(p: Params, n_images: int) -> Recipe:
    steps, per_epoch = recipe_steps(p, n_images, p.src_batch, p.src_epochs)
    return Recipe(steps, p.src_batch, p.src_lr, per_epoch)


def few_shot_batches(images: torch.Tensor, labels: torch.Tensor, batch: int):
    """``fit``'s ``next_batch``: ``batch`` few-shot examples (images or their features) drawn with replacement."""
    def next_batch(gen):
        i = torch.randint(0, len(labels), (min(batch, len(labels)),), generator=gen)
        return images[i], labels[i]
    return next_batch


def prompt_scores(learner: pl.PromptLearner, tests: dict[str, TestSet], bed: Bed) -> dict[str, float]:
    """What a prompt training evaluates: base, novel and HM test accuracy and the context's cosine to its initial
    words (the learner goes back to the base class names it trains on)."""
    scores = base_novel(learner, tests, bed)
    scores["ctx_cosine"] = context_cosine(bed, learner)
    learner.set_classnames(bed.base_names)
    return scores


def train_prompts(run: Run, name: str, seed: int, learner: pl.PromptLearner, objective,
                  shots: tuple[torch.Tensor, torch.Tensor], tests: dict[str, TestSet], bed: Bed, recipe: Recipe,
                  gpa: bool = False) -> tuple[pl.PromptLearner, dict[str, list[float] | float]]:
    """A recipe's SGD with momentum and cosine decay (:func:`~distillbook.methods.prompt_learning.coop_optimizer`)
    on few-shot batches; with ``gpa``, the learner ends as the Gaussian-weighted average of its per-epoch prompts.

    A learner without visual prompts sees the frozen image features of its shots, computed once (its loss only
    ever reads them). Base and novel test accuracy and the context's cosine to its initial words are evaluated at
    step 0 and ``prompt_evals`` times during training (no selection: the curves say where training stands).
    Returns the learner and its curves (``base``, ``novel``, ``hm``, ``ctx_cosine``, with step 0; ``loss`` and
    the objective's parts, each the mean over its evaluation interval), plus, with ``gpa``, ``gpa_shift``
    (:func:`~distillbook.methods.prompt_learning.gpa_shift`) and ``last`` (base, novel and HM of the last prompts
    before aggregation).
    """
    p = run.params
    images, labels = shots
    if learner.vision_prompts is None:
        with torch.no_grad():
            images = toyclip.image_features(bed.clip, images.to(bed.device))
    aggregation = None
    if gpa:  # GPA's mean sits at the same share of the run as gpa_mean of src_epochs
        n_epochs = recipe.steps // recipe.per_epoch
        weights = pl.gaussian_weights(n_epochs, p.gpa_mean * n_epochs / p.src_epochs, p.gpa_std)
        aggregation = pl.GaussianPromptAggregation(learner, weights)
    trainee = pl.PromptTrainee(learner, aggregation)
    initial = {k: v.detach().clone() for k, v in learner.prompts().items()}

    def evaluate(model: pl.PromptTrainee):
        return prompt_scores(model.learner, tests, bed)

    start = evaluate(trainee)
    optimizer, schedule = pl.coop_optimizer(learner, recipe.lr, recipe.steps)
    result = run.fit(name, seed, trainee, pl.trainee_loss(objective), few_shot_batches(images, labels, recipe.batch),
                     steps=recipe.steps,
                     optimizer=optimizer, scheduler=schedule, after_step=pl.gpa_after_step(recipe.per_epoch),
                     evaluate=evaluate, eval_every=recipe.steps // p.prompt_evals)
    info: dict = {f"{k}_curve": ([start[k]] if k in start else []) + result.column(k)
                  for k in result.history[0] if k != "step"}
    if trainee.gpa is not None:
        info["last"] = base_novel(learner, tests, bed)
        last = {k: v.detach().clone() for k, v in learner.prompts().items()}
        trainee.gpa.load_into(learner)
        info["gpa_shift"] = pl.gpa_shift(initial, last, learner.prompts())
    learner.set_classnames(bed.base_names)
    return learner, info


def train_jointly(run: Run, name: str, seed: int, arms: dict[str, tuple[pl.PromptLearner, object]],
                  shots: tuple[torch.Tensor, torch.Tensor], tests: dict[str, TestSet], bed: Bed,
                  recipe: Recipe) -> dict[str, tuple[pl.PromptLearner, dict[str, list[float]]]]:
    """:func:`train_prompts` for several shallow learners at once (``arms``: name -> (learner, objective
    ``objective(learner, batch, text)``)), on the same batches with one text-tower pass per step
    (:class:`~distillbook.methods.prompt_learning.JointPrompts`): each arm still gets exactly its own gradient
    and SGD step. Returns each arm's learner and curves, as :func:`train_prompts` does."""
    p = run.params
    images, labels = shots
    with torch.no_grad():
        images = toyclip.image_features(bed.clip, images.to(bed.device))
    joint = pl.JointPrompts([learner for learner, _ in arms.values()], list(arms))

    def evaluate(model: pl.JointPrompts):
        return {f"{arm}/{k}": v for arm, learner in zip(model.names, model.learners)
                for k, v in prompt_scores(learner, tests, bed).items()}

    start = evaluate(joint)
    optimizer, schedule = pl.coop_optimizer(joint, recipe.lr, recipe.steps)
    result = run.fit(name, seed, joint, pl.joint_loss([objective for _, objective in arms.values()]),
                     few_shot_batches(images, labels, recipe.batch), steps=recipe.steps, optimizer=optimizer,
                     scheduler=schedule, evaluate=evaluate, eval_every=recipe.steps // p.prompt_evals)
    out = {}
    for arm, (learner, _) in arms.items():
        keys = [k for k in result.history[0] if k.startswith(f"{arm}/")]
        out[arm] = (learner, {f"{k[len(arm) + 1:]}_curve": ([start[k]] if k in start else []) + result.column(k)
                              for k in keys})
    return out


def record_arm(out: dict, prefix: str, learner, tests: dict[str, TestSet], bed: Bed, info: dict) -> None:
    """Final base/novel/HM of the learner (GPA's aggregate for PromptSRC, and its last prompts under
    ``<prefix>_last``) and its training curves."""
    for name, v in base_novel(learner, tests, bed).items():
        out[f"{prefix}/{name}"] = v
    for name, v in info.items():
        if name == "last":
            out.update({f"{prefix}_last/{k}": x for k, x in v.items()})
        else:
            out[f"{prefix}/{name}"] = v


# ---------------------------------------------------------------- one seed

SPLITS = ("checkerboard", "halves")


def biomed_tag(arm: str, weight: float | None, wrong: float, shots: int) -> str:
    """The metric prefix of a BiomedCoOp-family arm, e.g. ``medical/biomed-l10-w0.2-1`` (CoOp has no λ)."""
    return f"medical/{arm}-w{wrong:g}-{shots}" if weight is None else f"medical/{arm}-l{weight:g}-w{wrong:g}-{shots}"


def biomed_arms(p: Params) -> list[tuple[str, float | None, float]]:
    """(arm, λ, wrong share) of the BiomedCoOp-family arms trained at each shot count: CoOp; BiomedCoOp at every
    weight; without pruning at the paper's weight; and, with ``control_arms``, without pruning at the swept
    weights and every weight with no wrong description."""
    out = [("coop", None, p.wrong_share)]
    for wrong in dict.fromkeys((p.wrong_share, 0.0)):
        for lam in p.biomed_weights:
            for arm in ("biomed", "biomed_noprune"):
                if p.control_arms or (wrong and (arm == "biomed" or lam == p.biomed_weights[0])):
                    out.append((arm, lam, wrong))
    return out


def run_seed(run: Run, seed: int, bed: Bed) -> dict:
    """All experiments for one seed; records metrics, returns the halves split's CoOp context."""
    p = run.params
    out: dict[str, float | list[float]] = {}
    shown = {}
    k = p.forgetting_shots
    hb = halves_bed(bed)
    # ---- 1. forgetting on both splits: zero-shot (one template, the ensemble) and CoOp, to convergence
    sketch, few_shot = {}, {}
    for split, b in zip(SPLITS, (bed, hb)):
        tests = sketch[split] = test_sets(b, p.domain, p.test_per_class, seed)
        for arm, weights in (("zeroshot", zero_shot_split(b, TEMPLATES[:1])), ("ensemble", zero_shot_split(b))):
            for name, v in base_novel(None, tests, b, weights).items():
                out[f"{split}/{arm}/{name}"] = v
        shots = few_shot[split] = b.data.labelled(p.domain, b.base, k, derived_generator(seed, 11, k,
                                                                                     SPLITS.index(split)))
        learner, info = train_prompts(run, f"{split}-coop-{k}", seed, coop_learner(b, b.base_names, seed),
                                      pl.coop_loss, shots, tests, b, coop_recipe(p, len(shots[1]), k))
        record_arm(out, f"{split}/coop", learner, tests, b, info)
        if split == "halves":
            shown["coop_context"] = learner.ctx.detach().clone()
    # ---- 2. PromptSRC against IVLP on the halves split (where there is something to forget), PromptSRC's recipe
    h_tests = sketch["halves"]
    h_shots = few_shot["halves"]  # the same shots as CoOp's, so the learners are compared on one few-shot set
    frozen_text = pl.zero_shot_weights(hb.clip, hb.data.tokenizer, hb.base_names, list(TEMPLATES))
    rescale = math.sqrt(p.clip_width / p.reference_width)
    src = {"ivlp": (0.0, 0.0, 0.0, False), "promptsrc": (p.text_weight, p.image_weight, p.kl_weight, True)}
    if p.promptsrc_rescaled:
        src["promptsrc_rescaled"] = (p.text_weight * rescale, p.image_weight * rescale, p.kl_weight, True)
    if p.vision_tokens != PAPER_VISION_TOKENS:  # what the papers' token count does to this CLIP before training
        paper_tokens = ivlp_learner(p.model_copy(update={"vision_tokens": PAPER_VISION_TOKENS}), hb, hb.base_names,
                                    seed)
        out["halves/ivlp_paper_tokens/step0_hm"] = base_novel(paper_tokens, h_tests, hb)["hm"]
    for arm, (tw, iw, kw, gpa) in src.items():
        learner, info = train_prompts(run, f"halves-{arm}-{k}", seed, ivlp_learner(p, hb, hb.base_names, seed),
                                      pl.promptsrc_objective(frozen_text, tw, iw, kw), h_shots, h_tests, hb,
                                      src_recipe(p, len(h_shots[1])), gpa=gpa)
        record_arm(out, f"halves/{arm}", learner, h_tests, hb, info)
    # ---- 3. BiomedCoOp on the halves split's medical-like domain: CoOp, and BiomedCoOp with and without pruning
    # at each pre-registered weight, with wrong descriptions and without
    med = test_sets(hb, "medical", p.test_per_class, seed)
    for template, tag in (("a scan of a {}", "zeroshot"), (TEMPLATES[0], "photo_template")):  # photo: CoOp's start
        for name, v in base_novel(None, med, hb, zero_shot_split(hb, (template,))).items():
            out[f"medical/{tag}/{name}"] = v
    med_shots = {k_: hb.data.labelled("medical", hb.base, k_, derived_generator(seed, 13, k_)) for k_ in p.shots}
    scale = pl.logit_scale(hb.clip)
    features = {}
    for wrong in dict.fromkeys((p.wrong_share, 0.0)):
        texts, wrong_index = hb.data.descriptions(p.descriptions, derived_generator(seed, 17, int(100 * wrong)),
                                                  wrong, domain="medical", wrong_kind=p.wrong_kind)
        features[wrong] = pl.description_features(hb.clip, hb.data.tokenizer, [texts[c] for c in hb.base])
        novel_features = pl.description_features(hb.clip, hb.data.tokenizer, [texts[c] for c in hb.novel])
        ensembles = {"base": pl.ensemble(features[wrong]), "novel": pl.ensemble(novel_features)}
        for name, v in base_novel(None, med, hb, ensembles).items():  # the description ensemble as a classifier
            out[f"medical/descriptions-w{wrong:g}/{name}"] = v
        if wrong and bool(wrong_index.any()) and bool((~wrong_index).any()):  # the same ensemble, pruned perfectly
            right_only = {"base": pl.ensemble(features[wrong], ~wrong_index),
                          "novel": pl.ensemble(novel_features, ~wrong_index)}
            for name, v in base_novel(None, med, hb, right_only).items():
                out[f"medical/descriptions-right-w{wrong:g}/{name}"] = v
        selectivity, pruned = [], []
        for k_ in p.shots:  # which description indices pruning drops, scored on all the shot images at once
            with torch.no_grad():
                u = F.normalize(toyclip.image_features(hb.clip, med_shots[k_][0].to(hb.device)), dim=-1)
                keep = pl.prune_descriptions(pl.description_scores(u, features[wrong], scale), p.tau,
                                             p.restandardise).cpu()
            if wrong and bool(wrong_index.any()) and bool((~wrong_index).any()):
                pruned_wrong = float((~keep[wrong_index]).float().mean())
                pruned_right = float((~keep[~wrong_index]).float().mean())
                out[f"medical/pruning-{k_}/pruned_wrong"] = pruned_wrong
                out[f"medical/pruning-{k_}/pruned_right"] = pruned_right
                selectivity.append(pruned_wrong - pruned_right)
            elif not wrong:
                pruned.append(float((~keep).float().mean()))
        if selectivity:
            out["medical/pruning/selectivity"] = float(np.mean(selectivity))
        if pruned:
            out["medical/pruning/pruned_without_wrong"] = float(np.mean(pruned))
    for k_ in p.shots:  # every arm of a shot count side by side: CoOp, and BiomedCoOp with and without pruning
        arms, weight = {}, {}
        for arm, lam, wrong in biomed_arms(p):
            tag = biomed_tag(arm, lam, wrong, k_)
            if arm == "coop":
                arms[tag] = pl.coop_loss
            else:
                arms[tag] = pl.biomedcoop_objective(features[wrong], p.tau if arm == "biomed" else None, lam, lam,
                                                    p.restandardise)
                weight[tag] = lam
        trained = train_jointly(run, f"medical-{k_}", seed, {tag: (coop_learner(hb, hb.base_names, seed), objective)
                                                             for tag, objective in arms.items()},
                                med_shots[k_], med, hb, coop_recipe(p, len(med_shots[k_][1]), k_))
        for tag, (learner, info) in trained.items():
            record_arm(out, tag, learner, med, hb, info)
            if tag in weight:
                out[f"{tag}/reg_share"] = pl.regulariser_share(info["ce_curve"], info["mse_curve"], info["kl_curve"],
                                                               weight[tag], weight[tag])
    # ---- test-bed health: zero-shot against a prototype classifier on the frozen features, per split and domain
    for split, b, base_tests in (("checkerboard", bed, {p.domain: sketch["checkerboard"]["base"]}),
                                 ("halves", hb, {p.domain: sketch["halves"]["base"], "medical": med["base"]})):
        for domain in DOMAIN_WORDS:
            test = base_tests.get(domain) or test_set(b, domain, b.base, p.test_per_class, seed)
            template = "a scan of a {}" if domain == "medical" else TEMPLATES[0]
            out[f"health/{split}/{domain}/zeroshot"] = accuracy(
                None, test, b.base_names, pl.zero_shot_weights(b.clip, b.data.tokenizer, b.base_names, [template]))
            out[f"health/{split}/{domain}/prototype"] = prototype_accuracy(b, domain, test, p.test_per_class, seed)
    run.record(seed, **out)
    return shown
