"""Dataset distillation: a few images per class that train a fresh network.

The cpu profile distils sklearn's digits with MLPs; the gpu profile distils 32x32 procedural ``shapes``
(50 classes) with the ConvNet-3 of the literature (``dataset``, ``architecture``).

- Subsets of real images: random, and herding (greedy: the running mean of the picked images tracks the
  class mean).
- Trajectory matching (MTT) and AST's smoother experts (paper 67): synthetic images and a learnable
  learning rate such that a few SGD steps on them land where an expert trained on real data went. The
  smooth experts carry AST's input-gradient penalty and its clipped-loss ramp.
- INFER (paper 78) against an SRe2L-like per-class synthesis: INFER adds one compensator per anchor
  slot, shared by every class, to real anchors, and stores one soft label per image (static);
  SRe2L synthesises each class from noise and needs the teacher's labels for every augmented batch
  of every step (dynamic). Label storage is counted in bytes.

Every distilled set is judged the same way: fresh networks trained on it by full-batch SGD with momentum
0.9 and an independent random ±``eval_shift``-pixel shift per image and step; the learning rate is
picked per arm on the validation split from ``eval_lrs`` (plus the learned rate for MTT/AST), and the
score is the picked nets' mean test accuracy on held-out real images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from distillbook.core import claims as claims_lib
from distillbook.core.claims import Claim
from distillbook.methods.bn_statistics import BNStatistics
from distillbook.methods.dataset_distillation import expert_trajectory, path_length, trajectory_matching_step
from distillbook.core.metrics import accuracy
from distillbook.models.convnet import ConvNet
from distillbook.models.mlp import mlp, predict_logits
from distillbook.core.params import ChapterParams
from distillbook.core.runtime import derived_seed
from distillbook.core.plotting import mean_std_band
from distillbook.core.results import Run
from distillbook.testbeds import digits, shapes

CHAPTER = "dataset-distillation"
AST, INFER = 67, 78
PositiveInt = Annotated[int, Field(ge=1)]
METHODS = ("random", "herding", "mtt", "ast", "sre2l", "infer")
SHAPES_SIZE = 32
AST_LOSS_RAMP = (0.5, 0.5, 0.55, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)  # AST's experts' code


class Params(ChapterParams):
    dataset: Literal["digits", "shapes"] = Field("digits", description="digits (8x8 grey) or procedural 32x32 shapes")
    shapes_classes: Literal[10, 50] = Field(50, description="shapes only: 10 (5 shapes x 2 colours) or 50 classes "
                                            "(5 shapes x 5 colours x 2 positions)")
    shapes_per_class: int = Field(100, ge=10, description="shapes only: training images per class")
    architecture: Literal["mlp", "convnet"] = Field("mlp", description="experts, students and evaluation nets")
    ipcs: list[PositiveInt] = Field(min_length=1, description="images per class; the claims use the smallest and largest")
    hidden: list[PositiveInt] = Field(min_length=1, description="MLP hidden widths, or ConvNet blocks (depth = length, "
                                      "width = first entry), of experts, students and evaluation nets")
    # experts and trajectory matching
    n_experts: int = Field(ge=1)
    expert_epochs: int = Field(ge=2)
    expert_lr: float = Field(gt=0)
    expert_batch: int = Field(ge=1)
    ast_penalty: float = Field(gt=0, description="weight of the smooth experts' input-gradient penalty")
    ast_loss_ramp: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: list(AST_LOSS_RAMP), description="the smooth experts' CE multipliers for their first "
        "epochs (AST's clipped loss, 1 afterwards); [] turns it off")
    match_iterations: int = Field(ge=1)
    syn_steps: int = Field(ge=1, description="student SGD steps unrolled per matching iteration (N)")
    expert_span: int = Field(ge=1, description="expert epochs ahead the student aims (M)")
    max_start_epoch: int = Field(ge=0)
    image_lr: float = Field(gt=0)
    syn_lr_init: float = Field(gt=0)
    # evaluation
    eval_nets: int = Field(ge=1)
    eval_steps: int = Field(ge=1)
    eval_lrs: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="SGD learning rates tried by "
                                                           "evaluation nets, picked on validation")
    eval_shift: int = Field(ge=0, le=3, description="random shift augmentation, in pixels")
    # INFER and the SRe2L-like baseline
    teacher_hiddens: list[list[PositiveInt]] = Field(min_length=1, description="BatchNorm teachers to cycle over "
                                                     "(MLP widths or ConvNet blocks, as hidden)")
    teacher_steps: int = Field(ge=1)
    synthesis_steps: int = Field(ge=1)
    synthesis_lr: float = Field(gt=0)
    bn_weight: float = Field(ge=0)
    label_temperature: float = Field(gt=0)

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], ipcs=[1, 2], hidden=[32], n_experts=2, expert_epochs=3, expert_lr=0.05,
                      expert_batch=128, ast_penalty=0.1, match_iterations=6, syn_steps=2, expert_span=1,
                      max_start_epoch=1, image_lr=0.01, syn_lr_init=0.05, eval_nets=1, eval_steps=10, eval_lrs=[0.05, 0.1],
                      eval_shift=1, teacher_hiddens=[[32]], teacher_steps=20, synthesis_steps=3, synthesis_lr=0.05,
                      bn_weight=0.01, label_temperature=4.0),
        "cpu": dict(seeds=[0, 1, 2, 3, 4, 5], ipcs=[1, 10], hidden=[128], n_experts=5, expert_epochs=10, expert_lr=0.05,
                    expert_batch=64, ast_penalty=0.1, match_iterations=300, syn_steps=10, expert_span=2,
                    max_start_epoch=4, image_lr=0.01, syn_lr_init=0.05, eval_nets=2, eval_steps=350, eval_lrs=[0.05, 0.1],
                    eval_shift=1, teacher_hiddens=[[128], [256, 128]], teacher_steps=600, synthesis_steps=200,
                    synthesis_lr=0.05, bn_weight=0.01, label_temperature=4.0),
        "gpu": dict(seeds=[0, 1, 2, 3, 4], dataset="shapes", shapes_classes=50, shapes_per_class=100,
                    architecture="convnet", ipcs=[1, 10], hidden=[128, 128, 128], n_experts=10, expert_epochs=12,
                    expert_lr=0.01, expert_batch=256, ast_penalty=0.1, match_iterations=500, syn_steps=20,
                    expert_span=2, max_start_epoch=6, image_lr=0.01, syn_lr_init=0.01, eval_nets=3, eval_steps=500,
                    eval_lrs=[0.01, 0.03], eval_shift=2, teacher_hiddens=[[64, 64], [128, 128, 128]],
                    teacher_steps=1500, synthesis_steps=500, synthesis_lr=0.05, bn_weight=0.01,
                    label_temperature=4.0),
    }

    @model_validator(mode="after")
    def _spans(self):
        if self.max_start_epoch + self.expert_span > self.expert_epochs:
            raise ValueError(f"max_start_epoch + expert_span ({self.max_start_epoch} + {self.expert_span}) must be "
                             f"<= expert_epochs ({self.expert_epochs})")
        if sorted(set(self.ipcs)) != self.ipcs:
            raise ValueError("ipcs must be strictly increasing")
        return self


# ---------------------------------------------------------------- shared pieces


@dataclass(frozen=True)
class Data:
    """A test bed's splits (images flattened), image shape and number of classes."""

    train: digits.Split
    val: digits.Split
    test: digits.Split
    image_shape: tuple[int, int, int]
    n_classes: int


def image_shape(p: Params) -> tuple[int, int, int]:
    return (1, *digits.IMAGE_SHAPE) if p.dataset == "digits" else (3, SHAPES_SIZE, SHAPES_SIZE)


def load_data(p: Params, seed: int) -> Data:
    if p.dataset == "digits":
        d = digits.load(seed)
        return Data(d.train, d.val, d.test, (1, *digits.IMAGE_SHAPE), digits.N_CLASSES)
    attributes = shapes.Attributes() if p.shapes_classes == 50 else shapes.Attributes(colours=("red", "blue"),
                                                                                          positions=("left",))
    d = shapes.load(seed, size=SHAPES_SIZE, attributes=attributes, train_per_class=p.shapes_per_class)
    return Data(d.train, d.val, d.test, d.image_shape, d.n_classes)


def new_net(p: Params, data: Data, seed: int, batch_norm: bool = False, hidden=None) -> torch.nn.Module:
    torch.manual_seed(seed)
    hidden = hidden or p.hidden
    if p.architecture == "convnet":
        return ConvNet(data.image_shape, data.n_classes, width=hidden[0], depth=len(hidden),
                       norm="batch" if batch_norm else "instance")
    return mlp(int(np.prod(data.image_shape)), hidden, data.n_classes, batch_norm=batch_norm)


def shift(x: torch.Tensor, generator: torch.Generator, max_shift: int, image_shape=(1, *digits.IMAGE_SHAPE)) -> torch.Tensor:
    """Roll each flattened (C, H, W) image by its own random (dy, dx) in [-max_shift, max_shift] (differentiable)."""
    if max_shift == 0:
        return x
    images = x.reshape(-1, *image_shape)
    offsets = range(-max_shift, max_shift + 1)
    choice = torch.randint(0, len(offsets) ** 2, (len(x),), generator=generator)
    out = torch.zeros_like(images)
    for k, (dy, dx) in enumerate((dy, dx) for dy in offsets for dx in offsets):
        pick = (choice == k).to(x.dtype)[:, None, None, None]
        out = out + pick * torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    return out.reshape(len(x), -1)


EVALUATIONS = 12  # test-accuracy evaluations along each evaluation net's training (the claims read their tail)


def eval_every(p: Params) -> int:
    return max(1, p.eval_steps // EVALUATIONS)


def best_on_validation(run: Run, data: Data, lrs, train_one) -> tuple[float, float, list[float]]:
    """(test accuracy, learning rate, test-accuracy curve): for every rate, ``eval_nets`` nets ``train_one(lr, k)``
    (each returning the net and its test-accuracy curve) train; the rate with the best mean validation accuracy is
    picked, and its nets' mean final test accuracy and mean curve are returned."""
    best = None
    for lr in lrs:
        trained = [train_one(lr, k) for k in range(run.params.eval_nets)]
        nets = [n for n, _ in trained]
        val = np.mean([accuracy(predict_logits(n, data.val.x), data.val.y) for n in nets])
        if best is None or val > best[0]:
            test = float(np.mean([accuracy(predict_logits(n, data.test.x), data.test.y) for n in nets]))
            best = (val, test, lr, np.mean([c for _, c in trained], axis=0).tolist())
    return best[1], float(best[2]), best[3]


def _test_curve(data: Data):
    return lambda m: {"test_acc": accuracy(m(data.test.x), data.test.y)}


def evaluate_set(run: Run, data: Data, x: torch.Tensor, targets: torch.Tensor | None, seed: int,
                 relabel=None, extra_lrs: tuple[float, ...] = (), *, unroll_conditions: bool = False
                 ) -> tuple[float, float, list[float]]:
    """(test accuracy, learning rate, test-accuracy curve) of fresh nets trained by full-batch SGD (momentum 0.9)
    on augmented ``x``.

    ``targets`` are class ids or soft labels (static); ``relabel(x_augmented)`` instead gives soft labels
    for every augmented batch (dynamic). The rate comes from ``eval_lrs`` + ``extra_lrs``, picked on validation.
    ``unroll_conditions``: train as trajectory matching's unroll does (plain SGD, no momentum, no shift), the
    diagnosis of the yardstick's mismatch with the conditions the images were distilled under.
    """
    from distillbook.core.training import fit

    p = run.params
    max_shift, momentum = (0, 0.0) if unroll_conditions else (p.eval_shift, 0.9)

    def batch(gen):
        xa = shift(x, gen, max_shift, data.image_shape)
        return xa, (relabel(xa) if relabel is not None else targets)

    def train_one(lr, k):
        net = new_net(p, data, derived_seed(seed, 7, k))
        result = fit(net, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch, steps=p.eval_steps,  # ids or probabilities
                     optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum),
                     seed=derived_seed(seed, 8, k), progress=False, evaluate=_test_curve(data), eval_every=eval_every(p))
        return net, result.column("test_acc")

    return best_on_validation(run, data, (*p.eval_lrs, *extra_lrs), train_one)


def herding(split: digits.Split, per_class: int, n_classes: int) -> torch.Tensor:
    """Per class, greedily pick the image that keeps the picked images' mean closest to the class mean."""
    picks = []
    for label in range(n_classes):
        idx = torch.nonzero(split.y == label).flatten()
        xs = split.x[idx]
        target, chosen, total = xs.mean(0), [], torch.zeros(xs.shape[1])
        for k in range(per_class):
            dist = ((total + xs) / (k + 1) - target).norm(dim=1)
            if chosen:
                dist[torch.tensor(chosen)] = float("inf")
            best = int(dist.argmin())
            chosen.append(best)
            total = total + xs[best]
        picks.append(idx[torch.tensor(chosen)])
    return torch.cat(picks)


# ---------------------------------------------------------------- trajectory matching (MTT, AST)


class SyntheticSet(torch.nn.Module):
    """The distilled images and the log of the learnable student learning rate: the 'model' MTT trains."""

    def __init__(self, images: torch.Tensor, lr: float):
        super().__init__()
        self.images = torch.nn.Parameter(images.clone())
        self.log_lr = torch.nn.Parameter(torch.tensor(float(np.log(lr))))


def experts(run: Run, data: Data, seed: int, smooth: bool) -> list:
    """``n_experts`` SGD trajectories on the real training set; ``smooth``: AST's gradient penalty and loss ramp."""
    p = run.params
    out = []
    for e in range(p.n_experts):
        model = new_net(p, data, derived_seed(seed, 1, e))
        out.append(expert_trajectory(model, data.train.x, data.train.y, epochs=p.expert_epochs, lr=p.expert_lr,
                                     batch_size=p.expert_batch, generator=torch.Generator().manual_seed(derived_seed(seed, 2, e)),
                                     gradient_penalty=p.ast_penalty if smooth else 0.0,
                                     loss_scales=p.ast_loss_ramp if smooth else ()))
    return out


def match_trajectories(run: Run, data: Data, name: str, seed: int, trajectories: list, init: digits.Split):
    """MTT: optimise images (from ``init``) and the student lr so unrolled steps land on the experts' path."""
    p = run.params
    template = new_net(p, data, 0)
    synthetic = SyntheticSet(init.x, p.syn_lr_init)
    y = init.y

    def segment(gen):
        return torch.stack([torch.randint(0, len(trajectories), (), generator=gen),
                            torch.randint(0, p.max_start_epoch + 1, (), generator=gen)])

    def loss(m, b):
        expert, start = (int(v) for v in b)
        return trajectory_matching_step(template, trajectories[expert], start, p.expert_span, m.images, y,
                                        m.log_lr.exp(), p.syn_steps)

    optimizer = torch.optim.Adam([{"params": [synthetic.images], "lr": p.image_lr},
                                  {"params": [synthetic.log_lr], "lr": 0.01}])
    result = run.fit(name, seed, synthetic, loss, segment, steps=p.match_iterations, optimizer=optimizer,
                     eval_every=max(1, p.match_iterations // 20))
    return synthetic.images.detach(), y, float(synthetic.log_lr.detach().exp()), result.column("loss")


# ---------------------------------------------------------------- INFER and the SRe2L-like baseline


def train_teachers(run: Run, data: Data, seed: int) -> list[torch.nn.Module]:
    """BatchNorm nets of several architectures trained on the real training set (frozen afterwards)."""
    p = run.params
    teachers = []
    for a, hidden in enumerate(p.teacher_hiddens):
        net = new_net(p, data, derived_seed(seed, 3, a), batch_norm=True, hidden=hidden)
        x, y = data.train.x, data.train.y

        def batch(gen):
            i = torch.randint(0, len(y), (128,), generator=gen)
            return x[i], y[i]

        run.fit(f"teacher{a}", seed, net, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch, steps=p.teacher_steps,
                optimizer=torch.optim.AdamW(net.parameters(), lr=3e-3))
        net.eval()
        for q in net.parameters():
            q.requires_grad_(False)
        teachers.append(net)
    return teachers


def synthesise(run: Run, teachers, start: torch.Tensor, y: torch.Tensor, n_classes: int, *,
               shared_per_slot: bool) -> torch.Tensor:
    """Minimise CE(f(x), y) + bn_weight * L_BN over the teachers, cycling one teacher per step.

    ``shared_per_slot`` (INFER): x = anchors + u, one compensator u_j per anchor slot j shared by every
    class; otherwise (SRe2L-like) every image is optimised on its own, from ``start``.
    """
    p = run.params
    n_slots = len(y) // n_classes
    delta = torch.zeros(n_slots if shared_per_slot else len(y), start.shape[1], requires_grad=True)
    slot = torch.arange(len(y)) % n_slots  # images are ordered class-major: class c's j-th image at c * n + j
    hooks = [BNStatistics(t) for t in teachers]
    optimizer = torch.optim.Adam([delta], lr=p.synthesis_lr)
    for step in range(p.synthesis_steps):
        k = step % len(teachers)
        x = start + (delta[slot] if shared_per_slot else delta)
        loss = F.cross_entropy(teachers[k](x), y) + p.bn_weight * hooks[k].loss()
        for other in hooks:
            other.batch_stats = []
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for h in hooks:
        h.remove()
    return (start + (delta[slot] if shared_per_slot else delta)).detach()


def soft_labels(teachers, x: torch.Tensor, temperature: float) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(torch.stack([t(x) for t in teachers]).mean(0) / temperature, dim=-1)


def label_bytes(n_images: int, kind: str, steps: int, n_classes: int) -> int:
    """Bytes to store the labels: class ids (1 byte each), static soft labels (float32 per class), or
    dynamic soft labels (one float32 vector per image for every training step)."""
    per_soft = n_classes * 4
    return {"hard": n_images, "static": n_images * per_soft, "dynamic": steps * n_images * per_soft}[kind]


# ---------------------------------------------------------------- one seed


def run_seed(run: Run, seed: int) -> dict[str, torch.Tensor]:
    """Every method at every IPC for one seed; records accuracies, bytes and curves; returns images to show."""
    p = run.params
    data = load_data(p, seed)
    plain, smooth = experts(run, data, seed, smooth=False), experts(run, data, seed, smooth=True)
    run.record(seed, expert_path_plain=float(np.mean([path_length(t) for t in plain])),
               expert_path_smooth=float(np.mean([path_length(t) for t in smooth])))
    teachers = train_teachers(run, data, seed)
    run.record(seed, teacher_test_acc=float(np.mean([accuracy(t(data.test.x), data.test.y) for t in teachers])))
    shown = {}
    for ipc in p.ipcs:
        k = data.n_classes
        anchors = data.train.subset(_class_major(data.train, digits.labelled_subset(data.train, ipc, seed), ipc, k))
        herd = data.train.subset(_class_major(data.train, herding(data.train, ipc, k), ipc, k))
        acc, size, lrs, eval_curves = {}, {}, {}, {}
        acc["random"], lrs["random"], eval_curves["random"] = evaluate_set(run, data, anchors.x, anchors.y, seed)
        acc["random_unrolled"], lrs["random_unrolled"], eval_curves["random_unrolled"] = evaluate_set(
            run, data, anchors.x, anchors.y, seed, unroll_conditions=True)
        acc["herding"], lrs["herding"], eval_curves["herding"] = evaluate_set(run, data, herd.x, herd.y, seed)
        size["random"] = size["herding"] = label_bytes(len(anchors.y), "hard", p.eval_steps, k)
        curves = {}
        for method, trajectories in (("mtt", plain), ("ast", smooth)):
            x, y, lr, curves[method] = match_trajectories(run, data, f"{method}-ipc{ipc}", seed, trajectories, anchors)
            acc[method], lrs[method], eval_curves[method] = evaluate_set(run, data, x, y, seed, extra_lrs=(lr,))
            if method == "mtt":
                acc["mtt_unrolled"], lrs["mtt_unrolled"], eval_curves["mtt_unrolled"] = evaluate_set(
                    run, data, x, y, seed, extra_lrs=(lr,), unroll_conditions=True)
            size[method] = label_bytes(len(y), "hard", p.eval_steps, k)
            shown[f"{method}-ipc{ipc}"] = x
        # the same teachers for both: the contrast is class-wise synthesis + dynamic labels vs INFER + static labels
        noise = 0.3 + 0.1 * torch.randn(anchors.x.shape, generator=torch.Generator().manual_seed(derived_seed(seed, 4)))
        relabel = lambda xa: soft_labels(teachers, xa, p.label_temperature)  # noqa: E731
        x_sre2l = synthesise(run, teachers, noise, anchors.y, k, shared_per_slot=False)
        acc["sre2l"], lrs["sre2l"], eval_curves["sre2l"] = evaluate_set(run, data, x_sre2l, None, seed, relabel=relabel)
        size["sre2l"] = label_bytes(len(anchors.y), "dynamic", p.eval_steps, k)
        x_infer = synthesise(run, teachers, anchors.x, anchors.y, k, shared_per_slot=True)
        static = soft_labels(teachers, x_infer, p.label_temperature)
        acc["infer"], lrs["infer"], eval_curves["infer"] = evaluate_set(run, data, x_infer, static, seed)
        size["infer"] = label_bytes(len(anchors.y), "static", p.eval_steps, k)
        acc["infer_dynamic"], lrs["infer_dynamic"], eval_curves["infer_dynamic"] = evaluate_set(
            run, data, x_infer, None, seed, relabel=relabel)
        size["infer_dynamic"] = label_bytes(len(anchors.y), "dynamic", p.eval_steps, k)
        shown.update({f"random-ipc{ipc}": anchors.x, f"sre2l-ipc{ipc}": x_sre2l, f"infer-ipc{ipc}": x_infer})
        run.record(seed, **{f"acc_{m}_ipc{ipc}": v for m, v in acc.items()},
                   **{f"lr_{m}_ipc{ipc}": v for m, v in lrs.items()},
                   **{f"bytes_{m}_ipc{ipc}": v for m, v in size.items()},
                   **{f"curve_{m}_ipc{ipc}": c for m, c in eval_curves.items()},
                   **{f"match_loss_{m}_ipc{ipc}": c for m, c in curves.items()},
                   **{f"match_loss_tail_{m}_ipc{ipc}": claims_lib.tail_mean(c) for m, c in curves.items()},
                   **{f"match_loss_drift_{m}_ipc{ipc}": claims_lib.relative_change(c) for m, c in curves.items()})
    full, _, full_curve = evaluate_full(run, data, seed)
    run.record(seed, full_data_acc=full, full_data_curve=full_curve)
    return shown


def _class_major(split: digits.Split, index: torch.Tensor, per_class: int, n_classes: int) -> torch.Tensor:
    """Reorder picks so that class c's j-th image sits at c * per_class + j."""
    labels = split.y[index]
    order = torch.argsort(labels * len(index) + torch.arange(len(index)), stable=True)
    out = index[order]
    if not torch.equal(split.y[out], torch.arange(n_classes).repeat_interleave(per_class)):
        raise ValueError("every class needs exactly per_class picks")
    return out


def evaluate_full(run: Run, data: Data, seed: int) -> tuple[float, float, list[float]]:
    """The reference: the evaluation nets trained on the whole real training set (minibatches of 128,
    three times the steps, the same shifts, the rate picked on validation)."""
    from distillbook.core.training import fit

    p = run.params
    x, y = data.train.x, data.train.y

    def batch(gen):
        i = torch.randint(0, len(y), (128,), generator=gen)
        return shift(x[i], gen, p.eval_shift, data.image_shape), y[i]

    def train_one(lr, k):
        net = new_net(p, data, derived_seed(seed, 9, k))
        result = fit(net, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch, steps=3 * p.eval_steps,
                     optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9), seed=derived_seed(seed, 10, k),
                     progress=False, evaluate=_test_curve(data), eval_every=3 * eval_every(p))
        return net, result.column("test_acc")

    return best_on_validation(run, data, p.eval_lrs, train_one)


# ---------------------------------------------------------------- claims

LABELS = {"random": "random real subset", "herding": "herding subset", "mtt": "MTT",
          "ast": "MTT, smooth experts", "sre2l": "SRe2L-like, dynamic labels", "infer": "INFER, static labels",
          "infer_dynamic": "INFER, dynamic labels"}
ACC_MARGIN = 0.01  # one point of test accuracy
ACC_CONVERGENCE_TOL = 0.02  # the library default: above the yardstick's jitter between evaluations (random shifts)
MATCH_CONVERGENCE_TOL = 0.02  # the library default, for the matching loss (health table)


def test_size(p: Params) -> int:
    """Held-out test images the score is measured on (fixed for every seed)."""
    return digits.TEST_SIZE if p.dataset == "digits" else 50 * p.shapes_classes  # shapes.load's test_per_class=50


def _accuracy_bounds(p: Params) -> dict:
    n = test_size(p)
    rationale = (f"1 point: {n / 100:g} of the {n} fixed test images (resolution {100 / n:.2g} points an image; each "
                 f"score is the mean of {p.eval_nets} evaluation net(s)); the papers' tables rank methods by whole points. "
                 f"Arms are tail means of the last {claims_lib.WINDOW} of the evaluation nets' test-accuracy "
                 f"evaluations; a tail that moved by more than {ACC_CONVERGENCE_TOL:g} relative against the window before "
                 "is not converged (the library default, not the margin: nets trained on randomly shifted images "
                 "jitter by a point or two between evaluations)")
    return dict(margin=ACC_MARGIN, rationale=rationale, ceiling=1.0, saturation_tol=1 / n,
                convergence_tol=ACC_CONVERGENCE_TOL)


def claims(p: Params) -> tuple[Claim, ...]:
    small, large = p.ipcs[0], p.ipcs[-1]
    bounds = _accuracy_bounds(p)
    mismatch = ("the images are tuned to the matching unroll's conditions (plain SGD, no momentum, no shift) but "
                "judged by nets trained with momentum and random shifts; the same comparison under the unroll's "
                "conditions tests it.")
    out = []
    for ipc, statement in ((small, f"At {small} image(s) per class, MTT's distilled images train better networks than "
                                   "a random real subset (test accuracy)"),
                           (large, f"...and at {large} images per class")):
        out.append(Claim(f"mtt-beats-random-ipc{ipc}", AST, statement=statement,
                         a=f"MTT, IPC {ipc}", b=f"random, IPC {ipc}", **bounds,
                         paper_figure="Table 1 (MTT rows vs random)" if ipc == small else "Table 1",
                         paper_value="MTT far above random subsets at every IPC",
                         explanation=mismatch, diagnosis=f"mtt-beats-random-ipc{ipc}-unroll-conditions"))
    for ipc in (small, large):
        out.append(Claim(f"mtt-beats-random-ipc{ipc}-unroll-conditions", AST,
                         statement=f"Diagnosis: at {ipc} image(s) per class, MTT beats the random subset when both are "
                                   "judged by nets trained as the matching unroll trains (plain SGD, no shift)",
                         a=f"MTT, IPC {ipc}, unroll conditions", b=f"random, IPC {ipc}, unroll conditions", **bounds,
                         paper_figure="Table 1", paper_value="MTT far above random subsets at every IPC",
                         explanation="the matching loss is still falling when the run stops, so the images are not "
                                     "yet where trajectory matching would take them (health table).",
                         diagnosis=f"match_loss_drift_mtt_ipc{ipc}"))
    out += [
        Claim(f"smooth-experts-help-ipc{small}", AST, statement=f"Matching smoother experts (input-gradient penalty, "
              f"shorter parameter paths) beats matching plain experts at {small} image(s) per class",
              a=f"AST experts, IPC {small}", b=f"MTT, IPC {small}", **bounds, paper_figure="Table 1 / ablation",
              paper_value="AST beats MTT and FTD; smooth experts are part of the gain",
              explanation=f"{small} image(s) per class leave the synthetic set too little room for the experts' "
                          f"smoothness to matter; the same comparison at {large} images per class tests it.",
              diagnosis=f"smooth-experts-help-ipc{large}"),
        Claim(f"smooth-experts-help-ipc{large}", AST, statement=f"...and at {large} images per class",
              a=f"AST experts, IPC {large}", b=f"MTT, IPC {large}", **bounds, paper_figure="Table 1",
              paper_value="AST beats MTT across IPC settings",
              explanation="the smooth experts carry two of AST's changes only; whether they are smoother at all is "
                          "their parameter path length against the plain experts' (health table).",
              diagnosis="expert_path_smooth"),
        Claim(f"infer-static-beats-sre2l-dynamic-ipc{large}", INFER, statement=f"At {large} images per class, INFER "
              "with static soft labels beats class-wise SRe2L-like synthesis with dynamic labels",
              a=f"INFER static, IPC {large}", b=f"SRe2L-like dynamic, IPC {large}", **bounds,
              paper_figure="Tables 1-2", paper_value="beats class-specific methods with far less label storage",
              explanation="dynamic labels give a fresh teacher signal for every shifted image at every step, which one "
                          "static label per image cannot match; INFER's images with dynamic labels separate the images "
                          "from the labels.",
              diagnosis=f"infer-dynamic-labels-help-ipc{large}"),
        Claim(f"infer-dynamic-labels-help-ipc{large}", INFER, statement=f"Diagnosis: at {large} images per class, "
              "INFER's own images train better networks with dynamic labels than with their static soft labels",
              a=f"INFER dynamic, IPC {large}", b=f"INFER static, IPC {large}", **bounds,
              paper_figure="Tables 1-2 (INFER vs INFER+Dyn)", paper_value="dynamic labels add accuracy at a storage cost",
              explanation="if dynamic labels do not help on the same images, the labels cannot be what INFER-static "
                          "lacks against SRe2L-dynamic; the images comparison below separates the other half.",
              diagnosis=f"infer-images-beat-sre2l-images-ipc{large}"),
        Claim(f"infer-images-beat-sre2l-images-ipc{large}", INFER, statement=f"At {large} images per class and with "
              "dynamic labels for both, INFER's images beat the SRe2L-like class-wise synthesis",
              a=f"INFER dynamic, IPC {large}", b=f"SRe2L-like dynamic, IPC {large}", **bounds,
              paper_figure="Tables 1-2 (INFER+Dyn vs SRe2L)", paper_value="INFER+Dyn above SRe2L at every IPC",
              explanation="with MLP teachers and evaluation nets, synthesis from noise is not the weak point it is "
                          "for the paper's ConvNets, and the shared compensators leave INFER's images close to their "
                          "real anchors."),
    ]
    return tuple(out)


def evaluate_claims(run: Run) -> list[dict]:
    small, large = run.params.ipcs[0], run.params.ipcs[-1]
    c = {claim.id: claim for claim in claims(run.params)}
    def v(method: str, ipc: int):
        """An arm's evaluation curve; for a distilled set, its drift is also its trajectory matching's (the images
        are not settled while the matching loss still falls)."""
        arm = claims_lib.curve(run.values(f"curve_{method}_ipc{ipc}"))
        matched = {"mtt": "mtt", "mtt_unrolled": "mtt", "ast": "ast"}.get(method)
        if matched is None:
            return arm
        match_drift = np.asarray(run.values(f"match_loss_drift_{matched}_ipc{ipc}"), dtype=float)
        return claims_lib.derived(arm.values(), np.maximum(arm.drift(), match_drift), arm.window)
    return [
        c[f"mtt-beats-random-ipc{small}"].evaluate(v("mtt", small), v("random", small)),
        c[f"mtt-beats-random-ipc{large}"].evaluate(v("mtt", large), v("random", large)),
        c[f"mtt-beats-random-ipc{small}-unroll-conditions"].evaluate(v("mtt_unrolled", small),
                                                                     v("random_unrolled", small)),
        c[f"mtt-beats-random-ipc{large}-unroll-conditions"].evaluate(v("mtt_unrolled", large),
                                                                     v("random_unrolled", large)),
        c[f"smooth-experts-help-ipc{small}"].evaluate(v("ast", small), v("mtt", small)),
        c[f"smooth-experts-help-ipc{large}"].evaluate(v("ast", large), v("mtt", large)),
        c[f"infer-static-beats-sre2l-dynamic-ipc{large}"].evaluate(v("infer", large), v("sre2l", large)),
        c[f"infer-dynamic-labels-help-ipc{large}"].evaluate(v("infer_dynamic", large), v("infer", large)),
        c[f"infer-images-beat-sre2l-images-ipc{large}"].evaluate(v("infer_dynamic", large), v("sre2l", large)),
    ]


def record_health(run: Run) -> None:
    """Test-bed health: teachers and the yardstick against perfect accuracy, the experts' smoothing, and whether
    each trajectory matching converged."""
    p = run.params
    run.health("evaluation nets on the whole training set (the yardstick's ceiling)", "test accuracy",
               "full_data_acc", lower_is_better=False, references={"perfect accuracy": 1.0},
               note="how far a distilled set could go under this yardstick")
    run.health("BatchNorm teachers (INFER, SRe2L-like)", "test accuracy (mean over teachers)", "teacher_test_acc",
               lower_is_better=False, references={"perfect accuracy": 1.0, "evaluation nets, whole training set":
                                                  "full_data_acc"},
               note="the soft labels are only as good as these")
    run.health("smooth experts", "parameter path length", "expert_path_smooth", lower_is_better=True,
               references={"plain experts": "expert_path_plain"},
               note="smoother experts move less; equal lengths would leave the smooth-expert claims nothing to test")
    for ipc in p.ipcs:
        for method in ("mtt", "ast"):
            run.health(f"{LABELS[method]}, IPC {ipc}: matching", "relative change of the matching loss (last "
                       f"{claims_lib.WINDOW} logs vs the {claims_lib.WINDOW} before)",
                       f"match_loss_drift_{method}_ipc{ipc}", lower_is_better=True,
                       references={"convergence tolerance": MATCH_CONVERGENCE_TOL,
                                   "matching loss (tail mean)": f"match_loss_tail_{method}_ipc{ipc}"},
                       note="above the tolerance the matching was still improving when it stopped")


def matching_loss_markdown(run: Run) -> str:
    """What the matching-loss figure shows, per method and IPC (generated from the run)."""
    p = run.params
    rows = []
    for ipc in p.ipcs:
        for method in ("mtt", "ast"):
            drift = np.asarray(run.values(f"match_loss_drift_{method}_ipc{ipc}"))
            curves = np.asarray(run.values(f"match_loss_{method}_ipc{ipc}"))
            moving = int(np.sum(drift > MATCH_CONVERGENCE_TOL))
            rows.append(f"- {LABELS[method]}, IPC {ipc}: from {curves[:, 0].mean():.3g} to "
                        f"{np.mean(run.values(f'match_loss_tail_{method}_ipc{ipc}')):.3g} (mean of the last "
                        f"{claims_lib.WINDOW} logs); its tail moved by {100 * drift.mean():.1f}% on average against the "
                        f"logs before, "
                        + (f"more than the {100 * MATCH_CONVERGENCE_TOL:g}% tolerance in {moving} of {len(drift)} seeds "
                           "(still falling when the run stops)." if moving else
                           f"within the {100 * MATCH_CONVERGENCE_TOL:g}% tolerance in every seed."))
    return ("The normalised matching loss (1 = the student lands no closer to the expert's target than its start) "
            f"over {p.match_iterations} matching iterations:\n\n" + "\n".join(rows))


def evaluation_curves_markdown(run: Run) -> str:
    """How settled the evaluation nets' test accuracy is for every arm a claim reads."""
    p = run.params
    arms = sorted({(m, ipc) for ipc in p.ipcs for m in ("random", "mtt", "ast", "random_unrolled", "mtt_unrolled")}
                  | {(m, p.ipcs[-1]) for m in ("sre2l", "infer", "infer_dynamic")}, key=lambda x: (x[1], x[0]))
    moving = []
    for m, ipc in arms:
        drift = claims_lib.curve(run.values(f"curve_{m}_ipc{ipc}")).drift()
        if np.any(drift > ACC_CONVERGENCE_TOL):
            label = LABELS.get(m) or f"{LABELS[m.removesuffix('_unrolled')]}, unroll conditions"
            moving.append(f"{label} at IPC {ipc} "
                          f"({int(np.sum(drift > ACC_CONVERGENCE_TOL))} of {len(drift)} seeds)")
    head = (f"Every score is read from the evaluation nets' test accuracy, evaluated every {eval_every(p)} of their "
            f"{p.eval_steps} steps, as the mean of the last {claims_lib.WINDOW} evaluations. ")
    return head + ("Arms whose tail still moved by more than the tolerance: " + "; ".join(moving) + "."
                   if moving else "Every arm a claim reads had settled within the tolerance in every seed.")


def summary_markdown(run: Run, results: list[dict]) -> str:
    p = run.params

    def ms(values) -> str:
        return f"{100 * np.mean(values):.1f}% ± {100 * np.std(values, ddof=1):.1f}"

    def tail(name) -> np.ndarray:
        return claims_lib.curve(run.values(name)).values()

    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), test accuracy of fresh networks (mean of the "
             f"last {claims_lib.WINDOW} evaluations), mean ± std:", "",
             f"- trained on the whole real training set: {ms(tail('full_data_curve'))};"]
    for ipc in p.ipcs:
        lines.append(f"- {ipc} image(s) per class: " + "; ".join(
            f"{LABELS[m]} {ms(tail(f'curve_{m}_ipc{ipc}'))}" for m in LABELS) + ";")
        lines.append(f"  under the matching unroll's conditions (plain SGD, no shift): MTT "
                     f"{ms(tail(f'curve_mtt_unrolled_ipc{ipc}'))}, random {ms(tail(f'curve_random_unrolled_ipc{ipc}'))};")
    large = p.ipcs[-1]
    static, dynamic = run.values(f"bytes_infer_ipc{large}")[0], run.values(f"bytes_sre2l_ipc{large}")[0]
    lines.append(f"- labels at {large} images per class: static {static:,} bytes, dynamic {dynamic:,} bytes "
                 f"({dynamic / static:.0f}× more; by construction: one label per image vs one per image per step);")
    lines.append(f"- expert path length (parameter movement over training): plain "
                 f"{np.mean(run.values('expert_path_plain')):.2f}, smooth {np.mean(run.values('expert_path_smooth')):.2f}.")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def plot_accuracy_vs_ipc(run: Run):
    ipcs = run.params.ipcs
    fig, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    for k, (method, label) in enumerate(LABELS.items()):
        per_seed = np.stack([claims_lib.curve(run.values(f"curve_{method}_ipc{i}")).values() for i in ipcs], axis=1)
        mean_std_band(ax, ipcs, 100 * per_seed, label=label, color=f"C{k}")
    full = 100 * claims_lib.curve(run.values("full_data_curve")).values()
    ax.axhline(full.mean(), color="k", linestyle=":", label="whole training set (hard labels)")
    ax.set_xscale("log")
    ax.set_xticks(ipcs, [str(i) for i in ipcs])
    ax.set_xlabel("images per class (IPC)")
    ax.set_ylabel("test accuracy of fresh networks (%)")
    ax.set_title("Distilled sets: accuracy against size")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_images(shown: dict[str, torch.Tensor], ipc: int, image_shape=(1, *digits.IMAGE_SHAPE), max_classes: int = 10):
    """The first image of the first ``max_classes`` classes for each method at ``ipc``."""
    methods = [m for m in ("random", "mtt", "ast", "sre2l", "infer") if f"{m}-ipc{ipc}" in shown]
    n_classes = min(max_classes, len(shown[f"{methods[0]}-ipc{ipc}"]) // ipc)
    fig, axes = plt.subplots(len(methods), n_classes, figsize=(10, 1.15 * len(methods) + 0.4),
                             layout="constrained", squeeze=False)
    for r, method in enumerate(methods):
        x = shown[f"{method}-ipc{ipc}"]
        for c in range(n_classes):
            ax = axes[r, c]
            image = x[c * ipc].reshape(image_shape)
            if image_shape[0] == 1:
                ax.imshow(image[0], cmap="gray_r")
            else:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel({"ast": "smooth", "sre2l": "SRe2L"}.get(method, method.upper() if method != "random"
                                                                             else "random"), fontsize=9)
            if r == 0:
                ax.set_title(str(c), fontsize=9)
    fig.suptitle(f"Distilled images, first of each of the first {n_classes} classes (IPC {ipc}, one seed)")
    return fig


def plot_matching_loss(run: Run):
    p = run.params
    every = max(1, p.match_iterations // 20)
    fig, axes = plt.subplots(1, len(p.ipcs), figsize=(5 * len(p.ipcs), 3.8), layout="constrained", squeeze=False)
    for ax, ipc in zip(axes[0], p.ipcs):
        for method, color in (("mtt", "C2"), ("ast", "C3")):
            curves = run.values(f"match_loss_{method}_ipc{ipc}")
            steps = [every * (i + 1) for i in range(len(curves[0]))]
            mean_std_band(ax, steps, curves, label=LABELS[method], color=color, marker=None)
        ax.set_xlabel("matching iteration")
        ax.set_ylabel("normalised matching loss")
        ax.set_title(f"IPC {ipc}")
        ax.legend(fontsize=8)
    fig.suptitle("Trajectory-matching loss, plain vs smooth experts (mean ± std over seeds)")
    return fig


def plot_accuracy_vs_label_bytes(run: Run):
    large = run.params.ipcs[-1]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for k, (method, label) in enumerate(LABELS.items()):
        acc = 100 * claims_lib.curve(run.values(f"curve_{method}_ipc{large}")).values()
        size = run.values(f"bytes_{method}_ipc{large}")[0]
        ax.errorbar(size, acc.mean(), yerr=acc.std(ddof=1), fmt="o", capsize=3, color=f"C{k}", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("stored label size (bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy against label storage (IPC {large})")
    ax.legend(fontsize=8)
    return fig
