"""The digits test bed and every training of the chapter: the teacher, the students, the ablations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.chapters.foundations.params import Params, ablation_settings
from distillbook.core.metrics import accuracy
from distillbook.core.results import Run
from distillbook.core.runtime import derived_seed
from distillbook.methods.kd import distillation_objective
from distillbook.models.mlp import mlp, predict_logits
from distillbook.testbeds import digits

OMIT_BIAS_GRID = np.round(np.arange(0.0, 12.01, 0.25), 2)
# What each seed derived from a run seed is for (``derived_seed(seed, purpose)``); every student of a seed
# starts from the same initialisation, so the arms differ only in what they learn from.
TEACHER_INIT, STUDENT_INIT, LABELLED_SUBSET = 1, 2, 3


@dataclass(frozen=True)
class Bed:
    """The digits of every seed: the fixed test split, and each seed's own train/validation split."""

    data: dict[int, digits.Digits]


def build_bed(run: Run) -> Bed:
    """Every seed's digits (sklearn's bundled images, no download)."""
    return Bed({seed: digits.load(seed) for seed in run.seeds})


# ---------------------------------------------------------------- training


def _sampler(n: int, batch_size: int):
    """Draw ``batch_size`` indices in [0, n) with the generator ``fit`` passes (so resume replays it)."""
    return lambda gen: torch.randint(0, n, (min(batch_size, n),), generator=gen)


def train_teacher(run: Run, data: digits.Digits, seed: int) -> torch.nn.Module:
    """A wide MLP trained with cross-entropy on every training label."""
    p = run.params
    torch.manual_seed(derived_seed(seed, TEACHER_INIT))
    teacher = mlp(64, p.teacher_hidden, digits.N_CLASSES, dropout=p.teacher_dropout).to(run.device)
    x, y = data.train.x, data.train.y
    draw = _sampler(len(y), p.batch_size)

    def batch(gen):
        i = draw(gen)
        return x[i], y[i]

    def loss_fn(m, b):
        return F.cross_entropy(m(b[0]), b[1])

    run.fit("teacher", seed, teacher, loss_fn, batch, steps=p.teacher_steps,
            optimizer=torch.optim.AdamW(teacher.parameters(), lr=p.lr, weight_decay=p.weight_decay))
    return teacher


def train_student(run: Run, data: digits.Digits, seed: int, labelled: digits.Split, *, name: str,
                  transfer: digits.Split | None = None, teacher_logits: torch.Tensor | None = None,
                  temperature: float | None = None, hidden: list[int] | None = None,
                  steps: int | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """The small student: cross-entropy on ``labelled``, plus a term on the teacher's outputs over ``transfer``.

    With a ``temperature``, Hinton's objective (:func:`distillbook.methods.kd.distillation_objective`):
        alpha * T^2 KL(p_T || q_T) on a transfer batch + (1 - alpha) * CE on a labelled batch.
    With ``temperature=None`` (the pseudo-label control), the teacher's arg-max replaces p_T:
        alpha * CE(argmax v, q_1) on a transfer batch + (1 - alpha) * CE on a labelled batch.
    ``hidden`` and ``steps`` override the student's widths and training length (ablations).
    """
    p = run.params
    steps = p.student_steps if steps is None else steps
    torch.manual_seed(derived_seed(seed, STUDENT_INIT))
    student = mlp(64, p.student_hidden if hidden is None else hidden, digits.N_CLASSES).to(run.device)
    draw_labelled = _sampler(len(labelled), p.batch_size)
    uses_teacher = transfer is not None
    if uses_teacher != (teacher_logits is not None):
        raise ValueError("give transfer and teacher_logits together")
    draw_transfer = _sampler(len(transfer), p.batch_size) if uses_teacher else None

    def batch(gen):
        i = draw_labelled(gen)
        if not uses_teacher:
            return labelled.x[i], labelled.y[i]
        j = draw_transfer(gen)
        return labelled.x[i], labelled.y[i], transfer.x[j], teacher_logits[j]

    def loss_fn(m, b):
        if not uses_teacher:
            return F.cross_entropy(m(b[0]), b[1])
        x_l, y_l, x_t, v_t = b
        if temperature is None:
            # alpha * CE(argmax v, q_1) + (1 - alpha) * CE(y, q_1)
            return p.alpha * F.cross_entropy(m(x_t), v_t.argmax(-1)) + (1 - p.alpha) * F.cross_entropy(m(x_l), y_l)
        # alpha * T^2 KL(p_T || q_T) + (1 - alpha) * CE(y, q_1)
        return distillation_objective(m(x_t), v_t, m(x_l), y_l, temperature, p.alpha)

    test_x, test_y = data.test.x.to(run.device), data.test.y.to(run.device)

    def evaluate(m):
        return {"test_acc": accuracy(m(test_x), test_y)}

    result = run.fit(name, seed, student, loss_fn, batch, steps=steps,
                     optimizer=torch.optim.AdamW(student.parameters(), lr=p.lr, weight_decay=p.weight_decay),
                     evaluate=evaluate, eval_every=min(p.eval_every, steps))
    return student, result.history


def _acc(model, split: digits.Split) -> float:
    return accuracy(predict_logits(model, split.x), split.y)


def best_bias(logits: torch.Tensor, labels: torch.Tensor, cls: int) -> float:
    """The bias added to class ``cls``'s logit that maximises accuracy on (logits, labels); ties to the smallest."""
    accs = []
    for b in OMIT_BIAS_GRID:
        shifted = logits.clone()
        shifted[:, cls] += b
        accs.append(accuracy(shifted, labels))
    return float(OMIT_BIAS_GRID[int(np.argmax(accs))])


def run_seed(run: Run, seed: int, bed: Bed) -> torch.nn.Module:
    """Every experiment of the chapter for one seed; records its numbers and returns the teacher."""
    p: Params = run.params
    data = bed.data[seed]
    teacher = train_teacher(run, data, seed)
    teacher_logits = predict_logits(teacher, data.train.x)
    picks = digits.labelled_subset(data.train, p.labelled_per_class, derived_seed(seed, LABELLED_SUBSET))
    labelled = data.train.subset(picks)

    student, curve = train_student(run, data, seed, labelled, name="label-only")
    run.record(seed, teacher_test_acc=_acc(teacher, data.test), label_only_test_acc=_acc(student, data.test),
               label_only_curve=[r["test_acc"] for r in curve], curve_steps=[r["step"] for r in curve])
    student, curve = train_student(run, data, seed, labelled, name="pseudo-labels", transfer=data.train,
                                   teacher_logits=teacher_logits)
    run.record(seed, pseudo_label_test_acc=_acc(student, data.test), pseudo_label_curve=[r["test_acc"] for r in curve],
               # how often the teacher's arg-max label is the true one on the transfer set (what pseudo-labels give)
               teacher_transfer_acc=accuracy(teacher_logits, data.train.y))

    # Soft targets on the labelled images only, and on labelled + unlabelled (the transfer set).
    labelled_logits = predict_logits(teacher, labelled.x)
    for arm, transfer, logits in (("soft_labelled", labelled, labelled_logits),
                                  ("soft_all", data.train, teacher_logits)):
        test, curves = [], []
        for t in p.temperatures:
            student, curve = train_student(run, data, seed, labelled, name=f"{arm}-T{t:g}", transfer=transfer,
                                           teacher_logits=logits, temperature=t)
            test.append(_acc(student, data.test))
            curves.append([r["test_acc"] for r in curve])
        run.record(seed, **{f"{arm}_test_acc": test, f"{arm}_curves": curves})

    # One digit removed from everything the student sees (labels and transfer set).
    k = p.omit_class
    labelled_wo, transfer_wo = labelled.without_class(k), data.train.without_class(k)
    logits_wo = predict_logits(teacher, transfer_wo.x)
    raw, adjusted, biases = [], [], []
    is_k = data.test.y == k
    for t in p.temperatures:
        student, _ = train_student(run, data, seed, labelled_wo, name=f"omit{k}-T{t:g}", transfer=transfer_wo,
                                   teacher_logits=logits_wo, temperature=t)
        test_logits = predict_logits(student, data.test.x)
        b = best_bias(predict_logits(student, data.val.x), data.val.y, k)  # the paper tuned this bias by hand
        shifted = test_logits.clone()
        shifted[:, k] += b
        raw.append(accuracy(test_logits[is_k], data.test.y[is_k]))
        adjusted.append(accuracy(shifted[is_k], data.test.y[is_k]))
        biases.append(b)
    run.record(seed, omit_class_raw_acc=raw, omit_class_adjusted_acc=adjusted, omit_bias=biases)

    # Ablation: does a wider student, or a longer training, change soft targets vs arg-max labels?
    for label, hidden, steps in ablation_settings(p):
        for arm, t in (("argmax", None), ("soft", p.mnist_temperature)):
            student, curve = train_student(run, data, seed, labelled, name=f"ablation-{label}-{arm}",
                                           transfer=data.train, teacher_logits=teacher_logits, temperature=t,
                                           hidden=hidden, steps=steps)
            run.record(seed, **{f"ablation_{label}_{arm}_test_acc": _acc(student, data.test),
                                f"ablation_{label}_{arm}_curve": [r["test_acc"] for r in curve]})
            if arm == "soft":
                run.record(seed, **{f"ablation_{label}_curve_steps": [r["step"] for r in curve]})
    return teacher
