"""The digits test bed and every training of the chapter: the teacher and the two groups of students."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.chapters.foundations.params import Params
from distillbook.core import claims as claims_lib
from distillbook.core.metrics import accuracy
from distillbook.core.results import Run
from distillbook.core.runtime import derived_seed
from distillbook.core.training import Stack
from distillbook.models.convnet import ConvNet
from distillbook.models.mlp import mlp, predict_logits
from distillbook.testbeds import digits

OMIT_BIAS_GRID = np.round(np.arange(0.0, 12.01, 0.25), 2)
# What each seed derived from a run seed is for (``derived_seed(seed, purpose)``); every student of a seed
# starts from the same initialisation, so the arms differ only in what they learn from.
TEACHER_INIT, STUDENT_INIT, LABELLED_SUBSET = 1, 2, 3


@dataclass(frozen=True)
class Bed:
    """The digits of every seed: each seed draws its own test, validation and training split (repeated random
    splits), so the spread over seeds includes which 500 images the students are tested on."""

    data: dict[int, digits.Digits]


def build_bed(run: Run) -> Bed:
    """Every seed's digits (sklearn's bundled images, no download)."""
    return Bed({seed: digits.load(seed, test_seed=seed) for seed in run.seeds})


# ---------------------------------------------------------------- the teacher


def train_teacher(run: Run, data: digits.Digits, seed: int) -> torch.nn.Module:
    """A small ConvNet trained with cross-entropy on every training label and jittered inputs: a teacher
    regularised in ways its students are not, as the paper's was (it used dropout and jitter)."""
    p = run.params
    torch.manual_seed(derived_seed(seed, TEACHER_INIT))
    teacher = ConvNet((1, *digits.IMAGE_SHAPE), digits.N_CLASSES, width=p.teacher_width,
                      depth=p.teacher_depth).to(run.device)
    x, y = data.train.x.to(run.device), data.train.y.to(run.device)

    def batch(gen):
        i = torch.randint(0, len(y), (p.batch_size,), generator=gen)
        return digits.jitter(x[i], gen, p.teacher_jitter), y[i]

    def loss_fn(m, b):
        return F.cross_entropy(m(b[0]), b[1])

    run.fit("teacher", seed, teacher, loss_fn, batch, steps=p.teacher_steps,
            optimizer=torch.optim.AdamW(teacher.parameters(), lr=p.teacher_lr, weight_decay=p.weight_decay))
    return teacher.eval()


# ---------------------------------------------------------------- the students


@dataclass(frozen=True)
class Arm:
    """What one student learns from: cross-entropy on ``labelled``, plus (with a ``transfer`` set and the
    teacher's logits on it) a term on the teacher's outputs: soft targets at ``temperature``, or its
    arg-max labels when ``temperature`` is None; ``alpha`` overrides the run's weight of that term."""

    name: str
    labelled: digits.Split
    transfer: digits.Split | None = None
    teacher_logits: torch.Tensor | None = None
    temperature: float | None = None
    alpha: float | None = None

    def __post_init__(self):
        if (self.transfer is None) != (self.teacher_logits is None):
            raise ValueError(f"arm {self.name}: give transfer and teacher_logits together")
        if self.transfer is None and self.temperature is not None:
            raise ValueError(f"arm {self.name}: a temperature needs a transfer set")


def stacked_objective(z_transfer: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor,
                      z_labelled: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Hinton's objective for K stacked students (leading axis k), summed over them:

        sum_k  alpha_k T_k^2 KL(p_k || softmax(z_transfer_k / T_k)) + (1 - alpha_k) CE(y_k, softmax(z_labelled_k))

    ``targets`` p_k are the teacher's soft targets at T_k, or one-hot arg-max labels (with T_k = 1: then the
    KL is the cross-entropy on those labels); alpha_k = 0 trains on labels only. Each term is
    :func:`distillbook.methods.kd.distillation_objective` for one student (``tests/test_foundations.py``).
    """
    k, _, c = z_transfer.shape
    t = temperature[:, None, None]
    kl = (torch.special.xlogy(targets, targets) - targets * F.log_softmax(z_transfer / t, -1)).sum(-1).mean(-1)
    ce = F.cross_entropy(z_labelled.reshape(-1, c), labels.reshape(-1), reduction="none").reshape(k, -1).mean(-1)
    return (alpha * temperature ** 2 * kl + (1 - alpha) * ce).sum()


def _padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack tensors of different lengths along a new leading axis, zero-padded to the longest."""
    out = tensors[0].new_zeros((len(tensors), max(len(t) for t in tensors), *tensors[0].shape[1:]))
    for k, t in enumerate(tensors):
        out[k, :len(t)] = t
    return out


def train_students(run: Run, data: digits.Digits, seed: int, group: str, arms: list[Arm], hidden: list[int],
                   steps: int) -> tuple[list[torch.nn.Module], dict[str, list[float]], list[int]]:
    """One student per arm, all from the same initialisation, trained together as one :class:`Stack` (one
    ``fit``; each student gets exactly its own gradient). The learning rate decays to 0 on a cosine.

    Each step every student reads ``batch_size`` images of its labelled set (and as many of its transfer set,
    when the two differ), drawn with the same random numbers for every arm.
    Returns the trained students, each arm's test-accuracy curve, and the steps the curves were read at.
    """
    p: Params = run.params
    students = []
    for _ in arms:
        torch.manual_seed(derived_seed(seed, STUDENT_INIT))
        students.append(mlp(64, hidden, digits.N_CLASSES))
    stack = Stack(students).to(run.device)
    n, device = p.batch_size, run.device
    # every arm's data in one zero-padded tensor per field; an arm without a transfer set reuses its labelled set
    transfers = [(a.labelled, torch.zeros(len(a.labelled), digits.N_CLASSES)) if a.transfer is None
                 else (a.transfer, a.teacher_logits) for a in arms]
    x_l, y_l = _padded([a.labelled.x for a in arms]).to(device), _padded([a.labelled.y for a in arms]).to(device)
    x_t, v_t = _padded([t.x for t, _ in transfers]).to(device), _padded([v for _, v in transfers]).to(device)
    sizes = torch.tensor([[len(a.labelled), len(t)] for a, (t, _) in zip(arms, transfers)], dtype=torch.float32)
    temperature = torch.tensor([1.0 if a.temperature is None else a.temperature for a in arms], device=device)
    alpha = torch.tensor([0.0 if a.transfer is None else p.alpha if a.alpha is None else a.alpha for a in arms],
                         device=device)
    argmax = torch.tensor([a.transfer is not None and a.temperature is None for a in arms], device=device)
    rows = torch.arange(len(arms), device=device)[:, None]

    # An arm whose transfer set is its labelled set (or absent) reads both terms on the same images, as in the
    # paper's MNIST distillation; the others draw a labelled and a transfer batch. Every arm draws from the same
    # uniform numbers, so arms on the same sets see the same images in the same order (a paired comparison).
    same_images = torch.tensor([a.transfer is None or a.transfer is a.labelled for a in arms], device=device)
    split = not bool(same_images.all())  # forward a separate transfer batch only if some arm needs one

    def batch(gen):
        picks = (torch.rand(2, n, generator=gen) * sizes[:, :, None]).long().to(device)  # (arms, 2, batch)
        i, j = picks[:, 0], torch.where(same_images[:, None], picks[:, 0], picks[:, 1])
        x = torch.cat([x_l[rows, i], x_t[rows, j]], dim=1) if split else x_l[rows, i]
        return x, y_l[rows, i], v_t[rows, j]

    def loss_fn(m, b):
        x, y, v = b
        z = m(x)  # (arms, batch, classes), or the labelled batch followed by the transfer batch
        z_l, z_t = (z[:, :n], z[:, n:]) if split else (z, z)
        # an arm reading one batch takes its transfer term on the labelled images' logits
        z_t = torch.where(same_images[:, None, None], z_l, z_t)
        hard = F.one_hot(v.argmax(-1), digits.N_CLASSES).to(v.dtype)
        targets = torch.where(argmax[:, None, None], hard, F.softmax(v / temperature[:, None, None], -1))
        return stacked_objective(z_t, targets, temperature, z_l, y, alpha)

    test_x, test_y = data.test.x.to(device), data.test.y.to(device)

    def evaluate(m):
        z = m(test_x.expand(len(arms), *test_x.shape))
        return {f"{arm.name}_test_acc": accuracy(z[k], test_y) for k, arm in enumerate(arms)}

    optimizer = torch.optim.AdamW(stack.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    result = run.fit(group, seed, stack, loss_fn, batch, steps=steps, optimizer=optimizer,
                     scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps),
                     evaluate=evaluate, eval_every=p.eval_every)
    stack.unstack(students)
    return students, {arm.name: result.column(f"{arm.name}_test_acc") for arm in arms}, result.column("step")


def best_bias(logits: torch.Tensor, labels: torch.Tensor, cls: int) -> float:
    """The bias added to class ``cls``'s logit that maximises accuracy on (logits, labels); ties to the smallest."""
    accs = []
    for b in OMIT_BIAS_GRID:
        shifted = logits.clone()
        shifted[:, cls] += b
        accs.append(accuracy(shifted, labels))
    return float(OMIT_BIAS_GRID[int(np.argmax(accs))])


def soft_name(temperature: float) -> str:
    return f"soft_T{temperature:g}"


def omit_temperatures(p: Params) -> list[float]:
    """The omitted-digit student's temperatures: the paper's (20) and T = 1."""
    return sorted({1.0, p.mnist_temperature})


def omit_arms(p: Params) -> list[str]:
    """The omitted-digit students, in the order their metrics list them: without a teacher, then per temperature."""
    return ["omit_labels_only"] + [f"omit_T{t:g}" for t in omit_temperatures(p)]


def record_curves(run: Run, seed: int, group: str, curves: dict[str, list[float]], steps: list[int]) -> None:
    """Each arm's test-accuracy curve (what the claims read) and its tail mean (the figures' and health table's
    reading of it)."""
    run.record(seed, **{f"{group}_curve_steps": steps}, **{f"{group}_{name}_curve": c for name, c in curves.items()},
               **{f"{group}_{name}_test_acc": claims_lib.tail_mean(c) for name, c in curves.items()})


def run_seed(run: Run, seed: int, bed: Bed) -> torch.nn.Module:
    """Every experiment of the chapter for one seed; records its numbers and returns the teacher."""
    p: Params = run.params
    data = bed.data[seed]
    teacher = train_teacher(run, data, seed)
    full = data.train
    v_full = predict_logits(teacher, full.x)
    run.record(seed, teacher_test_acc=accuracy(predict_logits(teacher, data.test.x), data.test.y),
               # how often the teacher's arg-max label is the true one on its own training images
               teacher_transfer_acc=accuracy(v_full, full.y))

    # The paper's comparison: the same unregularised net on every training label, with and without soft targets;
    # and, as in the paper's MNIST-without-3s experiment, that net with one digit removed from everything it sees.
    k = p.omit_class
    full_wo = full.without_class(k)
    v_full_wo = predict_logits(teacher, full_wo.x)
    wide = ([Arm("hard", full)] + [Arm(soft_name(t), full, full, v_full, t) for t in p.wide_temperatures()]
            + [Arm(f"{soft_name(p.mnist_temperature)}_alpha{p.diagnosis_alpha:g}", full, full, v_full,
                   p.mnist_temperature, alpha=p.diagnosis_alpha)]
            + [Arm("omit_labels_only", full_wo)]
            + [Arm(f"omit_T{t:g}", full_wo, full_wo, v_full_wo, t) for t in omit_temperatures(p)])
    students, curves, steps = train_students(run, data, seed, "wide", wide, p.wide_hidden, p.wide_steps)
    record_curves(run, seed, "wide", curves, steps)

    # The small net: the temperature sweep on every label; a few labels per class (alone, with soft targets on
    # them, with the teacher's soft or arg-max targets on every training image).
    picks = digits.labelled_subset(full, p.labelled_per_class, derived_seed(seed, LABELLED_SUBSET))
    few = full.subset(picks)
    t_small = p.small_net_temperature
    small = ([Arm("hard", full)] + [Arm(soft_name(t), full, full, v_full, t) for t in p.temperatures]
             + [Arm("few", few), Arm("few_soft", few, few, predict_logits(teacher, few.x), t_small),
                Arm("few_unlabelled_argmax", few, full, v_full),
                Arm("few_unlabelled_soft", few, full, v_full, t_small)])
    _, curves, steps = train_students(run, data, seed, "small", small, p.small_hidden, p.small_steps)
    record_curves(run, seed, "small", curves, steps)

    raw, adjusted, biases = [], [], []
    is_k = data.test.y == k
    for name in omit_arms(p):
        student = students[[a.name for a in wide].index(name)]
        test_logits = predict_logits(student, data.test.x)
        b = best_bias(predict_logits(student, data.val.x), data.val.y, k)  # the paper tuned this bias by hand
        shifted = test_logits.clone()
        shifted[:, k] += b
        raw.append(accuracy(test_logits[is_k], data.test.y[is_k]))
        adjusted.append(accuracy(shifted[is_k], data.test.y[is_k]))
        biases.append(b)
    run.record(seed, omit_class_raw_acc=raw, omit_class_adjusted_acc=adjusted, omit_bias=biases,
               omit_class_test_images=int(is_k.sum()))
    return teacher
