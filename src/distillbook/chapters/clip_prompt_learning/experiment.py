"""Prompt learning for CLIP-style models: CoOp, PromptSRC (41), BiomedCoOp (16), with the survey (34) as the map.

A tiny CLIP (transformers' ``CLIPModel`` from config) is pretrained contrastively in the chapter on the
``captioned`` test bed: mostly "photos", with a small share of "sketches" and "scans" whose captions usually
name their style. Prompts are then learned on a frozen CLIP from a few labelled images of the *base* classes of
a shifted domain and evaluated on base and on *novel* classes (never seen in prompt training):

1. Zero-shot with one hand-written template, with a template ensemble, and CoOp at 1, 4 and 16 shots (sketch).
2. PromptSRC built up from IVLP (deep vision and text prompts) one component at a time: the L1 feature terms,
   the KL term to the zero-shot logits, Gaussian prompt aggregation (sketch, 16 shots).
3. BiomedCoOp on the medical-like domain: CoOp, CoOp + the ensemble MSE, BiomedCoOp without and with outlier
   pruning, at 1, 4 and 16 shots, with a share of deliberately wrong descriptions, and a control without them.
4. A diagnosis on the ``halves`` split (novel classes with shapes no base class has): zero-shot, CoOp, IVLP and
   PromptSRC at the largest shot count, where forgetting novel classes is possible.

Every prompt learner is evaluated on the base and novel test sets ``prompt_evals`` times during training; the
claims read those curves (the mean of the last evaluations, and whether they still move), not the last step.
The chapter also records what tests its explanations (the loss parts, GPA's distance from the last prompts,
how selectively pruning removes the wrong descriptions) and a test-bed health reference per domain: a
prototype classifier (each base class's mean image feature from labelled target images) on the frozen features.

The CLIP is pretrained once per run with the first seed (the papers adapt one given CLIP); the seeds vary the
few-shot sets, prompt initialisation and batches, and the test images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from distillbook.core import claims as cl
from distillbook.methods import prompt_learning as pl
from distillbook.core.claims import Claim, Curves, mean_std_text
from distillbook.models import clip as toyclip
from distillbook.core.params import ChapterParams
from distillbook.core.runtime import derived_generator, derived_seed
from distillbook.core.plotting import mean_std_band, reference_band
from distillbook.core.results import Run
from distillbook.testbeds.captioned import DOMAIN_WORDS, Captioned

CHAPTER = "clip-prompt-learning"
PROMPTSRC, BIOMEDCOOP, SURVEY = 41, 16, 34
PositiveInt = Annotated[int, Field(ge=1)]
TEMPLATES = ("a photo of a {}", "a picture of a {}", "a sketch of a {}", "a drawing of a {}", "a scan of a {}",
             "a {}", "a {} shape")
SRC_ARMS = ("ivlp", "ivlp_l1", "ivlp_l1_kl", "promptsrc")
BIOMED_ARMS = ("coop", "coop_mse", "biomed_noprune", "biomed")


class Params(ChapterParams):
    # test bed
    shapes: list[str] = Field(min_length=2, description="shape names (captioned test bed)")
    colours: list[str] = Field(min_length=2, description="colour names; classes are shapes x colours")
    image_size: int = Field(ge=16)
    style_share: float = Field(ge=0, le=0.5, description="share of pretraining images from each non-photo domain")
    test_per_class: int = Field(ge=10, description="test images per class and domain")
    # CLIP
    clip_width: int = Field(ge=16)
    clip_layers: int = Field(ge=1)
    clip_heads: int = Field(ge=1)
    patch_size: int = Field(ge=2)
    pretrain_steps: int = Field(ge=1)
    pretrain_batch: int = Field(ge=4)
    pretrain_lr: float = Field(gt=0, description="peak AdamW rate of the one-cycle schedule")
    clip_checkpoint: str | None = Field(None, description="a saved CLIPModel to adapt instead of pretraining one "
                                        "(a local folder, or a hub id when online); it must read this test bed's "
                                        "word ids, so this is for models saved by this chapter")
    # prompt learning
    domain: Literal["photo", "sketch", "medical"] = Field(description="target domain of CoOp and PromptSRC")
    shots: list[PositiveInt] = Field(min_length=2, description="labelled images per base class")
    prompt_steps: int = Field(ge=1)
    prompt_batch: int = Field(ge=1)
    prompt_lr: float = Field(gt=0, description="SGD rate (cosine decay) of the prompt vectors (CoOp's 0.002)")
    prompt_evals: int = Field(ge=2 * cl.WINDOW, description="evaluations of base and novel test accuracy during "
                              "each prompt training (equally spaced; the claims read the last ones)")
    ivlp_depth: int = Field(ge=1, description="layers with learned prompts in each tower (IVLP, PromptSRC)")
    vision_tokens: int = Field(ge=1, description="learned visual tokens per layer")
    text_weight: float = Field(ge=0, description="PromptSRC's L1 text-feature weight (25)")
    image_weight: float = Field(ge=0, description="PromptSRC's L1 image-feature weight (10)")
    kl_weight: float = Field(ge=0, description="PromptSRC's KL weight (1)")
    gpa_epochs: int = Field(ge=2, description="epochs the prompt steps are split into for GPA")
    gpa_mean: float = Field(description="GPA's Gaussian mean, in epochs")
    gpa_std: float = Field(gt=0, description="GPA's Gaussian std, in epochs")
    # BiomedCoOp
    descriptions: int = Field(ge=2, description="descriptions per class (the mock LLM ensemble)")
    wrong_share: float = Field(ge=0, lt=1, description="share of description indices that are deliberately wrong")
    mse_weight: float = Field(ge=0, description="BiomedCoOp's MSE weight")
    biomed_kl_weight: float = Field(ge=0, description="BiomedCoOp's KL weight")
    tau: float = Field(gt=0, description="pruning threshold on the robust z-score")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], shapes=["square", "circle"], colours=["red", "green"], image_size=16,
                      style_share=0.1, test_per_class=10, clip_width=16, clip_layers=2, clip_heads=2, patch_size=8,
                      pretrain_steps=4, pretrain_batch=16, pretrain_lr=1.5e-3, domain="sketch", shots=[1, 2],
                      prompt_steps=6, prompt_batch=4, prompt_lr=0.002, prompt_evals=6, ivlp_depth=2, vision_tokens=2, text_weight=25.0,
                      image_weight=10.0, kl_weight=1.0, gpa_epochs=2, gpa_mean=1.5, gpa_std=1.0, descriptions=5,
                      wrong_share=0.2, mse_weight=1.0, biomed_kl_weight=1.0, tau=1.0),
        "cpu": dict(seeds=[0, 1, 2, 3], shapes=["square", "circle", "triangle", "cross", "ring"],
                    colours=["red", "green", "blue", "yellow"], image_size=32, style_share=0.1, test_per_class=100,
                    clip_width=64, clip_layers=2, clip_heads=4, patch_size=8, pretrain_steps=1200, pretrain_batch=64,
                    pretrain_lr=1.5e-3, domain="sketch", shots=[1, 4, 16], prompt_steps=160, prompt_batch=32,
                    prompt_lr=0.002, prompt_evals=10, ivlp_depth=2, vision_tokens=4, text_weight=25.0, image_weight=10.0,
                    kl_weight=1.0, gpa_epochs=20, gpa_mean=15.0, gpa_std=1.0, descriptions=50, wrong_share=0.2,
                    mse_weight=1.0, biomed_kl_weight=1.0, tau=1.0),
        "gpu": dict(seeds=[0, 1, 2], shapes=["square", "circle", "triangle", "diamond", "cross", "ring", "bar", "plus"],
                    colours=["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white"], image_size=64,
                    style_share=0.1, test_per_class=300, clip_width=256, clip_layers=6, clip_heads=8, patch_size=8,
                    pretrain_steps=3000, pretrain_batch=256, pretrain_lr=1e-3, domain="sketch", shots=[1, 4, 16],
                    prompt_steps=500, prompt_batch=64, prompt_lr=0.002, prompt_evals=10, ivlp_depth=4, vision_tokens=4,
                    text_weight=25.0, image_weight=10.0, kl_weight=1.0, gpa_epochs=20, gpa_mean=15.0, gpa_std=1.0,
                    descriptions=200, wrong_share=0.2, mse_weight=1.0, biomed_kl_weight=1.0, tau=1.0),
    }

    @model_validator(mode="after")
    def _checks(self):
        if self.shots != sorted(set(self.shots)):
            raise ValueError(f"shots must increase, e.g. [1, 4, 16], got {self.shots}")
        if self.ivlp_depth > self.clip_layers:
            raise ValueError(f"ivlp_depth ({self.ivlp_depth}) must be at most clip_layers ({self.clip_layers})")
        if self.prompt_steps % self.prompt_evals:
            raise ValueError(f"prompt_steps ({self.prompt_steps}) must be a multiple of prompt_evals "
                             f"({self.prompt_evals})")
        if self.prompt_steps % self.gpa_epochs:
            raise ValueError(f"prompt_steps ({self.prompt_steps}) must be a multiple of gpa_epochs ({self.gpa_epochs})")
        if self.clip_width % self.clip_heads:
            raise ValueError(f"clip_width ({self.clip_width}) must be divisible by clip_heads ({self.clip_heads})")
        Captioned(tuple(self.shapes), tuple(self.colours), self.image_size)  # names the bad shape or colour
        return self


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


def make_bed(p: Params) -> Captioned:
    return Captioned(tuple(p.shapes), tuple(p.colours), p.image_size, style_share=p.style_share)


def pretrain(run: Run) -> Bed:
    """Contrastive pretraining on captioned images (first seed), or a saved model (``clip_checkpoint``)."""
    p = run.params
    data = make_bed(p)
    if p.clip_checkpoint is not None:
        clip = load_clip(p.clip_checkpoint, len(data.tokenizer), p.image_size)
    else:
        torch.manual_seed(derived_seed(run.seeds[0], 1))
        clip = toyclip.tiny_clip(len(data.tokenizer), p.image_size, p.patch_size, p.clip_width, p.clip_layers,
                                 p.clip_heads, p.clip_width, data.max_length)
        optimizer = torch.optim.AdamW(clip.parameters(), lr=p.pretrain_lr, weight_decay=0.1)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, p.pretrain_lr, total_steps=p.pretrain_steps)
        run.fit("clip", run.seeds[0], clip.to(run.device), toyclip.pretrain_loss,
                lambda g: data.pretraining_batch(p.pretrain_batch, g), steps=p.pretrain_steps, optimizer=optimizer,
                scheduler=schedule)
    clip.eval().requires_grad_(False)
    return Bed(data, clip.to(run.device), data.base_classes, data.novel_classes)


def load_clip(name_or_path: str, vocab_size: int, image_size: int):
    """A saved ``CLIPModel`` (local folder, or hub id when online), checked against this test bed."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(name_or_path)
    text, vision = clip.config.text_config, clip.config.vision_config
    if text.vocab_size != vocab_size or vision.image_size != image_size:
        raise ValueError(f"clip_checkpoint={name_or_path!r} has vocab {text.vocab_size} and image size "
                         f"{vision.image_size}; this test bed needs vocab {vocab_size} and image size {image_size}")
    if text.eos_token_id == 2:
        raise ValueError(f"clip_checkpoint={name_or_path!r} has eos_token_id 2, which makes CLIPTextModel pool at "
                         "argmax(input_ids); the test bed's end token is id 1")
    return clip


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


# ---------------------------------------------------------------- training prompts


class Trainee(torch.nn.Module):
    """A prompt learner and, for PromptSRC, its GPA state: one module, so one checkpoint resumes both."""

    def __init__(self, learner: pl.PromptLearner, gpa: pl.GaussianPromptAggregation | None):
        super().__init__()
        self.learner, self.gpa = learner, gpa
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


def train_prompts(run: Run, name: str, seed: int, learner: pl.PromptLearner, objective,
                  shots: tuple[torch.Tensor, torch.Tensor], tests: dict[str, TestSet], bed: Bed,
                  gpa: bool = False) -> tuple[pl.PromptLearner, dict[str, list[float] | float]]:
    """SGD with cosine decay on few-shot batches (CoOp's recipe); with ``gpa``, the learner ends as the
    Gaussian-weighted average of its per-epoch prompts.

    Base and novel test accuracy of the current prompts are evaluated ``prompt_evals`` times (no selection: the
    curves only say where training stands). Returns the learner and its curves (``base``, ``novel``, ``hm``,
    ``loss`` and the objective's parts, from the last batch of each interval), plus, with ``gpa``,
    ``gpa_shift``: ||P_GPA - P_last|| / ||P_last - P_init|| over all prompt tensors.
    """
    p = run.params
    images, labels = shots
    weights = pl.gaussian_weights(p.gpa_epochs, p.gpa_mean, p.gpa_std)
    trainee = Trainee(learner, pl.GaussianPromptAggregation(learner, weights) if gpa else None)
    steps_per_epoch = p.prompt_steps // p.gpa_epochs
    initial = {k: v.detach().clone() for k, v in learner.prompts().items()}

    def loss_fn(model: Trainee, batch):
        model.step += 1
        return objective(model.learner, batch)

    def after_step(model: Trainee):
        if model.gpa is not None and int(model.step) % steps_per_epoch == 0:
            model.gpa.update(model.learner)

    def next_batch(gen):
        i = torch.randint(0, len(labels), (min(p.prompt_batch, len(labels)),), generator=gen)
        return images[i], labels[i]

    def evaluate(model: Trainee):
        scores = base_novel(model.learner, tests, bed)
        model.learner.set_classnames(bed.base_names)  # evaluation switched the names; training goes on with base
        return scores

    optimizer = torch.optim.SGD(list(learner.prompts().values()), lr=p.prompt_lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, p.prompt_steps)
    result = run.fit(name, seed, trainee, loss_fn, next_batch, steps=p.prompt_steps, optimizer=optimizer,
                     scheduler=schedule, after_step=after_step, evaluate=evaluate,
                     eval_every=p.prompt_steps // p.prompt_evals)
    info: dict[str, list[float] | float] = {f"{k}_curve": result.column(k) for k in result.history[0] if k != "step"}
    if trainee.gpa is not None:
        last = {k: v.detach().clone() for k, v in learner.prompts().items()}
        trainee.gpa.load_into(learner)
        moved = sum(float((last[k] - initial[k]).pow(2).sum()) for k in last)
        shift = sum(float((v.detach() - last[k]).pow(2).sum()) for k, v in learner.prompts().items())
        info["gpa_shift"] = (shift / max(moved, 1e-30)) ** 0.5
    learner.set_classnames(bed.base_names)
    return learner, info


def coop_learner(bed: Bed, names: list[str], seed: int) -> pl.PromptLearner:
    return pl.coop(bed.clip, bed.data.tokenizer, names, generator=derived_generator(seed, 3)).to(bed.device)


def ivlp_learner(p: Params, bed: Bed, names: list[str], seed: int) -> pl.PromptLearner:
    return pl.ivlp(bed.clip, bed.data.tokenizer, names, depth=p.ivlp_depth, n_vision_ctx=p.vision_tokens,
                   generator=derived_generator(seed, 3)).to(bed.device)


def ensemble_weights(bed: Bed, names: list[str], templates=TEMPLATES) -> torch.Tensor:
    return pl.zero_shot_weights(bed.clip, bed.data.tokenizer, names, list(templates))


def halves_bed(bed: Bed) -> Bed:
    """The same CLIP and images with CoOp's split: base classes are the first half of the ids."""
    data = dataclasses.replace(bed.data, split="halves")
    return Bed(data, bed.clip, data.base_classes, data.novel_classes)


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


def regulariser_share(info: dict, mse_weight: float, kl_weight: float) -> float:
    """Mean over evaluations of (λ1 MSE + λ2 KL) / (CE + λ1 MSE + λ2 KL), from the last batch of each interval."""
    ce, mse, kl = (np.asarray(info[f"{k}_curve"], dtype=float) for k in ("ce", "mse", "kl"))
    reg = mse_weight * mse + kl_weight * kl
    return float(np.mean(reg / (ce + reg)))


def record_arm(out: dict, prefix: str, learner, tests: dict[str, TestSet], bed: Bed, info: dict) -> None:
    """Final base/novel/HM of the learner (GPA's aggregate for PromptSRC) and its training curves."""
    for name, v in base_novel(learner, tests, bed).items():
        out[f"{prefix}/{name}"] = v
    for name, v in info.items():
        out[f"{prefix}/{name}"] = v


def run_seed(run: Run, seed: int, bed: Bed) -> dict:
    """All experiments for one seed; records metrics, returns the largest-shot CoOp learner's context."""
    p = run.params
    out: dict[str, float | list[float]] = {}
    shown = {}
    k = max(p.shots)
    # ---- 1. zero-shot, template ensemble and CoOp on the target domain
    tests = {"base": test_set(bed, p.domain, bed.base, p.test_per_class, seed),
             "novel": test_set(bed, p.domain, bed.novel, p.test_per_class, seed)}
    single = {k_: ensemble_weights(bed, names, TEMPLATES[:1]) for k_, names in
              (("base", bed.base_names), ("novel", bed.novel_names))}
    ensemble = {k_: ensemble_weights(bed, names) for k_, names in (("base", bed.base_names), ("novel", bed.novel_names))}
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
    med = {"base": test_set(bed, "medical", bed.base, p.test_per_class, seed),
           "novel": test_set(bed, "medical", bed.novel, p.test_per_class, seed)}
    for template, tag in (("a scan of a {}", "zeroshot"), (TEMPLATES[0], "photo_template")):  # photo: CoOp's start
        weights = {k_: ensemble_weights(bed, names, (template,)) for k_, names in
                   (("base", bed.base_names), ("novel", bed.novel_names))}
        for name, v in base_novel(None, med, bed, weights).items():
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
                    out[f"{tag}/reg_share"] = regulariser_share(info, p.mse_weight, p.biomed_kl_weight)
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
    h_tests = {"base": test_set(hb, p.domain, hb.base, p.test_per_class, seed),
               "novel": test_set(hb, p.domain, hb.novel, p.test_per_class, seed)}
    h_single = {k_: ensemble_weights(hb, names, TEMPLATES[:1]) for k_, names in
                (("base", hb.base_names), ("novel", hb.novel_names))}
    for name, v in base_novel(None, h_tests, hb, h_single).items():
        out[f"halves/zeroshot/{name}"] = v
    h_shots = hb.data.labelled(p.domain, hb.base, k, derived_generator(seed, 19, k))
    learner, info = train_prompts(run, f"halves-coop-{k}", seed, coop_learner(hb, hb.base_names, seed), pl.coop_loss,
                                  h_shots, h_tests, hb)
    record_arm(out, f"halves/coop-{k}", learner, h_tests, hb, info)
    h_frozen = ensemble_weights(hb, hb.base_names)
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
        out[f"health/{domain}/zeroshot"] = accuracy(None, test, bed.base_names,
                                                    ensemble_weights(bed, bed.base_names, (template,)))
        out[f"health/{domain}/prototype"] = prototype_accuracy(bed, domain, test, p.test_per_class, seed)
    run.record(seed, **out)
    return shown


# ---------------------------------------------------------------- claims


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
    return p.test_per_class * len(make_bed(p).base_classes)


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
    zs = lambda name: np.asarray(run.values(name), dtype=float)  # noqa: E731  (zero-shot: no training, no curve)
    k, lo, hi, w = max(p.shots), min(p.shots), max(p.shots), f"{p.wrong_share:g}"
    med = lambda arm, wrong, shots, metric="hm": read(run, f"medical/{arm}-w{wrong}-{shots}/{metric}")  # noqa: E731
    per_shot = lambda arm, wrong: {f"{s} shots": med(arm, wrong, s) for s in p.shots}  # noqa: E731
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
    chance = 1 / len(make_bed(p).base_classes)
    for domain in DOMAIN_WORDS:
        template = "a scan of a {}" if domain == "medical" else TEMPLATES[0]
        refs = {"prototype oracle": f"health/{domain}/prototype", "ceiling": 1.0, "chance": chance}
        if domain == "medical":
            refs["'a photo of a {}' (CoOp's start)"] = "medical/photo_template/base"
        run.health(f"pretrained CLIP, zero-shot '{template}'", f"{domain} base-class accuracy", f"health/{domain}/zeroshot",
                   lower_is_better=False, references=refs,
                   note=f"prototype: each base class's mean image feature from {p.test_per_class} labelled {domain} "
                        "images, a supervised reference for what class weights on the frozen features can reach")


ARM_LABELS = {"zeroshot": "zero-shot, 'a photo of a {}'", "ensemble": f"zero-shot, {len(TEMPLATES)}-template ensemble",
              "ivlp": "IVLP", "ivlp_l1": "IVLP + L1 features", "ivlp_l1_kl": "IVLP + L1 + KL",
              "promptsrc": "PromptSRC (+ GPA)", "coop": "CoOp", "coop_mse": "CoOp + ensemble MSE",
              "biomed_noprune": "BiomedCoOp, no pruning", "biomed": "BiomedCoOp"}


def summary_markdown(run: Run) -> str:
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


# ---------------------------------------------------------------- figures


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
    per_seed = lambda fmt: [[run.values(fmt.format(k=k))[s] for k in p.shots] for s in range(len(run.seeds))]  # noqa: E731
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


def component_effects_markdown(run: Run) -> str:
    """Per-seed effect of each PromptSRC component on novel accuracy and HM (final values), generated."""
    v = lambda name: np.asarray(run.values(name), dtype=float)  # noqa: E731
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
    v = lambda name: np.asarray(run.values(name), dtype=float)  # noqa: E731
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
