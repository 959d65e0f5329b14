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

The CLIP is pretrained once per run with the first seed (the papers adapt one given CLIP); the seeds vary the
few-shot sets, prompt initialisation and batches, and the test images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from distillbook import prompt_learning as pl
from distillbook.claims import Claim, mean_std_text
from distillbook.models import clip as toyclip
from distillbook.params import ChapterParams
from distillbook.runtime import derived_generator, derived_seed
from distillbook.plotting import mean_std_band, reference_band
from distillbook.results import Run
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
    prompt_lr: float = Field(gt=0, description="SGD rate (cosine decay) of the prompt vectors (CoOp's 0.002; at "
                             "0.02 deep prompts diverged for one seed in three)")
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
                      prompt_steps=4, prompt_batch=4, prompt_lr=0.002, ivlp_depth=2, vision_tokens=2, text_weight=25.0,
                      image_weight=10.0, kl_weight=1.0, gpa_epochs=2, gpa_mean=1.5, gpa_std=1.0, descriptions=5,
                      wrong_share=0.2, mse_weight=1.0, biomed_kl_weight=1.0, tau=1.0),
        "cpu": dict(seeds=[0, 1, 2, 3], shapes=["square", "circle", "triangle", "cross", "ring"],
                    colours=["red", "green", "blue", "yellow"], image_size=32, style_share=0.1, test_per_class=100,
                    clip_width=64, clip_layers=2, clip_heads=4, patch_size=8, pretrain_steps=1200, pretrain_batch=64,
                    pretrain_lr=1.5e-3, domain="sketch", shots=[1, 4, 16], prompt_steps=160, prompt_batch=32,
                    prompt_lr=0.002, ivlp_depth=2, vision_tokens=4, text_weight=25.0, image_weight=10.0,
                    kl_weight=1.0, gpa_epochs=20, gpa_mean=15.0, gpa_std=1.0, descriptions=50, wrong_share=0.2,
                    mse_weight=1.0, biomed_kl_weight=1.0, tau=1.0),
        "gpu": dict(seeds=[0, 1, 2], shapes=["square", "circle", "triangle", "diamond", "cross", "ring", "bar", "plus"],
                    colours=["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white"], image_size=64,
                    style_share=0.1, test_per_class=300, clip_width=256, clip_layers=6, clip_heads=8, patch_size=8,
                    pretrain_steps=3000, pretrain_batch=256, pretrain_lr=1e-3, domain="sketch", shots=[1, 4, 16],
                    prompt_steps=500, prompt_batch=64, prompt_lr=0.002, ivlp_depth=4, vision_tokens=4,
                    text_weight=25.0, image_weight=10.0, kl_weight=1.0, gpa_epochs=20, gpa_mean=15.0, gpa_std=1.0,
                    descriptions=200, wrong_share=0.2, mse_weight=1.0, biomed_kl_weight=1.0, tau=1.0),
    }

    @model_validator(mode="after")
    def _checks(self):
        if self.shots != sorted(set(self.shots)):
            raise ValueError(f"shots must increase, e.g. [1, 4, 16], got {self.shots}")
        if self.ivlp_depth > self.clip_layers:
            raise ValueError(f"ivlp_depth ({self.ivlp_depth}) must be at most clip_layers ({self.clip_layers})")
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


def train_prompts(run: Run, name: str, seed: int, learner: pl.PromptLearner, objective, shots: tuple[torch.Tensor, torch.Tensor],
                  gpa: bool = False) -> pl.PromptLearner:
    """SGD with cosine decay on few-shot batches (CoOp's recipe); with ``gpa``, the learner ends as the
    Gaussian-weighted average of its per-epoch prompts."""
    p = run.params
    images, labels = shots
    weights = pl.gaussian_weights(p.gpa_epochs, p.gpa_mean, p.gpa_std)
    trainee = Trainee(learner, pl.GaussianPromptAggregation(learner, weights) if gpa else None)
    steps_per_epoch = p.prompt_steps // p.gpa_epochs

    def loss_fn(model: Trainee, batch):
        model.step += 1
        return objective(model.learner, batch)

    def after_step(model: Trainee):
        if model.gpa is not None and int(model.step) % steps_per_epoch == 0:
            model.gpa.update(model.learner)

    def next_batch(gen):
        i = torch.randint(0, len(labels), (min(p.prompt_batch, len(labels)),), generator=gen)
        return images[i], labels[i]

    optimizer = torch.optim.SGD(list(learner.prompts().values()), lr=p.prompt_lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, p.prompt_steps)
    run.fit(name, seed, trainee, loss_fn, next_batch, steps=p.prompt_steps, optimizer=optimizer, scheduler=schedule,
            after_step=after_step)
    if trainee.gpa is not None:
        trainee.gpa.load_into(learner)
    return learner


def coop_learner(bed: Bed, names: list[str], seed: int) -> pl.PromptLearner:
    return pl.coop(bed.clip, bed.data.tokenizer, names, generator=derived_generator(seed, 3)).to(bed.device)


def ivlp_learner(p: Params, bed: Bed, names: list[str], seed: int) -> pl.PromptLearner:
    return pl.ivlp(bed.clip, bed.data.tokenizer, names, depth=p.ivlp_depth, n_vision_ctx=p.vision_tokens,
                   generator=derived_generator(seed, 3)).to(bed.device)


def ensemble_weights(bed: Bed, names: list[str], templates=TEMPLATES) -> torch.Tensor:
    return pl.zero_shot_weights(bed.clip, bed.data.tokenizer, names, list(templates))


def run_seed(run: Run, seed: int, bed: Bed) -> dict:
    """All three experiments for one seed; records metrics, returns the first CoOp learner's context."""
    p = run.params
    out: dict[str, float] = {}
    shown = {}
    # ---- 1. zero-shot, template ensemble and CoOp on the target domain
    tests = {"base": test_set(bed, p.domain, bed.base, p.test_per_class, seed),
             "novel": test_set(bed, p.domain, bed.novel, p.test_per_class, seed)}
    single = {k: ensemble_weights(bed, names, TEMPLATES[:1]) for k, names in
              (("base", bed.base_names), ("novel", bed.novel_names))}
    ensemble = {k: ensemble_weights(bed, names) for k, names in (("base", bed.base_names), ("novel", bed.novel_names))}
    for arm, weights in (("zeroshot", single), ("ensemble", ensemble)):
        for k, v in base_novel(None, tests, bed, weights).items():
            out[f"{arm}/{k}"] = v
    few_shot = {k: bed.data.labelled(p.domain, bed.base, k, derived_generator(seed, 11, k)) for k in p.shots}
    for k in p.shots:
        learner = train_prompts(run, f"coop-{k}", seed, coop_learner(bed, bed.base_names, seed), pl.coop_loss, few_shot[k])
        for name, v in base_novel(learner, tests, bed).items():
            out[f"coop-{k}/{name}"] = v
        if k == max(p.shots):
            shown["coop_context"] = learner.ctx.detach().clone()
    # ---- 2. PromptSRC from IVLP, one component at a time
    k = max(p.shots)
    frozen_text = ensemble["base"]
    src = {"ivlp": (0.0, 0.0, 0.0, False), "ivlp_l1": (p.text_weight, p.image_weight, 0.0, False),
           "ivlp_l1_kl": (p.text_weight, p.image_weight, p.kl_weight, False),
           "promptsrc": (p.text_weight, p.image_weight, p.kl_weight, True)}
    for arm, (tw, iw, kw, gpa) in src.items():
        learner = ivlp_learner(p, bed, bed.base_names, seed)
        objective = pl.promptsrc_objective(frozen_text, tw, iw, kw)
        learner = train_prompts(run, f"{arm}-{k}", seed, learner, objective, few_shot[k], gpa=gpa)
        for name, v in base_novel(learner, tests, bed).items():
            out[f"{arm}/{name}"] = v
    # ---- 3. BiomedCoOp on the medical-like domain, with wrong descriptions and without
    med = {"base": test_set(bed, "medical", bed.base, p.test_per_class, seed),
           "novel": test_set(bed, "medical", bed.novel, p.test_per_class, seed)}
    med_single = {k_: ensemble_weights(bed, names, ("a scan of a {}",)) for k_, names in
                  (("base", bed.base_names), ("novel", bed.novel_names))}
    for name, v in base_novel(None, med, bed, med_single).items():
        out[f"medical/zeroshot/{name}"] = v
    med_shots = {k_: bed.data.labelled("medical", bed.base, k_, derived_generator(seed, 13, k_)) for k_ in p.shots}
    for wrong in (p.wrong_share, 0.0):
        texts, _ = bed.data.descriptions(p.descriptions, derived_generator(seed, 17, int(100 * wrong)), wrong, domain="medical")
        features = pl.description_features(bed.clip, bed.data.tokenizer, [texts[c] for c in bed.base])
        arms = BIOMED_ARMS if wrong else ("biomed_noprune", "biomed")
        for k_ in p.shots:
            for arm in arms:
                objective = {"coop": pl.coop_loss,
                             "coop_mse": pl.biomedcoop_objective(features, None, p.mse_weight, 0.0),
                             "biomed_noprune": pl.biomedcoop_objective(features, None, p.mse_weight, p.biomed_kl_weight),
                             "biomed": pl.biomedcoop_objective(features, p.tau, p.mse_weight, p.biomed_kl_weight)}[arm]
                tag = f"medical/{arm}-w{wrong:g}-{k_}"
                learner = train_prompts(run, tag, seed, coop_learner(bed, bed.base_names, seed), objective,
                                        med_shots[k_])
                for name, v in base_novel(learner, med, bed).items():
                    out[f"{tag}/{name}"] = v
    run.record(seed, **out)
    return shown


# ---------------------------------------------------------------- claims


def claims(p: Params) -> tuple[Claim, ...]:
    k, lo, hi, w = max(p.shots), min(p.shots), max(p.shots), f"{p.wrong_share:g}"
    return (
        Claim("promptsrc-raises-novel", PROMPTSRC, statement=f"PromptSRC's novel accuracy exceeds IVLP's ({k} shots, "
              f"{p.domain})", a="novel accuracy, PromptSRC", b="novel accuracy, IVLP",
              paper_figure="PromptSRC Table 1 (base-to-novel, 11 datasets)", paper_value="novel 76.10 vs IVLP 71.04"),
        Claim("promptsrc-keeps-base", PROMPTSRC, statement="...with base accuracy within 2 points of IVLP's",
              a="base accuracy, PromptSRC", b="base accuracy, IVLP", region=("within", (-0.02, 0.02)),
              paper_figure="PromptSRC Table 1", paper_value="base 84.26 vs IVLP 84.21"),
        Claim("promptsrc-raises-hm", PROMPTSRC, statement="...and a higher harmonic mean", a="HM, PromptSRC",
              b="HM, IVLP", paper_figure="PromptSRC Table 1 / README", paper_value="HM 79.97 vs 77.51"),
        Claim("gpa-raises-hm", PROMPTSRC, statement="Gaussian prompt aggregation raises HM over the last epoch's "
              "prompts (all else equal)", a="HM, with GPA", b="HM, last epoch",
              paper_figure="PromptSRC Table 6 (ablation)", paper_value="+0.4 to +1 HM"),
        Claim("coop-forgets-novel", PROMPTSRC, statement=f"CoOp ({k} shots) falls below zero-shot CLIP on novel "
              "classes", a="novel accuracy, CoOp", b="novel accuracy, zero-shot", region=("<", 0.0),
              paper_figure="PromptSRC Section 1 / CoCoOp Table 1", paper_value="novel 63.22 vs zero-shot 74.22"),
        Claim("biomedcoop-gains-most-at-few-shots", BIOMEDCOOP, statement=f"BiomedCoOp's HM gain over CoOp is larger "
              f"at {lo} shot than at {hi} (medical-like domain, {w} wrong descriptions)",
              a=f"HM gain at {lo} shot", b=f"HM gain at {hi} shots",
              paper_figure="BiomedCoOp Table 1 (few-shot)", paper_value="1 shot 57.03 vs CoOp 50.16"),
        Claim("biomedcoop-gains-on-novel", BIOMEDCOOP, statement=f"...and at {lo} shot its gain is larger on novel "
              "classes than on base classes", a=f"novel gain at {lo} shot", b=f"base gain at {lo} shot",
              paper_figure="BiomedCoOp Table 2 (base-to-novel)", paper_value="HM 75.07 vs CoOp 67.23"),
        Claim("pruning-helps-with-wrong-descriptions", BIOMEDCOOP, statement=f"With {w} wrong descriptions, pruning "
              "raises HM (mean over shot counts)", a="HM, BiomedCoOp", b="HM, without pruning",
              paper_figure="BiomedCoOp Table 4 (ablation)", paper_value="outlier pruning helps"),
        Claim("pruning-neutral-without-wrong", BIOMEDCOOP, statement="...and changes HM by less than 1 point with "
              "none", a="HM, BiomedCoOp (0 wrong)", b="HM, without pruning (0 wrong)",
              region=("within", (-0.01, 0.01)), paper_figure="BiomedCoOp Section 3",
              paper_value="pruning targets hallucinated prompts"),
    )


def evaluate_claims(run: Run) -> list[dict]:
    p = run.params
    c = {claim.id: claim for claim in claims(p)}
    v = lambda name: np.asarray(run.values(name), dtype=float)  # noqa: E731
    k, lo, hi, w = max(p.shots), min(p.shots), max(p.shots), f"{p.wrong_share:g}"
    med = lambda arm, wrong, shots, metric="hm": v(f"medical/{arm}-w{wrong}-{shots}/{metric}")  # noqa: E731
    mean_shots = lambda arm, wrong: np.mean([med(arm, wrong, s) for s in p.shots], axis=0)  # noqa: E731
    return [
        c["promptsrc-raises-novel"].evaluate(v("promptsrc/novel"), v("ivlp/novel")),
        c["promptsrc-keeps-base"].evaluate(v("promptsrc/base"), v("ivlp/base")),
        c["promptsrc-raises-hm"].evaluate(v("promptsrc/hm"), v("ivlp/hm")),
        c["gpa-raises-hm"].evaluate(v("promptsrc/hm"), v("ivlp_l1_kl/hm")),
        c["coop-forgets-novel"].evaluate(v(f"coop-{k}/novel"), v("zeroshot/novel")),
        c["biomedcoop-gains-most-at-few-shots"].evaluate(med("biomed", w, lo) - med("coop", w, lo),
                                                         med("biomed", w, hi) - med("coop", w, hi)),
        c["biomedcoop-gains-on-novel"].evaluate(med("biomed", w, lo, "novel") - med("coop", w, lo, "novel"),
                                                med("biomed", w, lo, "base") - med("coop", w, lo, "base")),
        c["pruning-helps-with-wrong-descriptions"].evaluate(mean_shots("biomed", w), mean_shots("biomed_noprune", w)),
        c["pruning-neutral-without-wrong"].evaluate(mean_shots("biomed", "0"), mean_shots("biomed_noprune", "0")),
    ]


ARM_LABELS = {"zeroshot": "zero-shot, 'a photo of a {}'", "ensemble": f"zero-shot, {len(TEMPLATES)}-template ensemble",
              "ivlp": "IVLP", "ivlp_l1": "IVLP + L1 features", "ivlp_l1_kl": "IVLP + L1 + KL",
              "promptsrc": "PromptSRC (+ GPA)", "coop": "CoOp", "coop_mse": "CoOp + ensemble MSE",
              "biomed_noprune": "BiomedCoOp, no pruning", "biomed": "BiomedCoOp"}


def summary_markdown(run: Run) -> str:
    p = run.params
    v = run.values
    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), mean ± std. Accuracies are fractions.", "",
             f"**{p.domain}**, {max(p.shots)} shots per base class for the prompt learners:", "",
             "| method | base | novel | HM |", "|---|---|---|---|"]
    rows = ["zeroshot", "ensemble"] + [f"coop-{k}" for k in p.shots] + list(SRC_ARMS)
    for arm in rows:
        label = ARM_LABELS.get(arm) or f"CoOp, {arm.split('-')[1]} shots"
        lines.append(f"| {label} | {mean_std_text(v(f'{arm}/base'))} | {mean_std_text(v(f'{arm}/novel'))} | {mean_std_text(v(f'{arm}/hm'))} |")
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
