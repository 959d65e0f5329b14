"""Prompt learning on a frozen CLIP: CoOp, independent vision-language prompts (IVLP), PromptSRC, BiomedCoOp.

Zero-shot CLIP classifies an image x by cosine similarity between its feature u(x) and one text feature per
class, w_c = normalise(mean_t normalise(g(template_t(name_c)))) (a template *ensemble*; one template is the
plain classifier), with logits t * <u(x), w_c>, t = exp(logit_scale).

**CoOp** (Zhou et al. 2022) replaces the hand-written words "a photo of a" by M learned vectors [V]_1..[V]_M
fed to the frozen text encoder g in place of word embeddings: w_c = g([V]_1 .. [V]_M, name_c). Initialised
from the template's own word embeddings it starts exactly at zero-shot CLIP. Training minimises the
cross-entropy on a few labelled images of the *base* classes; the context is shared, so it transfers to
*novel* class names, usually less well than the hand-written template (it overfits the base classes).

**IVLP** (independent vision-language prompting, the baseline of MaPLe and PromptSRC) adds deep prompts:
new learned text vectors overwrite the context positions at the input of text layers 1..J-1, and m learned
visual tokens are appended to the image tokens, overwritten again at each of the first J vision layers.

**PromptSRC** (Khattak et al. 2023) regularises IVLP towards the frozen model. With prompted features
(u~, w~), frozen ones (u, w; the frozen text side is the template-ensemble mean) and their logits,

    L = CE(y, logits~) + 25 * L1(w~, w) + 10 * L1(u~, u) + KL(p_zero-shot || p~)

(the KL as ``F.kl_div(log p~, log p_zs, log_target=True, reduction="sum") / numel`` in ``trainers/promptsrc.py``),
and *Gaussian-weighted prompt aggregation* (GPA) averages the prompts of epochs e = 1..E with weights
a_e = N(e; mu, sigma^2) / sum_e' N(e'; mu, sigma^2).

**BiomedCoOp** (Koleilat et al. 2025) regularises CoOp towards an ensemble of N class descriptions
(an LLM's, here template-made with injected errors) with text features d_{c,i}:

    L = CE + lambda_1 * MSE(w~_c, mean_i d_{c,i}) + lambda_2 * KL(p_zs(kept descriptions) || p~)

where the zero-shot logits use only the descriptions kept by a robust outlier test: description index i
scores s_i = mean_b max_c t * <u_b, d_{c,i}>, gets the robust z-score z_i = (s_i - median s) / (1.4826 MAD(s)),
and is dropped when |z_i| > tau (``trainers/biomedcoop_biomedclip.py`` additionally standardises z by its mean
and standard deviation before the threshold: ``restandardise=True``).

Base-to-novel results are summarised by the harmonic mean HM = 2 B N / (B + N) of base and novel accuracy.

Training (CoOp's recipe, shared by every learner here): SGD with momentum 0.9 and a cosine-decayed rate on
batches of the few labelled images (:func:`coop_optimizer`), on a :class:`PromptTrainee` (the learner and, for
PromptSRC, its GPA sums: one module, one checkpoint) with :func:`trainee_loss` and GPA's per-epoch
:func:`gpa_after_step`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from distillbook.models import clip as toyclip

METHODS: dict[str, tuple[str, int | None]] = {
    "zero-shot CLIP template ensemble": ("zero_shot_weights", None),
    "base-to-novel harmonic mean": ("harmonic_mean", 41),
    "CoOp learned context (prompt learner)": ("coop", None),
    "CoOp cross-entropy loss": ("coop_loss", None),
    "CoOp training recipe (SGD, cosine decay)": ("coop_optimizer", None),
    "IVLP deep vision and text prompts": ("ivlp", 41),
    "PromptSRC regulariser: self-regularising loss (L1 features + KL to zero-shot)": ("promptsrc_loss", 41),
    "PromptSRC objective for fit": ("promptsrc_objective", 41),
    "KL to the zero-shot logits": ("kl_to_zero_shot", 41),
    "Gaussian prompt aggregation (GPA) weights": ("gaussian_weights", 41),
    "Gaussian prompt aggregation (GPA)": ("GaussianPromptAggregation", 41),
    "GPA per-epoch update (fit after_step)": ("gpa_after_step", 41),
    "GPA distance from the last prompts": ("gpa_shift", 41),
    "prompt learner with its GPA state (fit module)": ("PromptTrainee", 41),
    "shallow learners trained side by side (one text pass)": ("JointPrompts", None),
    "their summed loss for fit": ("joint_loss", None),
    "BiomedCoOp loss (CE + MSE to the description ensemble + KL)": ("biomedcoop_loss", 16),
    "BiomedCoOp objective for fit": ("biomedcoop_objective", 16),
    "BiomedCoOp outlier pruning of descriptions (robust z-score)": ("prune_descriptions", 16),
    "BiomedCoOp regularisers' share of the loss": ("regulariser_share", 16),
}

# ---------------------------------------------------------------- zero-shot classifiers and metrics


def logit_scale(model) -> torch.Tensor:
    """t = exp(logit_scale), clamped at 100 as in pretraining."""
    return model.logit_scale.detach().clamp(max=toyclip.MAX_LOGIT_SCALE).exp()


@torch.no_grad()
def encode_texts(model, tokenizer, texts: Sequence[str], length: int | None = None) -> torch.Tensor:
    """L2-normalised text features (n, D) of ``texts`` through the frozen stock text tower."""
    length = length or max(len(tokenizer.ids(t)) for t in texts) + 2
    ids = tokenizer.encode(list(texts), length).to(model.logit_scale.device)
    return F.normalize(toyclip.text_features(model, ids), dim=-1)


def zero_shot_weights(model, tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Class weights (C, D) of a template ensemble; each template has one ``{}`` for the class name."""
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise ValueError(f"templates must be a non-empty list of strings with exactly one '{{}}', "
                         f"got {list(templates)}")
    per_template = torch.stack([encode_texts(model, tokenizer, [t.format(c) for c in classnames]) for t in templates])
    # w_c = normalise(mean_t normalise(g(template_t(name_c))))
    return F.normalize(per_template.mean(0), dim=-1)


@torch.no_grad()
def zero_shot_logits(model, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Logits t * <u(x), w_c> of the frozen model with class weights (C, D)."""
    return logit_scale(model) * F.normalize(toyclip.image_features(model, images), dim=-1) @ weights.T


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).float().mean().item()


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2 B N / (B + N), the base-to-novel summary (0 when both are 0)."""
    if not (0 <= base <= 1 and 0 <= novel <= 1):
        raise ValueError(f"base and novel must be accuracies in [0, 1], got {base}, {novel}")
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


# ---------------------------------------------------------------- CoOp and IVLP


class PromptLearner(nn.Module):
    """Learned prompts on a frozen CLIP; ``text_depth = 1, vision_depth = 0`` is CoOp, deeper is IVLP.

    ``ctx_init`` ("a photo of a") initialises the M = len(words) context vectors with those words' embeddings;
    ``ctx_init=None`` draws them from N(0, 0.02^2) (``n_ctx`` of them). Deep prompts always start random.
    """

    def __init__(self, clip, tokenizer, classnames: Sequence[str], *, ctx_init: str | None = "a photo of a",
                 n_ctx: int | None = None, text_depth: int = 1, vision_depth: int = 0, n_vision_ctx: int = 4,
                 generator: torch.Generator | None = None):
        super().__init__()
        n_text, n_vision = len(clip.text_model.encoder.layers), len(clip.vision_model.encoder.layers)
        if not 1 <= text_depth <= n_text:
            raise ValueError(f"text_depth must be in 1..{n_text} (the text tower's layers), got {text_depth}")
        if not 0 <= vision_depth <= n_vision:
            raise ValueError(f"vision_depth must be in 0..{n_vision} (the vision tower's layers), got {vision_depth}")
        if vision_depth and n_vision_ctx < 1:
            raise ValueError(f"n_vision_ctx must be >= 1 when vision_depth > 0, got {n_vision_ctx}")
        self.clip = clip.requires_grad_(False)
        self.tokenizer = tokenizer
        embed = clip.text_model.embeddings.token_embedding
        d_text, d_vision = embed.embedding_dim, clip.vision_model.config.hidden_size
        if ctx_init is not None:
            init_ids = torch.tensor(tokenizer.ids(ctx_init))
            if n_ctx is not None and n_ctx != len(init_ids):
                raise ValueError(f"n_ctx={n_ctx} but ctx_init={ctx_init!r} has {len(init_ids)} words; give one of them")
            ctx = embed.weight.detach()[init_ids].clone()
        else:
            if n_ctx is None or n_ctx < 1:
                raise ValueError(f"n_ctx must be >= 1 when ctx_init is None, got {n_ctx}")
            ctx = 0.02 * torch.randn(n_ctx, d_text, generator=generator)
        self.ctx = nn.Parameter(ctx)
        n_ctx = len(ctx)
        self.deep_text = nn.Parameter(0.02 * torch.randn(text_depth - 1, n_ctx, d_text, generator=generator)) \
            if text_depth > 1 else None
        self.vision_prompts = nn.Parameter(0.02 * torch.randn(vision_depth, n_vision_ctx, d_vision,
                                                               generator=generator)) if vision_depth else None
        self.set_classnames(classnames)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Rebuild the token rows ``<bos> X .. X name <eos>`` (X: placeholders the context overwrites)."""
        if not classnames:
            raise ValueError("classnames must not be empty")
        tok, m = self.tokenizer, len(self.ctx)
        rows = [[tok.bos_id] + [tok.pad_id] * m + tok.ids(name) + [tok.eos_id] for name in classnames]
        ids = torch.full((len(rows), max(map(len, rows))), tok.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
        self.classnames = list(classnames)
        self.register_buffer("prompt_ids", ids.to(self.ctx.device), persistent=False)
        self.register_buffer("eos_at", toyclip.eos_positions(ids, tok.eos_id).to(self.ctx.device), persistent=False)

    def prompt_embeddings(self) -> torch.Tensor:
        """The input embeddings (C, L, d) of the class prompts, context vectors in place."""
        tokens = self.clip.text_model.embeddings.token_embedding(self.prompt_ids)
        m = len(self.ctx)
        # prompt_c = [<bos>, V_1 .. V_M, name_c, <eos>]
        return torch.cat([tokens[:, :1], self.ctx.expand(len(tokens), -1, -1), tokens[:, 1 + m:]], dim=1)

    def text_features(self) -> torch.Tensor:
        """Normalised prompted class features (C, D)."""
        features = toyclip.text_features_from_embeddings(self.clip, self.prompt_embeddings(), self.eos_at,
                                                         self.deep_text)
        return F.normalize(features, dim=-1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised (prompted, if ``vision_depth`` > 0) image features (B, D). A learner without visual prompts
        also takes the frozen CLIP's image features (B, D) in place of the images (computed once for its shots)."""
        if self.vision_prompts is None and images.dim() == 2:
            return F.normalize(images, dim=-1)
        return F.normalize(toyclip.image_features(self.clip, images, self.vision_prompts), dim=-1)

    @torch.no_grad()
    def frozen_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features of the frozen CLIP, without visual prompts (features (B, D) pass through)."""
        if images.dim() == 2:
            return F.normalize(images, dim=-1)
        return F.normalize(toyclip.image_features(self.clip, images), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) = t * <u~(x), w~_c>."""
        return logit_scale(self.clip) * self.image_features(images) @ self.text_features().T

    def prompts(self) -> dict[str, torch.Tensor]:
        """The learned tensors by name (what GPA averages and a checkpoint needs)."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}


def joint_text_features(learners: Sequence[PromptLearner]) -> list[torch.Tensor]:
    """Each learner's :meth:`PromptLearner.text_features` from one pass of their shared frozen text tower.

    For shallow (CoOp-type) learners on one CLIP: their prompts are stacked, padded to one length at the end
    (the causal mask keeps what follows a row's end token from reaching it), encoded at once and split again.
    At this model size a pass is mostly fixed cost, so K learners cost little more than one."""
    if not learners:
        raise ValueError("learners must not be empty")
    clip = learners[0].clip
    if any(learner.clip is not clip for learner in learners):
        raise ValueError("joint_text_features needs learners on one shared CLIP")
    if any(learner.deep_text is not None for learner in learners):
        raise ValueError("joint_text_features takes shallow learners only (text_depth = 1)")
    embeddings = [learner.prompt_embeddings() for learner in learners]
    length = max(e.shape[1] for e in embeddings)
    stacked = torch.cat([F.pad(e, (0, 0, 0, length - e.shape[1])) for e in embeddings])
    eos_at = torch.cat([learner.eos_at for learner in learners])
    features = F.normalize(toyclip.text_features_from_embeddings(clip, stacked, eos_at), dim=-1)
    return list(features.split([len(e) for e in embeddings]))


class JointPrompts(nn.Module):
    """Several shallow prompt learners trained side by side on the same batches, one text-tower pass per step
    (:func:`joint_text_features`). Each arm's loss depends only on its own context, so the summed loss gives each
    arm exactly its own gradient, and SGD steps each as if alone (as :class:`~distillbook.core.training.Stack`
    does for whole models). ``names`` label the arms in the loss parts (``<name>/loss``, ``<name>/ce``, ...)."""

    def __init__(self, learners: Sequence[PromptLearner], names: Sequence[str]):
        super().__init__()
        if len(learners) != len(names) or len(set(names)) != len(names):
            raise ValueError(f"give one distinct name per learner, got {list(names)} for {len(learners)} learners")
        self.learners = nn.ModuleList(learners)
        self.names = list(names)


def joint_loss(objectives: Sequence):
    """A ``fit`` loss on :class:`JointPrompts`: the sum of each arm's objective ``objective(learner, batch,
    text)`` (``text``: the arm's features from the joint pass), with each arm's loss and parts under its name."""
    def loss_fn(joint: JointPrompts, batch):
        if len(objectives) != len(joint.learners):
            raise ValueError(f"{len(objectives)} objectives for {len(joint.learners)} learners")
        total, parts = 0.0, {}
        for name, learner, text, objective in zip(joint.names, joint.learners, joint_text_features(joint.learners),
                                                  objectives):
            out = objective(learner, batch, text)
            loss, arm_parts = out if isinstance(out, tuple) else (out, {})
            total = total + loss
            parts[f"{name}/loss"] = loss.detach()
            parts.update({f"{name}/{k}": v for k, v in arm_parts.items()})
        return total, parts
    return loss_fn


def coop(clip, tokenizer, classnames, ctx_init: str | None = "a photo of a", n_ctx: int | None = None,
         generator: torch.Generator | None = None) -> PromptLearner:
    """CoOp: shallow text context only."""
    return PromptLearner(clip, tokenizer, classnames, ctx_init=ctx_init, n_ctx=n_ctx, generator=generator)


def ivlp(clip, tokenizer, classnames, depth: int, n_vision_ctx: int = 4, ctx_init: str | None = "a photo of a",
         generator: torch.Generator | None = None) -> PromptLearner:
    """IVLP: text and vision prompts in the first ``depth`` layers of each tower."""
    return PromptLearner(clip, tokenizer, classnames, ctx_init=ctx_init, text_depth=depth, vision_depth=depth,
                         n_vision_ctx=n_vision_ctx, generator=generator)


def _check_classes(learner: PromptLearner, features: torch.Tensor, name: str) -> None:
    if len(features) != len(learner.classnames):
        raise ValueError(f"{name} has {len(features)} classes but the learner has {len(learner.classnames)}: "
                         "build it for the learner's current class names")


def coop_loss(learner: PromptLearner, batch, text: torch.Tensor | None = None) -> torch.Tensor:
    """``fit`` loss of CoOp and IVLP: cross-entropy over the learner's classes (``text``: its class features,
    when computed already)."""
    images, labels = batch
    text = learner.text_features() if text is None else text
    return F.cross_entropy(logit_scale(learner.clip) * learner.image_features(images) @ text.T, labels)


def coop_optimizer(learner: nn.Module, lr: float, steps: int):
    """CoOp's recipe: SGD with momentum 0.9 on the prompts (the trainable parameters of a learner, a
    :class:`PromptTrainee` or :class:`JointPrompts`), its rate decayed by a cosine over ``steps`` steps,
    lr_s = lr (1 + cos(pi s / steps)) / 2. Returns (optimizer, scheduler)."""
    optimizer = torch.optim.SGD([p for p in learner.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)


class PromptTrainee(nn.Module):
    """What ``fit`` trains: a prompt learner and, for PromptSRC, its GPA state, one module so that one
    checkpoint resumes both. ``gpa=None`` for learners without aggregation."""

    def __init__(self, learner: PromptLearner, gpa: GaussianPromptAggregation | None = None):
        super().__init__()
        self.learner, self.gpa = learner, gpa


def trainee_loss(objective):
    """A ``fit`` loss on a :class:`PromptTrainee` from a learner's objective ``objective(learner, batch)``."""
    def loss_fn(trainee: PromptTrainee, batch):
        return objective(trainee.learner, batch)
    return loss_fn


# ---------------------------------------------------------------- PromptSRC


def kl_to_zero_shot(logits: torch.Tensor, zero_shot_logits: torch.Tensor) -> torch.Tensor:
    """sum_{b,c} p_zs (log p_zs - log p~) / (B C): KL(p_zs || p~) summed, divided by the number of logits."""
    log_p = F.log_softmax(logits, dim=-1)
    log_p_zs = F.log_softmax(zero_shot_logits.detach(), dim=-1)
    return F.kl_div(log_p, log_p_zs, reduction="sum", log_target=True) / logits.numel()


def promptsrc_loss(logits, labels, text_features, frozen_text_features, image_features, frozen_image_features,
                   zero_shot_logits, text_weight: float = 25.0, image_weight: float = 10.0,
                   kl_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """PromptSRC's loss (features L2-normalised; the frozen ones get no gradient) and its parts."""
    for name, value in (("text_weight", text_weight), ("image_weight", image_weight), ("kl_weight", kl_weight)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    ce = F.cross_entropy(logits, labels)
    # L1 terms: mean |w~ - w| over classes and dims, mean |u~ - u| over images and dims
    l1_text = F.l1_loss(text_features, frozen_text_features.detach())
    l1_image = F.l1_loss(image_features, frozen_image_features.detach())
    kl = kl_to_zero_shot(logits, zero_shot_logits)
    # L = CE + lambda_text L1_text + lambda_image L1_image + lambda_kl KL(p_zs || p~)   (paper: 25, 10, 1)
    loss = ce + text_weight * l1_text + image_weight * l1_image + kl_weight * kl
    return loss, {"ce": ce.detach(), "l1_text": l1_text.detach(), "l1_image": l1_image.detach(), "kl": kl.detach()}


def promptsrc_objective(frozen_text_features: torch.Tensor, text_weight: float = 25.0, image_weight: float = 10.0,
                        kl_weight: float = 1.0):
    """A ``fit`` loss for a learner on (images, labels); ``frozen_text_features`` (C, D): the learner's classes'
    template-ensemble weights. All weights 0 is plain IVLP/CoOp."""
    def loss_fn(learner: PromptLearner, batch, text: torch.Tensor | None = None):
        _check_classes(learner, frozen_text_features, "frozen_text_features")
        images, labels = batch
        text = learner.text_features() if text is None else text
        image = learner.image_features(images)
        scale = logit_scale(learner.clip)
        logits = scale * image @ text.T
        frozen_image = learner.frozen_image_features(images)
        return promptsrc_loss(logits, labels, text, frozen_text_features, image, frozen_image,
                              scale * frozen_image @ frozen_text_features.T, text_weight, image_weight, kl_weight)
    return loss_fn


def gaussian_weights(n_epochs: int, mean: float, std: float) -> torch.Tensor:
    """GPA weights a_e, e = 1..E: the N(mean, std^2) density at e, normalised to sum to one."""
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be >= 1, got {n_epochs}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    epochs = torch.arange(1, n_epochs + 1, dtype=torch.float64)
    # N(e; mu, sigma^2) = exp(-(e - mu)^2 / (2 sigma^2)) / (sigma sqrt(2 pi))
    density = torch.exp(-0.5 * ((epochs - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    if density.sum() == 0:
        raise ValueError(f"mean={mean}, std={std} puts no weight on epochs 1..{n_epochs}")
    # a_e = N(e) / sum_e' N(e')
    return density / density.sum()


class GaussianPromptAggregation(nn.Module):
    """GPA: call ``update(learner, epoch)`` at the end of each epoch (0-based); ``load_into(learner)`` sets
    sum_e a_e * prompts_e.

    A module whose running sums are buffers, so a checkpoint of a module holding it (and the learner) resumes
    the aggregation exactly; the epoch comes from ``fit``'s step (:func:`gpa_after_step`)."""

    def __init__(self, learner: PromptLearner, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights.to(torch.float64))
        self.names = list(learner.prompts())
        for name, p in learner.prompts().items():
            self.register_buffer(self._key(name), torch.zeros_like(p, dtype=torch.float64))

    @staticmethod
    def _key(name: str) -> str:
        return "sum__" + name.replace(".", "__")

    @torch.no_grad()
    def update(self, learner: PromptLearner, epoch: int) -> None:
        if not 0 <= epoch < len(self.weights):
            raise ValueError(f"GPA has weights for epochs 0..{len(self.weights) - 1}, got epoch {epoch}")
        a = self.weights[epoch]
        for name, p in learner.prompts().items():
            # S <- S + a_e * P_e
            getattr(self, self._key(name)).add_(a * p.double())

    @torch.no_grad()
    def load_into(self, learner: PromptLearner) -> None:
        for name, p in learner.prompts().items():
            p.copy_(getattr(self, self._key(name)))


def gpa_after_step(steps_per_epoch: int):
    """``fit``'s ``after_step`` for GPA: epoch e (1-based) ends after step index s = e * steps_per_epoch - 1,
    and there the trainee's GPA adds a_e * P_e (nothing happens for a trainee without GPA)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")

    def after_step(trainee: PromptTrainee, step: int) -> None:
        # the epoch ends when (s + 1) is a multiple of the epoch length
        if trainee.gpa is not None and (step + 1) % steps_per_epoch == 0:
            trainee.gpa.update(trainee.learner, epoch=(step + 1) // steps_per_epoch - 1)
    return after_step


def gpa_shift(initial: dict[str, torch.Tensor], last: dict[str, torch.Tensor],
              aggregated: dict[str, torch.Tensor]) -> float:
    """How far GPA moved the prompts, relative to how far training moved them, over all prompt tensors:
    ||P_GPA - P_last|| / ||P_last - P_init|| (0: GPA is the last prompts)."""
    moved = sum(float((last[k] - initial[k]).pow(2).sum()) for k in last)
    shift = sum(float((v.detach() - last[k]).pow(2).sum()) for k, v in aggregated.items())
    # sqrt(sum_k ||P_GPA,k - P_last,k||^2 / sum_k ||P_last,k - P_init,k||^2)
    return (shift / max(moved, 1e-30)) ** 0.5


# ---------------------------------------------------------------- BiomedCoOp


def robust_z_scores(scores: torch.Tensor) -> torch.Tensor:
    """z_i = (s_i - median s) / (1.4826 MAD), MAD = median |s - median s| (numpy's median: mean of the middle two)."""
    median = torch.quantile(scores, 0.5)
    mad = torch.quantile((scores - median).abs(), 0.5)
    deviation = scores - median
    if mad == 0:  # more than half the scores tie: they are the bulk, everything else is an outlier
        return torch.where(deviation == 0, 0.0, math.inf * deviation.sign())
    # 1.4826 = 1 / Phi^-1(3/4) makes the MAD a consistent estimate of a normal's sigma
    return deviation / (1.4826 * mad)


def prune_descriptions(scores: torch.Tensor, tau: float, restandardise: bool = False) -> torch.Tensor:
    """Keep mask (N,): |z_i| <= tau (z standardised once more if ``restandardise``, as the reference code does).
    The description closest to the median is always kept."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    z = robust_z_scores(scores)
    if restandardise and torch.isfinite(z).all() and z.std() > 0:
        z = (z - z.mean()) / z.std()
    keep = z.abs() <= tau
    keep[z.abs().argmin()] = True
    return keep


def description_features(model, tokenizer, descriptions: Sequence[Sequence[str]]) -> torch.Tensor:
    """Normalised features (C, N, D) of N descriptions per class."""
    n = len(descriptions[0])
    if any(len(d) != n for d in descriptions):
        raise ValueError("every class needs the same number of descriptions")
    flat = encode_texts(model, tokenizer, [t for per_class in descriptions for t in per_class])
    return flat.reshape(len(descriptions), n, -1)


def description_scores(image_features: torch.Tensor, features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """s_i = mean_b max_c t * <u_b, d_{c,i}> for each description index i; features (C, N, D)."""
    logits = scale * torch.einsum("bd,cnd->bnc", image_features, features)
    return logits.max(dim=-1).values.mean(dim=0)


def ensemble(features: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Class weights (C, D) = normalise(mean over kept descriptions of d_{c,i})."""
    if keep is not None:
        features = features[:, keep]
    return F.normalize(features.mean(dim=1), dim=-1)


def biomedcoop_loss(logits, labels, text_features, ensemble_features, zero_shot_logits, mse_weight: float = 1.0,
                    kl_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """CE + mse_weight * MSE(w~, ensemble) + kl_weight * KL(p_zs || p~), and the parts."""
    if mse_weight < 0 or kl_weight < 0:
        raise ValueError(f"mse_weight and kl_weight must be >= 0, got {mse_weight}, {kl_weight}")
    ce = F.cross_entropy(logits, labels)
    # MSE = mean_{c,d} (w~_cd - mean_i d_{c,i,d})^2
    mse = F.mse_loss(text_features, ensemble_features.detach())
    kl = kl_to_zero_shot(logits, zero_shot_logits)
    loss = ce + mse_weight * mse + kl_weight * kl
    return loss, {"ce": ce.detach(), "mse": mse.detach(), "kl": kl.detach()}


def biomedcoop_objective(features: torch.Tensor, tau: float | None = 1.0, mse_weight: float = 1.0,
                         kl_weight: float = 1.0, restandardise: bool = False):
    """A ``fit`` loss for a CoOp learner on (images, labels); ``features`` (C, N, D): the learner's classes'
    description features. ``tau=None`` keeps every description (no pruning)."""
    mean_all = ensemble(features)

    def loss_fn(learner: PromptLearner, batch, text: torch.Tensor | None = None):
        _check_classes(learner, features, "features")
        images, labels = batch
        text = learner.text_features() if text is None else text
        image = learner.image_features(images)
        scale = logit_scale(learner.clip)
        with torch.no_grad():
            keep = None if tau is None else prune_descriptions(
                description_scores(image, features, scale), tau, restandardise)
            frozen_image = learner.frozen_image_features(images)
            zs_logits = scale * frozen_image @ ensemble(features, keep).T
        loss, parts = biomedcoop_loss(scale * image @ text.T, labels, text, mean_all, zs_logits, mse_weight, kl_weight)
        if keep is not None:
            parts["kept"] = keep.float().mean().detach()
        return loss, parts
    return loss_fn


def regulariser_share(ce, mse, kl, mse_weight: float, kl_weight: float) -> float:
    """The regularisers' share of BiomedCoOp's loss, averaged over readings (arrays of CE, MSE and KL values)."""
    ce, mse, kl = (np.asarray(x, dtype=float) for x in (ce, mse, kl))
    reg = mse_weight * mse + kl_weight * kl
    # mean over readings of (λ1 MSE + λ2 KL) / (CE + λ1 MSE + λ2 KL)
    return float(np.mean(reg / (ce + reg)))
