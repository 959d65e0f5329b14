"""The test bed and the runs: experts, teachers, every distilled set at every IPC, and the yardstick that
judges them (fresh nets trained on a set, scored on held-out real images)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.chapters.dataset_distillation.params import Params
from distillbook.core import claims as claims_lib
from distillbook.core.metrics import accuracy
from distillbook.core.results import Run
from distillbook.core.runtime import derived_generator, derived_seed
from distillbook.core.training import fit
from distillbook.methods.dataset_distillation import (expert_trajectory, herding, match_trajectories, path_length,
                                                      soft_labels, synthesise)
from distillbook.models.convnet import ConvNet
from distillbook.models.mlp import mlp, predict_logits
from distillbook.testbeds import digits, shapes

SHAPES_SIZE = 32
EVALUATIONS = 12  # test-accuracy evaluations along each evaluation net's training (the claims read their tail)


@dataclass(frozen=True)
class Data:
    """A test bed's splits (images flattened), image shape and number of classes."""

    train: digits.Split
    val: digits.Split
    test: digits.Split
    image_shape: tuple[int, int, int]
    n_classes: int


@dataclass(frozen=True)
class Bed:
    """What every seed shares: the test bed, its image shape and classes, and the size of its fixed test split.
    The train/validation split depends on the seed (``bed.data(seed)``), and so does everything trained on it
    (experts, teachers, distilled sets)."""

    dataset: str
    image_shape: tuple[int, int, int]
    n_classes: int
    n_test: int
    attributes: shapes.Attributes | None = None
    shapes_per_class: int = 0

    def data(self, seed: int) -> Data:
        if self.dataset == "digits":
            d = digits.load(seed)
            return Data(d.train, d.val, d.test, self.image_shape, self.n_classes)
        d = shapes.load(seed, size=SHAPES_SIZE, attributes=self.attributes, train_per_class=self.shapes_per_class)
        return Data(d.train, d.val, d.test, d.image_shape, d.n_classes)


def n_test_images(p: Params) -> int:
    """Held-out test images the score is measured on (fixed for every seed)."""
    return digits.TEST_SIZE if p.dataset == "digits" else 50 * p.shapes_classes  # shapes.load's test_per_class=50


def build_bed(run: Run) -> Bed:
    """The test bed the seeds share (its splits are drawn per seed, in ``run_seed``)."""
    p = run.params
    if p.dataset == "digits":
        return Bed("digits", (1, *digits.IMAGE_SHAPE), digits.N_CLASSES, n_test_images(p))
    attributes = shapes.Attributes() if p.shapes_classes == 50 else shapes.Attributes(colours=("red", "blue"),
                                                                                          positions=("left",))
    return Bed("shapes", (3, SHAPES_SIZE, SHAPES_SIZE), attributes.n_classes, n_test_images(p), attributes,
               p.shapes_per_class)


def new_net(p: Params, data: Data, seed: int, batch_norm: bool = False, hidden=None) -> torch.nn.Module:
    """A fresh net of the chapter's architecture (or ``hidden`` widths), initialised from ``seed``."""
    torch.manual_seed(seed)
    hidden = hidden or p.hidden
    if p.architecture == "convnet":
        return ConvNet(data.image_shape, data.n_classes, width=hidden[0], depth=len(hidden),
                       norm="batch" if batch_norm else "instance")
    return mlp(int(np.prod(data.image_shape)), hidden, data.n_classes, batch_norm=batch_norm)


def cross_entropy(model: torch.nn.Module, batch) -> torch.Tensor:
    """CE of the model on (inputs, class ids or probabilities)."""
    return F.cross_entropy(model(batch[0]), batch[1])


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


# ---------------------------------------------------------------- the yardstick


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
    def test_accuracy(m):
        return {"test_acc": accuracy(m(data.test.x), data.test.y)}

    return test_accuracy


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
    p = run.params
    max_shift, momentum = (0, 0.0) if unroll_conditions else (p.eval_shift, 0.9)

    def batch(gen):
        xa = shift(x, gen, max_shift, data.image_shape)
        return xa, (relabel(xa) if relabel is not None else targets)

    def train_one(lr, k):
        net = new_net(p, data, derived_seed(seed, 7, k))
        result = fit(net, cross_entropy, batch, steps=p.eval_steps,
                     optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum),
                     seed=derived_seed(seed, 8, k), progress=False, evaluate=_test_curve(data), eval_every=eval_every(p))
        return net, result.column("test_acc")

    return best_on_validation(run, data, (*p.eval_lrs, *extra_lrs), train_one)


def evaluate_full(run: Run, data: Data, seed: int) -> tuple[float, float, list[float]]:
    """The reference: the evaluation nets trained on the whole real training set (minibatches of 128,
    three times the steps, the same shifts, the rate picked on validation)."""
    p = run.params
    x, y = data.train.x, data.train.y

    def batch(gen):
        i = torch.randint(0, len(y), (128,), generator=gen)
        return shift(x[i], gen, p.eval_shift, data.image_shape), y[i]

    def train_one(lr, k):
        net = new_net(p, data, derived_seed(seed, 9, k))
        result = fit(net, cross_entropy, batch, steps=3 * p.eval_steps,
                     optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9), seed=derived_seed(seed, 10, k),
                     progress=False, evaluate=_test_curve(data), eval_every=3 * eval_every(p))
        return net, result.column("test_acc")

    return best_on_validation(run, data, p.eval_lrs, train_one)


# ---------------------------------------------------------------- trajectory matching (MTT, AST)


def experts(run: Run, data: Data, seed: int, smooth: bool) -> list:
    """``n_experts`` SGD trajectories on the real training set; ``smooth``: AST's gradient penalty and loss ramp."""
    p = run.params
    out = []
    for e in range(p.n_experts):
        model = new_net(p, data, derived_seed(seed, 1, e))
        out.append(expert_trajectory(model, data.train.x, data.train.y, epochs=p.expert_epochs, lr=p.expert_lr,
                                     batch_size=p.expert_batch, seed=derived_seed(seed, 2, e),
                                     gradient_penalty=p.ast_penalty if smooth else 0.0,
                                     loss_scales=p.ast_loss_ramp if smooth else ()))
    return out


def distil_by_matching(run: Run, data: Data, name: str, seed: int, trajectories: list, init: digits.Split):
    """MTT from ``init``: (images, labels, learned rate, matching-loss curve)."""
    p = run.params
    synthetic, result = match_trajectories(
        new_net(p, data, derived_seed(seed, 6)), trajectories, init.x, init.y,
        fit=partial(run.fit, name, seed, eval_every=max(1, p.match_iterations // 20)),
        iterations=p.match_iterations, expert_span=p.expert_span, max_start_epoch=p.max_start_epoch,
        syn_steps=p.syn_steps, syn_lr_init=p.syn_lr_init, image_lr=p.image_lr)
    return synthetic.images.detach(), init.y, float(synthetic.log_lr.detach().exp()), result.column("loss")


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

        run.fit(f"teacher{a}", seed, net, cross_entropy, batch, steps=p.teacher_steps,
                optimizer=torch.optim.AdamW(net.parameters(), lr=3e-3))
        net.eval()
        for q in net.parameters():
            q.requires_grad_(False)
        teachers.append(net)
    return teachers


def label_bytes(n_images: int, kind: str, steps: int, n_classes: int) -> int:
    """Bytes to store the labels: class ids (1 byte each), static soft labels (float32 per class), or
    dynamic soft labels (one float32 vector per image for every training step)."""
    per_soft = n_classes * 4
    return {"hard": n_images, "static": n_images * per_soft, "dynamic": steps * n_images * per_soft}[kind]


# ---------------------------------------------------------------- one seed


def _class_major(split: digits.Split, index: torch.Tensor, per_class: int, n_classes: int) -> torch.Tensor:
    """Reorder picks so that class c's j-th image sits at c * per_class + j."""
    labels = split.y[index]
    order = torch.argsort(labels * len(index) + torch.arange(len(index)), stable=True)
    out = index[order]
    if not torch.equal(split.y[out], torch.arange(n_classes).repeat_interleave(per_class)):
        raise ValueError("every class needs exactly per_class picks")
    return out


def run_seed(run: Run, seed: int, bed: Bed) -> dict[str, torch.Tensor]:
    """Every method at every IPC for one seed; records accuracies, bytes and curves; returns images to show."""
    p = run.params
    data = bed.data(seed)
    plain, smooth = experts(run, data, seed, smooth=False), experts(run, data, seed, smooth=True)
    run.record(seed, expert_path_plain=float(np.mean([path_length(t) for t in plain])),
               expert_path_smooth=float(np.mean([path_length(t) for t in smooth])))
    teachers = train_teachers(run, data, seed)
    run.record(seed, teacher_test_acc=float(np.mean([accuracy(t(data.test.x), data.test.y) for t in teachers])))

    def relabel(xa: torch.Tensor) -> torch.Tensor:
        return soft_labels(teachers, xa, p.label_temperature)

    def synthesised(name: str, start: torch.Tensor, y: torch.Tensor, *, shared_per_slot: bool) -> torch.Tensor:
        return synthesise(teachers, start, y, data.n_classes, shared_per_slot=shared_per_slot,
                          steps=p.synthesis_steps, lr=p.synthesis_lr, bn_weight=p.bn_weight,
                          fit=partial(run.fit, name, seed))

    shown = {}
    for ipc in p.ipcs:
        k = data.n_classes
        random_picks = digits.labelled_subset(data.train, ipc, derived_seed(seed, 5))
        anchors = data.train.subset(_class_major(data.train, random_picks, ipc, k))
        herd = data.train.subset(_class_major(data.train, herding(data.train, ipc, k), ipc, k))
        acc, size, lrs, eval_curves = {}, {}, {}, {}
        acc["random"], lrs["random"], eval_curves["random"] = evaluate_set(run, data, anchors.x, anchors.y, seed)
        acc["random_unrolled"], lrs["random_unrolled"], eval_curves["random_unrolled"] = evaluate_set(
            run, data, anchors.x, anchors.y, seed, unroll_conditions=True)
        acc["herding"], lrs["herding"], eval_curves["herding"] = evaluate_set(run, data, herd.x, herd.y, seed)
        size["random"] = size["herding"] = label_bytes(len(anchors.y), "hard", p.eval_steps, k)
        curves = {}
        for method, trajectories in (("mtt", plain), ("ast", smooth)):
            x, y, lr, curves[method] = distil_by_matching(run, data, f"{method}-ipc{ipc}", seed, trajectories, anchors)
            acc[method], lrs[method], eval_curves[method] = evaluate_set(run, data, x, y, seed, extra_lrs=(lr,))
            if method == "mtt":
                acc["mtt_unrolled"], lrs["mtt_unrolled"], eval_curves["mtt_unrolled"] = evaluate_set(
                    run, data, x, y, seed, extra_lrs=(lr,), unroll_conditions=True)
            size[method] = label_bytes(len(y), "hard", p.eval_steps, k)
            shown[f"{method}-ipc{ipc}"] = x
        # the same teachers for both: the contrast is class-wise synthesis + dynamic labels vs INFER + static labels
        noise = 0.3 + 0.1 * torch.randn(anchors.x.shape, generator=derived_generator(seed, 4))
        x_sre2l = synthesised(f"sre2l-ipc{ipc}", noise, anchors.y, shared_per_slot=False)
        acc["sre2l"], lrs["sre2l"], eval_curves["sre2l"] = evaluate_set(run, data, x_sre2l, None, seed, relabel=relabel)
        size["sre2l"] = label_bytes(len(anchors.y), "dynamic", p.eval_steps, k)
        x_infer = synthesised(f"infer-ipc{ipc}", anchors.x, anchors.y, shared_per_slot=True)
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
