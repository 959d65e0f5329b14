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
from distillbook.methods.dataset_distillation import (augmented_soft_labels, expert_trajectory, herding,
                                                      match_trajectories, path_length, random_shift, shift_by,
                                                      shift_offsets, soft_labels, synthesise)
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

    @property
    def device(self) -> torch.device:
        return self.train.x.device

    def to(self, device: torch.device) -> Data:
        """The splits on ``device`` (the run's): every net, expert and synthetic set is made where its data are."""
        moved = [digits.Split(s.x.to(device), s.y.to(device)) for s in (self.train, self.val, self.test)]
        return Data(*moved, self.image_shape, self.n_classes)


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
    """A fresh net of the chapter's architecture (or ``hidden`` widths), initialised from ``seed``, on the data's
    device."""
    torch.manual_seed(seed)
    hidden = hidden or p.hidden
    if p.architecture == "convnet":
        net = ConvNet(data.image_shape, data.n_classes, width=hidden[0], depth=len(hidden),
                      norm="batch" if batch_norm else "instance")
    else:
        net = mlp(int(np.prod(data.image_shape)), hidden, data.n_classes, batch_norm=batch_norm)
    return net.to(data.device)


def cross_entropy(model: torch.nn.Module, batch) -> torch.Tensor:
    """CE of the model on (inputs, class ids or probabilities)."""
    return F.cross_entropy(model(batch[0]), batch[1])


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
                 relabel=None, lrs: tuple[float, ...] | None = None) -> tuple[float, float, list[float]]:
    """(test accuracy, learning rate, test-accuracy curve) of fresh nets trained by full-batch SGD (momentum 0.9)
    on ``x`` randomly shifted at every step (:func:`random_shift`, the augmentation MTT's unroll uses too).

    ``targets`` are class ids or soft labels (static); ``relabel(x_augmented)`` instead gives soft labels
    for every augmented batch (dynamic). The rate is picked on validation among ``lrs`` (default ``eval_lrs``);
    a distilled set with a learned rate passes that rate alone, as MTT and AST evaluate.
    """
    p = run.params
    momentum = 0.9

    def batch(gen):
        xa = random_shift(x, gen, p.eval_shift, data.image_shape)
        return xa, (relabel(xa) if relabel is not None else targets)

    def train_one(lr, k):
        net = new_net(p, data, derived_seed(seed, 7, k))
        result = fit(net, cross_entropy, batch, steps=p.eval_steps,
                     optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum),
                     seed=derived_seed(seed, 8, k), progress=False, evaluate=_test_curve(data), eval_every=eval_every(p))
        return net, result.column("test_acc")

    return best_on_validation(run, data, tuple(lrs or p.eval_lrs), train_one)


def evaluate_full(run: Run, data: Data, seed: int) -> tuple[float, float, list[float]]:
    """The reference: the evaluation nets trained on the whole real training set (minibatches of 128,
    three times the steps, the same shifts, the rate picked on validation)."""
    p = run.params
    x, y = data.train.x, data.train.y

    def batch(gen):
        i = torch.randint(0, len(y), (128,), generator=gen)
        return random_shift(x[i], gen, p.eval_shift, data.image_shape), y[i]

    def train_one(lr, k):
        net = new_net(p, data, derived_seed(seed, 9, k))
        result = fit(net, cross_entropy, batch, steps=3 * p.eval_steps,
                     optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9), seed=derived_seed(seed, 10, k),
                     progress=False, evaluate=_test_curve(data), eval_every=3 * eval_every(p))
        return net, result.column("test_acc")

    return best_on_validation(run, data, p.eval_lrs, train_one)


# ---------------------------------------------------------------- trajectory matching (MTT, AST)


def augmentation(p: Params, data: Data):
    """The one augmentation of the chapter: a random shift of up to ``eval_shift`` pixels, for the experts, the
    matching unroll and the evaluation nets alike."""
    return partial(random_shift, max_shift=p.eval_shift, image_shape=data.image_shape)


MATCH_LOGS = 20  # matching-loss logs per run (each the mean over its interval of iterations)


def match_every(p: Params) -> int:
    return max(1, p.match_iterations // MATCH_LOGS)


def experts(run: Run, data: Data, seed: int, smooth: bool, augmented: bool = False) -> list:
    """``n_experts`` SGD trajectories on the real training set; ``smooth``: AST's gradient penalty and loss ramp;
    ``augmented``: the batches randomly shifted as the unroll and the evaluation nets see their images (MTT's
    expert buffers; the diagnosis arm, see ``Params.augment_experts``)."""
    p = run.params
    out = []
    for e in range(p.n_experts):
        model = new_net(p, data, derived_seed(seed, 1, e))
        out.append(expert_trajectory(model, data.train.x, data.train.y, epochs=p.expert_epochs, lr=p.expert_lr,
                                     batch_size=p.expert_batch, seed=derived_seed(seed, 2, e),
                                     gradient_penalty=p.ast_penalty if smooth else 0.0,
                                     loss_scales=p.ast_loss_ramp if smooth else (),
                                     augment=augmentation(p, data) if augmented else None))
    return out


PROBES = 4  # accuracy probes along a probed matching (at each quarter of its iterations; the last is the arm's)


def distil_by_matching(run: Run, data: Data, name: str, seed: int, trajectories: list, init: digits.Split,
                       probe: bool = False):
    """MTT from ``init``: (images, labels, learned rate, matching-loss curve, accuracy probes). The unroll sees the
    images through the evaluation's random shift (a fresh draw per step), as MTT does with DSA's augmentation.
    ``probe``: the evaluation nets also train on the images (at the rate learned so far) at every quarter of the
    iterations but the last, whose score is the arm's own: [(iterations done, test accuracy), ...]."""
    p = run.params
    every = match_every(p) * max(1, MATCH_LOGS // PROBES)

    def accuracy_so_far(m, done: int) -> dict:
        if done % every or done >= p.match_iterations:
            return {}
        acc, _, _ = evaluate_set(run, data, m.images.detach().clone(), init.y, seed,
                                 lrs=(float(m.log_lr.detach().exp()),))
        return {"probe_acc": acc}

    synthetic, result = match_trajectories(
        new_net(p, data, derived_seed(seed, 6)), trajectories, init.x, init.y,
        fit=partial(run.fit, name, seed, eval_every=match_every(p)),
        iterations=p.match_iterations, expert_span=p.expert_span, max_start_epoch=p.max_start_epoch,
        syn_steps=p.syn_steps, syn_lr_init=p.syn_lr_init, image_lr=p.image_lr,
        augment=augmentation(p, data), cosine_decay=p.match_schedule == "cosine",
        probe=accuracy_so_far if probe else None)
    probes = [(row["step"], row["probe_acc"]) for row in result.history if "probe_acc" in row]
    return synthetic.images.detach(), init.y, float(synthetic.log_lr.detach().exp()), result.column("loss"), probes


# ---------------------------------------------------------------- INFER and the SRe2L-like baseline


SYNTHESIS_LOGS = 20  # synthesis-loss logs per run (each the mean over its interval of steps)


def synthesis_every(p: Params) -> int:
    """Steps per synthesis-loss log: a multiple of the number of teachers, so every log averages them alike."""
    k = len(p.teacher_hiddens)
    return max(k, p.synthesis_steps // SYNTHESIS_LOGS // k * k)


def train_teachers(run: Run, data: Data, seed: int) -> list[torch.nn.Module]:
    """BatchNorm nets of several architectures trained on the real training set, randomly shifted as every set is
    at evaluation (frozen afterwards): their labels of shifted views, static or dynamic, are then those of a
    teacher that has seen such views, as SRe2L's and INFER's teachers were trained with their augmentation."""
    p = run.params
    teachers = []
    for a, hidden in enumerate(p.teacher_hiddens):
        net = new_net(p, data, derived_seed(seed, 3, a), batch_norm=True, hidden=hidden)
        x, y = data.train.x, data.train.y

        def batch(gen):
            i = torch.randint(0, len(y), (128,), generator=gen)
            return random_shift(x[i], gen, p.eval_shift, data.image_shape), y[i]

        run.fit(f"teacher{a}", seed, net, cross_entropy, batch, steps=p.teacher_steps,
                optimizer=torch.optim.AdamW(net.parameters(), lr=3e-3))
        net.eval()
        for q in net.parameters():
            q.requires_grad_(False)
        teachers.append(net)
    return teachers


def label_bytes(n_images: int, kind: str, steps: int, n_classes: int, n_views: int = 1) -> int:
    """Bytes to store the labels: class ids (1 byte each), static soft labels (float32 per class), soft labels
    for each of the augmentation's ``n_views`` views of every image (a table the dynamic labels could be read
    from when the augmentation is finite, as a shift is), or dynamic soft labels as SRe2L stores them (one
    vector per image for every training step, what a continuous augmentation such as a random crop needs)."""
    per_soft = n_classes * 4
    return {"hard": n_images, "static": n_images * per_soft, "per_view": n_views * n_images * per_soft,
            "dynamic": steps * n_images * per_soft}[kind]


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
    """Every method at every IPC for one seed; records accuracies, bytes and curves; returns images to show.

    Subsets and trajectory matching run at every IPC; the BatchNorm-synthesis arms (SRe2L-like, INFER) at the
    largest, the one their claims read. MTT and AST are trained at their learned rate; the real subsets and the
    synthesised sets at the rate picked on validation from ``eval_lrs``."""
    p = run.params
    host = bed.data(seed)  # the picks (random, herding) are made on the host, everything trained on the run's device
    data = host.to(run.device)
    plain, smooth = experts(run, data, seed, smooth=False), experts(run, data, seed, smooth=True)
    run.record(seed, expert_path_plain=float(np.mean([path_length(t) for t in plain])),
               expert_path_smooth=float(np.mean([path_length(t) for t in smooth])))
    teachers = train_teachers(run, data, seed)
    run.record(seed, teacher_test_acc=float(np.mean([accuracy(t(data.test.x), data.test.y) for t in teachers])))
    n_views = len(shift_offsets(p.eval_shift))

    def relabel(xa: torch.Tensor) -> torch.Tensor:
        return soft_labels(teachers, xa, p.label_temperature)

    def static_labels(x: torch.Tensor) -> torch.Tensor:
        return augmented_soft_labels(teachers, x, p.label_temperature, p.eval_shift, data.image_shape)

    def synthesised(name: str, start: torch.Tensor, y: torch.Tensor, *,
                    shared_per_slot: bool) -> tuple[torch.Tensor, list[float]]:
        """The images (SRe2L's recover step, seeing the shift as the students will) and the synthesis-loss curve."""
        result = {}

        def fit_(*args, **kwargs):
            result["fit"] = run.fit(name, seed, *args, eval_every=synthesis_every(p), **kwargs)
            return result["fit"]

        x = synthesise(teachers, start, y, data.n_classes, shared_per_slot=shared_per_slot, steps=p.synthesis_steps,
                       lr=p.synthesis_lr, bn_weight=p.bn_weight, fit=fit_, augment=augmentation(p, data),
                       cosine_decay=True)
        return x, result["fit"].column("loss")

    def shifted_teacher_accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        """The teachers' accuracy on every shifted view of ``x`` (mean over the views): whether the images carry
        their class under the augmentation the students train with, or only in one alignment."""
        with torch.no_grad():
            return float(np.mean([accuracy(torch.stack([t(shift_by(x, dy, dx, data.image_shape)) for t in teachers])
                                           .mean(0), y) for dy, dx in shift_offsets(p.eval_shift)]))

    shown = {}
    for ipc in p.ipcs:
        k = data.n_classes
        random_picks = digits.labelled_subset(host.train, ipc, derived_seed(seed, 5))
        anchors = data.train.subset(_class_major(host.train, random_picks, ipc, k))
        herd = data.train.subset(_class_major(host.train, herding(host.train, ipc, k), ipc, k))
        acc, size, lrs, eval_curves, curves, synthesis_curves, shifted_acc = {}, {}, {}, {}, {}, {}, {}

        def evaluate(method: str, x, targets, **kwargs) -> None:
            acc[method], lrs[method], eval_curves[method] = evaluate_set(run, data, x, targets, seed, **kwargs)

        evaluate("random", anchors.x, anchors.y)
        evaluate("herding", herd.x, herd.y)
        size["random"] = size["herding"] = label_bytes(len(anchors.y), "hard", p.eval_steps, k)
        matched = [("mtt", plain), ("ast", smooth)]
        if ipc == p.ipcs[-1] and p.augment_experts:
            matched.append(("mtt_augmented_experts", experts(run, data, seed, smooth=False, augmented=True)))
        for method, trajectories in matched:
            probed = method == "mtt" and ipc == p.ipcs[-1]
            x, y, lr, curves[method], probes = distil_by_matching(run, data, f"{method}-ipc{ipc}", seed, trajectories,
                                                                  anchors, probe=probed)
            evaluate(method, x, y, lrs=(lr,))  # the learned rate alone
            if probed:  # the accuracy along the matching, ending with the arm's own
                run.record(seed, **{f"probe_steps_{method}_ipc{ipc}": [s for s, _ in probes] + [p.match_iterations],
                                    f"probe_acc_{method}_ipc{ipc}": [a for _, a in probes] + [acc[method]]})
            size[method] = label_bytes(len(y), "hard", p.eval_steps, k)
            shown[f"{method}-ipc{ipc}"] = x
        if ipc == p.ipcs[-1]:
            # the same teachers for both: INFER's anchors + shared compensators vs class-wise synthesis from noise,
            # each with static labels (averaged over the shifts) and with dynamic ones
            noise = (0.3 + 0.1 * torch.randn(anchors.x.shape, generator=derived_generator(seed, 4))).to(data.device)
            x_sre2l, synthesis_curves["sre2l"] = synthesised(f"sre2l-ipc{ipc}", noise, anchors.y, shared_per_slot=False)
            x_infer, synthesis_curves["infer"] = synthesised(f"infer-ipc{ipc}", anchors.x, anchors.y, shared_per_slot=True)
            shifted_acc.update(sre2l=shifted_teacher_accuracy(x_sre2l, anchors.y),
                               infer=shifted_teacher_accuracy(x_infer, anchors.y),
                               random=shifted_teacher_accuracy(anchors.x, anchors.y))
            evaluate("sre2l", x_sre2l, None, relabel=relabel)
            evaluate("sre2l_static", x_sre2l, static_labels(x_sre2l))
            evaluate("infer", x_infer, static_labels(x_infer))
            evaluate("infer_dynamic", x_infer, None, relabel=relabel)
            # the labels before the fix: computed on the unshifted images, reused for every shifted view
            evaluate("infer_unshifted_labels", x_infer, soft_labels(teachers, x_infer, p.label_temperature))
            for method in ("sre2l_static", "infer", "infer_unshifted_labels"):
                size[method] = label_bytes(len(anchors.y), "static", p.eval_steps, k)
            for method in ("sre2l", "infer_dynamic"):
                size[method] = label_bytes(len(anchors.y), "dynamic", p.eval_steps, k)
            size["per_view"] = label_bytes(len(anchors.y), "per_view", p.eval_steps, k, n_views)
            shown.update({f"sre2l-ipc{ipc}": x_sre2l, f"infer-ipc{ipc}": x_infer})
        shown[f"random-ipc{ipc}"] = anchors.x
        run.record(seed, **{f"acc_{m}_ipc{ipc}": v for m, v in acc.items()},
                   **{f"lr_{m}_ipc{ipc}": v for m, v in lrs.items()},
                   **{f"bytes_{m}_ipc{ipc}": v for m, v in size.items()},
                   **{f"curve_{m}_ipc{ipc}": c for m, c in eval_curves.items()},
                   **{f"match_loss_{m}_ipc{ipc}": c for m, c in curves.items()},
                   **{f"match_loss_tail_{m}_ipc{ipc}": claims_lib.tail_mean(c) for m, c in curves.items()},
                   **{f"match_loss_drift_{m}_ipc{ipc}": claims_lib.relative_change(c) for m, c in curves.items()},
                   **{f"synthesis_loss_{m}_ipc{ipc}": c for m, c in synthesis_curves.items()},
                   **{f"synthesis_loss_drift_{m}_ipc{ipc}": claims_lib.relative_change(c)
                      for m, c in synthesis_curves.items()},
                   **{f"teacher_shifted_acc_{m}_ipc{ipc}": v for m, v in shifted_acc.items()})
    full, _, full_curve = evaluate_full(run, data, seed)
    run.record(seed, full_data_acc=full, full_data_curve=full_curve)
    return {name: x.detach().cpu() for name, x in shown.items()}
