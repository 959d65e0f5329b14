"""Dataset distillation: trajectory matching (MTT) with AST's smoother experts, herding, and SRe2L / INFER
synthesis against BatchNorm teachers.

**Trajectory matching** (MTT, Cazenavette et al. 2022). A dataset is distilled into a few synthetic examples
so that a network trained on them follows the path an expert took on the real data. From an expert
checkpoint theta*_t, the student takes N gradient steps on the synthetic set with a learnable learning rate,
and the loss compares where it lands with where the expert was M epochs later:

    L_MTT = ||theta_hat_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2      (:func:`matching_loss`)

The unrolled steps are written with ``torch.func`` (``functional_call`` and ``grad``, :func:`unroll`), and
the loss is differentiated through them with respect to the synthetic inputs and the learning rate
(``tests/test_trajectory_matching.py`` checks that meta-gradient against finite differences).
:func:`match_trajectories` is the whole distillation: images and log-rate optimised by Adam on random
expert segments.

**AST** (Shen et al., 2024, paper 67) trains smoother experts. Its input-gradient penalty is an option of
:func:`expert_trajectory`, in the form lambda * ||grad_x CE(x)||_2^2 that always smooths: the two-sided
form lambda * (||grad_x CE||_2 - 1)^2 pulls norms *towards* 1, and on digits, whose per-example input
gradients are already below 1, it made the experts rougher (measured: larger steps in parameter space).
Its clipped loss is the ramp :data:`AST_LOSS_RAMP` of cross-entropy multipliers over the first epochs.

**SRe2L and INFER** (paper 78). Synthetic inputs are pushed to produce, at every ``BatchNorm`` layer of a
trained (frozen) teacher, batch statistics that match the running statistics it saw on real data
(:class:`BNStatistics`):

    L_BN = sum_l ||mu_l(x) - mu_l^run||_2 + ||sigma^2_l(x) - sigma^2_l^run||_2,

and :func:`synthesise` (SRe2L's recover step) minimises CE(f(x), y) + lambda_BN L_BN, cycling over the
teachers. SRe2L optimises every image on its own, from noise; INFER adds one compensator u_j per anchor slot,
shared by every class, to real anchors: x_{c,j} = a_{c,j} + u_j. Labels are the teachers' softened mean
prediction (:func:`soft_labels`): once per image (INFER's static labels) or for every augmented batch
(SRe2L's dynamic labels).

**Herding** (:func:`herding`) picks, per class, real images whose running mean tracks the class mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from distillbook.core import training

if TYPE_CHECKING:
    from distillbook.core.training import FitResult

Weights = dict[str, torch.Tensor]
"""A network's parameters by name: one checkpoint of a trajectory."""

AST_LOSS_RAMP = (0.5, 0.5, 0.55, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
"""AST's clipped loss: the experts' cross-entropy multipliers for their first epochs (from AST's expert code)."""

METHODS = {
    "MTT expert trajectories (plain SGD, a checkpoint per epoch)": ("expert_trajectory", None),
    "AST smooth experts (input-gradient penalty, clipped-loss ramp)": ("expert_trajectory", 67),
    "MTT student unroll (differentiable SGD steps on the synthetic set)": ("unroll", None),
    "MTT trajectory-matching loss": ("matching_loss", None),
    "MTT matching step (one expert segment)": ("trajectory_matching_step", None),
    "MTT distillation (images and learnable learning rate)": ("match_trajectories", None),
    "expert parameter path length (smoothness)": ("path_length", 67),
    "herding subset selection": ("herding", None),
    "SRe2L BatchNorm-statistics matching": ("BNStatistics", None),
    "SRe2L recover step (class-wise synthesis from noise)": ("synthesise", None),
    "INFER inter-class feature compensators": ("SynthesisedSet", 78),
    "INFER static soft labels, SRe2L dynamic relabelling": ("soft_labels", 78),
}


# ---------------------------------------------------------------- experts (MTT, AST)


def snapshot(model: nn.Module) -> Weights:
    """A detached copy of the model's parameters."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def expert_trajectory(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
                      batch_size: int, seed: int, gradient_penalty: float = 0.0,
                      loss_scales: Sequence[float] = ()) -> list[Weights]:
    """Train ``model`` by plain SGD on (x, y) for ``epochs`` passes in a random order (``fit`` with ``seed``);
    return its parameters at the start and after every epoch.

    ``gradient_penalty`` > 0 adds lambda * ||grad_x CE(x)||_2^2 per example (averaged), which flattens the
    loss around the data and so slows and smooths the expert's trajectory. ``loss_scales[e]`` multiplies
    the cross-entropy in epoch e (AST's clipped loss: a ramp from 0.5 towards 1 over the first epochs;
    1 after the list ends), shortening the early, steepest part of the path.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
    steps_per_epoch = -(-len(x) // batch_size)  # the last batch of an epoch may be smaller
    trajectory = [snapshot(model)]
    left = torch.zeros(0, dtype=torch.long)  # this epoch's random order, minus the batches taken (not checkpointed)

    def next_batch(gen: torch.Generator):
        nonlocal left
        if len(left) == 0:
            left = torch.randperm(len(x), generator=gen)
        idx, left = left[:batch_size], left[batch_size:]
        return x[idx], y[idx]

    def loss_fn(m: nn.Module, batch, step: int) -> torch.Tensor:
        epoch = step // steps_per_epoch
        scale = loss_scales[epoch] if epoch < len(loss_scales) else 1.0
        xb = batch[0].clone().requires_grad_(gradient_penalty > 0)
        ce = F.cross_entropy(m(xb), batch[1])
        # AST: L = s_epoch * CE + lambda * mean_i ||grad_{x_i} CE||_2^2 (CE * batch: per-example gradients)
        loss = scale * ce
        if gradient_penalty > 0:
            (gx,) = torch.autograd.grad(ce * len(xb), xb, create_graph=True)
            loss = loss + gradient_penalty * gx.flatten(1).pow(2).sum(dim=1).mean()
        return loss

    def after_step(m: nn.Module, step: int) -> None:
        if (step + 1) % steps_per_epoch == 0:  # theta*_e, the checkpoint at the end of epoch e
            trajectory.append(snapshot(m))

    training.fit(model, loss_fn, next_batch, steps=epochs * steps_per_epoch,
                 optimizer=torch.optim.SGD(model.parameters(), lr=lr), seed=seed, progress=False, after_step=after_step)
    return trajectory


def path_length(trajectory: list[Weights]) -> float:
    """Total parameter movement: shorter means a smoother expert."""
    # sum_t ||theta_{t+1} - theta_t||_2
    return float(sum(torch.sqrt(sum((b[k] - a[k]).pow(2).sum() for k in a))
                     for a, b in zip(trajectory, trajectory[1:])))


# ---------------------------------------------------------------- trajectory matching (MTT)


def unroll(model: nn.Module, start: Weights, x_syn: torch.Tensor, y_syn: torch.Tensor, syn_lr: torch.Tensor,
           steps: int, batch_size: int | None = None, generator: torch.Generator | None = None) -> Weights:
    """``steps`` SGD steps from ``start`` on the synthetic set; differentiable in ``x_syn`` and ``syn_lr``
    (and ``y_syn`` when it holds soft labels)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")

    def loss(params: Weights, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (xb,)), yb)

    params = dict(start)
    for _ in range(steps):
        if batch_size is None or batch_size >= len(x_syn):
            xb, yb = x_syn, y_syn
        else:
            idx = torch.randperm(len(x_syn), generator=generator)[:batch_size]
            xb, yb = x_syn[idx], y_syn[idx]
        grads = grad(loss)(params, xb, yb)
        # theta_{k+1} = theta_k - alpha * grad_theta CE(f(x_syn; theta_k), y_syn)
        params = {k: params[k] - syn_lr * grads[k] for k in params}
    return params


def matching_loss(student_end: Weights, expert_start: Weights, expert_target: Weights) -> torch.Tensor:
    """The MTT loss over all parameters."""
    # L_MTT = ||theta_hat_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2
    num = sum((student_end[k] - expert_target[k]).pow(2).sum() for k in expert_target)
    den = sum((expert_start[k] - expert_target[k]).pow(2).sum() for k in expert_target)
    if den == 0:
        raise ValueError("the expert did not move between the start and target checkpoints")
    return num / den


def trajectory_matching_step(model: nn.Module, trajectory: list[Weights], start_epoch: int, expert_epochs: int,
                             x_syn: torch.Tensor, y_syn: torch.Tensor, syn_lr: torch.Tensor, steps: int,
                             **unroll_kwargs) -> torch.Tensor:
    """The MTT loss for one expert segment: start at ``trajectory[start_epoch]``, aim ``expert_epochs`` ahead."""
    target_epoch = start_epoch + expert_epochs
    if not 0 <= start_epoch < target_epoch < len(trajectory):
        raise ValueError(f"need 0 <= start_epoch < start_epoch + expert_epochs <= {len(trajectory) - 1}")
    start, target = trajectory[start_epoch], trajectory[target_epoch]
    # theta_hat_N: N student steps from theta*_t
    end = unroll(model, start, x_syn, y_syn, syn_lr, steps, **unroll_kwargs)
    return matching_loss(end, start, target)


class SyntheticSet(nn.Module):
    """The distilled images and the log of the learnable student learning rate: the 'model' MTT trains."""

    def __init__(self, images: torch.Tensor, lr: float):
        super().__init__()
        self.images = nn.Parameter(images.clone())
        self.log_lr = nn.Parameter(torch.tensor(float(np.log(lr))))


def match_trajectories(template: nn.Module, trajectories: list[list[Weights]], images: torch.Tensor,
                       labels: torch.Tensor, *, fit: Callable, iterations: int, expert_span: int,
                       max_start_epoch: int, syn_steps: int, syn_lr_init: float, image_lr: float,
                       lr_lr: float = 0.01) -> tuple[SyntheticSet, FitResult]:
    """MTT: optimise ``images`` (labels fixed) and the student's learning rate by Adam so that ``syn_steps``
    unrolled steps from a random expert checkpoint land ``expert_span`` epochs further along that expert.

    Every iteration draws an expert and a start epoch t <= ``max_start_epoch``. ``template`` is the
    architecture the experts were trained with (its own weights are never used). ``fit(model, loss_fn,
    next_batch, steps=..., optimizer=...)`` runs the iterations: ``run.fit`` with its name and seed bound,
    or :func:`distillbook.core.training.fit` with a seed. Returns the synthetic set and ``fit``'s result.
    """
    synthetic = SyntheticSet(images, syn_lr_init)

    def segment(gen: torch.Generator) -> torch.Tensor:
        # (expert e, start epoch t) ~ U{experts} x U{0..max_start_epoch}
        return torch.stack([torch.randint(0, len(trajectories), (), generator=gen),
                            torch.randint(0, max_start_epoch + 1, (), generator=gen)])

    def loss(m: SyntheticSet, b: torch.Tensor) -> torch.Tensor:
        expert, start = (int(v) for v in b)
        # L_MTT(x_syn, alpha = exp(log_lr)) on the segment theta*_t -> theta*_{t+M}
        return trajectory_matching_step(template, trajectories[expert], start, expert_span, m.images, labels,
                                        m.log_lr.exp(), syn_steps)

    optimizer = torch.optim.Adam([{"params": [synthetic.images], "lr": image_lr},
                                  {"params": [synthetic.log_lr], "lr": lr_lr}])
    result = fit(synthetic, loss, segment, steps=iterations, optimizer=optimizer)
    return synthetic, result


# ---------------------------------------------------------------- herding


def herding(split, per_class: int, n_classes: int) -> torch.Tensor:
    """Indices into ``split`` (``.x`` flattened images, ``.y`` labels): per class, greedily the image that keeps
    the picked images' mean closest to the class mean."""
    picks = []
    for label in range(n_classes):
        idx = torch.nonzero(split.y == label).flatten()
        xs = split.x[idx]
        target, chosen, total = xs.mean(0), [], torch.zeros(xs.shape[1])
        for k in range(per_class):
            # pick argmin_i ||(sum of the k picked + x_i) / (k + 1) - mu_class||, among the unpicked
            dist = ((total + xs) / (k + 1) - target).norm(dim=1)
            if chosen:
                dist[torch.tensor(chosen)] = float("inf")
            best = int(dist.argmin())
            chosen.append(best)
            total = total + xs[best]
        picks.append(idx[torch.tensor(chosen)])
    return torch.cat(picks)


# ---------------------------------------------------------------- SRe2L and INFER


class BNStatistics:
    """Forward hooks that record the batch mean and variance of every BatchNorm layer's input."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not self.layers:
            raise ValueError("the model has no BatchNorm layer to match")
        self.batch_stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]

    def _hook(self, module, inputs, output):
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))  # every axis but the channels
        # mu_l(x), sigma^2_l(x): the batch's statistics per channel (biased variance, as BatchNorm normalises)
        self.batch_stats.append((x.mean(dim=dims), x.var(dim=dims, unbiased=False)))

    def loss(self) -> torch.Tensor:
        """L_BN over the layers recorded since the last call (then cleared)."""
        if len(self.batch_stats) != len(self.layers):
            raise RuntimeError(f"expected one forward pass: {len(self.batch_stats)} records for {len(self.layers)} layers")
        # L_BN = sum_l ||mu_l(x) - mu_l^run||_2 + ||sigma^2_l(x) - sigma^2_l^run||_2
        total = sum(torch.norm(mean - layer.running_mean, 2) + torch.norm(var - layer.running_var, 2)
                    for (mean, var), layer in zip(self.batch_stats, self.layers))
        self.batch_stats = []
        return total

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class SynthesisedSet(nn.Module):
    """The images SRe2L and INFER optimise: x = start + delta, ``start`` fixed (noise or real anchors).

    ``shared_per_slot`` (INFER): one compensator u_j per anchor slot j, shared by every class,
    x_{c,j} = a_{c,j} + u_j, for images ordered class-major (class c's j-th image at c * n_slots + j);
    otherwise (SRe2L) one delta_i per image.
    """

    def __init__(self, start: torch.Tensor, n_classes: int, shared_per_slot: bool):
        super().__init__()
        n_slots = len(start) // n_classes
        self.shared_per_slot = shared_per_slot
        self.register_buffer("start", start.clone())
        self.register_buffer("slot", torch.arange(len(start)) % n_slots)
        self.delta = nn.Parameter(torch.zeros(n_slots if shared_per_slot else len(start), start.shape[1]))

    def forward(self) -> torch.Tensor:
        # INFER: x_{c,j} = a_{c,j} + u_j;  SRe2L: x_i = x0_i + delta_i
        return self.start + (self.delta[self.slot] if self.shared_per_slot else self.delta)


def synthesise(teachers: Sequence[nn.Module], start: torch.Tensor, y: torch.Tensor, n_classes: int, *,
               shared_per_slot: bool, steps: int, lr: float, bn_weight: float, fit: Callable) -> torch.Tensor:
    """SRe2L's recover step: minimise CE(f_k(x), y) + bn_weight * L_BN(f_k; x) over a :class:`SynthesisedSet` by
    Adam, one (frozen, eval-mode) teacher f_k per step, k = step mod K.

    ``fit(model, loss_fn, next_batch, steps=..., optimizer=...)`` runs the steps: ``run.fit`` with its name and
    seed bound (checkpointed), or :func:`distillbook.core.training.fit` with a seed.
    """
    images = SynthesisedSet(start, n_classes, shared_per_slot)
    hooks = [BNStatistics(t) for t in teachers]

    def labels(gen: torch.Generator) -> torch.Tensor:
        return y

    def loss_fn(m: SynthesisedSet, yb: torch.Tensor, step: int) -> torch.Tensor:
        k = step % len(teachers)
        # L = CE(f_k(x), y) + lambda_BN * L_BN(f_k; x)
        loss = F.cross_entropy(teachers[k](m()), yb) + bn_weight * hooks[k].loss()
        for other in hooks:
            other.batch_stats = []
        return loss

    try:
        fit(images, loss_fn, labels, steps=steps, optimizer=torch.optim.Adam(images.parameters(), lr=lr))
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        return images()


def soft_labels(teachers: Sequence[nn.Module], x: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teachers' softened mean prediction: one label per image, stored (static) or recomputed for every
    augmented batch (dynamic)."""
    with torch.no_grad():
        # p = softmax(mean_k f_k(x) / T)
        return torch.softmax(torch.stack([t(x) for t in teachers]).mean(0) / temperature, dim=-1)
