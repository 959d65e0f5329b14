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
expert segments. As in MTT (and DSA, whose differentiable augmentation MTT uses), every unrolled step sees
the synthetic images through the same differentiable augmentation that later trains the evaluation nets
(:func:`random_shift`), drawn from the generator ``fit`` passes, so a resumed run replays it.

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
(SRe2L's dynamic labels). A static label judged on augmented images is the teachers' prediction averaged over
the augmentation (:func:`augmented_soft_labels`): one vector per image, the expectation of the dynamic label.

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

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A differentiable augmentation: (images, generator) -> augmented images."""

AST_LOSS_RAMP = (0.5, 0.5, 0.55, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
"""AST's clipped loss: the experts' cross-entropy multipliers for their first epochs (from AST's expert code)."""

METHODS = {
    "MTT expert trajectories (plain SGD, a checkpoint per epoch)": ("expert_trajectory", None),
    "AST smooth experts (input-gradient penalty, clipped-loss ramp)": ("expert_trajectory", 67),
    "differentiable random shift (evaluation and MTT unroll augmentation)": ("random_shift", None),
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
    "static soft labels averaged over the augmentation": ("augmented_soft_labels", 78),
}


# ---------------------------------------------------------------- experts (MTT, AST)


def snapshot(model: nn.Module) -> Weights:
    """A detached copy of the model's parameters."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def expert_trajectory(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
                      batch_size: int, seed: int, gradient_penalty: float = 0.0,
                      loss_scales: Sequence[float] = (), augment: Augment | None = None) -> list[Weights]:
    """Train ``model`` by plain SGD on (x, y) for ``epochs`` passes in a random order (``fit`` with ``seed``);
    return its parameters at the start and after every epoch.

    ``gradient_penalty`` > 0 adds lambda * ||grad_x CE(x)||_2^2 per example (averaged), which flattens the
    loss around the data and so slows and smooths the expert's trajectory. ``loss_scales[e]`` multiplies
    the cross-entropy in epoch e (AST's clipped loss: a ramp from 0.5 towards 1 over the first epochs;
    1 after the list ends), shortening the early, steepest part of the path. ``augment(x, generator)`` transforms
    every batch (MTT trains its experts with the augmentation its unroll and evaluation use).
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
        return (x[idx] if augment is None else augment(x[idx], gen)), y[idx]

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


def shift_by(x: torch.Tensor, dy: int, dx: int, image_shape: Sequence[int]) -> torch.Tensor:
    """Roll every flattened (C, H, W) image of ``x`` by (dy, dx) pixels (wrapping around)."""
    return torch.roll(x.reshape(-1, *image_shape), shifts=(dy, dx), dims=(2, 3)).reshape(len(x), -1)


def shift_offsets(max_shift: int) -> list[tuple[int, int]]:
    """Every (dy, dx) in [-max_shift, max_shift]^2, in the order :func:`random_shift` indexes them."""
    offsets = range(-max_shift, max_shift + 1)
    return [(dy, dx) for dy in offsets for dx in offsets]


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int,
                 image_shape: Sequence[int]) -> torch.Tensor:
    """Roll each flattened (C, H, W) image by its own random (dy, dx) in [-max_shift, max_shift]^2, drawn from
    ``generator``; differentiable in ``x`` (a gather of its pixels), so the same function augments the
    evaluation nets' batches and MTT's unrolled steps."""
    if max_shift == 0:
        return x
    offsets = shift_offsets(max_shift)
    choice = torch.randint(0, len(offsets), (len(x),), generator=generator).to(x.device)
    # where pixel i of an image rolled by offset k comes from: roll(index image, (dy_k, dx_k))
    pixel = torch.arange(x.shape[1], device=x.device)[None]
    source = torch.cat([shift_by(pixel, dy, dx, image_shape) for dy, dx in offsets])  # (offsets, pixels)
    # x_i <- roll(x_i, (dy, dx)_{choice_i})
    return x.gather(1, source[choice])


def unroll(model: nn.Module, start: Weights, x_syn: torch.Tensor, y_syn: torch.Tensor, syn_lr: torch.Tensor,
           steps: int, batch_size: int | None = None, generator: torch.Generator | None = None,
           augment: Augment | None = None) -> Weights:
    """``steps`` SGD steps from ``start`` on the synthetic set; differentiable in ``x_syn`` and ``syn_lr``
    (and ``y_syn`` when it holds soft labels). ``augment(x, generator)`` (differentiable) transforms every
    step's batch afresh, as the nets that are later trained on the set see it."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if augment is not None and generator is None:
        raise ValueError("an augmented unroll needs the generator its draws come from")

    def loss(params: Weights, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (xb,)), yb)

    params = dict(start)
    for _ in range(steps):
        if batch_size is None or batch_size >= len(x_syn):
            xb, yb = x_syn, y_syn
        else:
            idx = torch.randperm(len(x_syn), generator=generator)[:batch_size]
            xb, yb = x_syn[idx], y_syn[idx]
        if augment is not None:
            xb = augment(xb, generator)  # A(x_syn): a fresh draw per step
        grads = grad(loss)(params, xb, yb)
        # theta_{k+1} = theta_k - alpha * grad_theta CE(f(A(x_syn); theta_k), y_syn)
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
        self.log_lr = nn.Parameter(torch.tensor(float(np.log(lr)), device=images.device))


def match_trajectories(template: nn.Module, trajectories: list[list[Weights]], images: torch.Tensor,
                       labels: torch.Tensor, *, fit: Callable, iterations: int, expert_span: int,
                       max_start_epoch: int, syn_steps: int, syn_lr_init: float, image_lr: float,
                       lr_lr: float = 0.01, augment: Augment | None = None,
                       cosine_decay: bool = False,
                       probe: Callable[[SyntheticSet, int], dict] | None = None) -> tuple[SyntheticSet, FitResult]:
    """MTT: optimise ``images`` (labels fixed) and the student's learning rate by Adam so that ``syn_steps``
    unrolled steps from a random expert checkpoint land ``expert_span`` epochs further along that expert.

    Every iteration draws an expert, a start epoch t <= ``max_start_epoch`` and, with ``augment``, the seed of
    the unroll's augmentation draws, all from ``fit``'s data generator (so a resumed run replays them). ``template`` is the
    architecture the experts were trained with (its own weights are never used). ``fit(model, loss_fn,
    next_batch, steps=..., optimizer=...)`` runs the iterations: ``run.fit`` with its name and seed bound,
    or :func:`distillbook.core.training.fit` with a seed. ``cosine_decay`` anneals both Adam rates (images and
    log-rate) to zero over the iterations by a cosine, so that the images and the rate settle by the last iteration
    instead of drifting on with the noise of single-segment gradients. ``probe(synthetic, iterations_done)``, if
    given, runs at every log of ``fit`` (gradients enabled) and its numbers join the log's row (a resumed run keeps
    the rows logged before it stopped). Returns the synthetic set and ``fit``'s result.
    """
    synthetic = SyntheticSet(images, syn_lr_init)

    def segment(gen: torch.Generator) -> tuple[int, int, int]:
        # (expert e, start epoch t, augmentation seed) ~ U{experts} x U{0..max_start_epoch} x U{0..2^62}, drawn on
        # the host and kept there (plain ints: fit moves tensors only), so the loss reads them without a device wait
        return (int(torch.randint(0, len(trajectories), (), generator=gen)),
                int(torch.randint(0, max_start_epoch + 1, (), generator=gen)),
                int(torch.randint(0, 2 ** 62, (), generator=gen)))

    done = [0]  # iterations finished when fit next evaluates (set by the loss: fit may resume mid-run)

    def loss(m: SyntheticSet, b: tuple[int, int, int], step: int) -> torch.Tensor:
        done[0] = step + 1
        expert, start, augment_seed = b
        draws = torch.Generator().manual_seed(augment_seed) if augment is not None else None
        # L_MTT(x_syn, alpha = exp(log_lr)) on the segment theta*_t -> theta*_{t+M}
        return trajectory_matching_step(template, trajectories[expert], start, expert_span, m.images, labels,
                                        m.log_lr.exp(), syn_steps, generator=draws, augment=augment)

    optimizer = torch.optim.Adam([{"params": [synthetic.images], "lr": image_lr},
                                  {"params": [synthetic.log_lr], "lr": lr_lr}])
    # eta_i = eta_0 * (1 + cos(pi * i / iterations)) / 2
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations) if cosine_decay else None
    def evaluate(m: SyntheticSet) -> dict:
        with torch.enable_grad():  # fit evaluates without gradients; a probe may train nets on the set
            return probe(m, done[0])

    result = fit(synthetic, loss, segment, steps=iterations, optimizer=optimizer, scheduler=scheduler,
                 **({"evaluate": evaluate} if probe is not None else {}))
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
        self.register_buffer("slot", torch.arange(len(start), device=start.device) % n_slots)
        self.delta = nn.Parameter(torch.zeros(n_slots if shared_per_slot else len(start), start.shape[1],
                                              device=start.device))

    def forward(self) -> torch.Tensor:
        # INFER: x_{c,j} = a_{c,j} + u_j;  SRe2L: x_i = x0_i + delta_i
        return self.start + (self.delta[self.slot] if self.shared_per_slot else self.delta)


def synthesise(teachers: Sequence[nn.Module], start: torch.Tensor, y: torch.Tensor, n_classes: int, *,
               shared_per_slot: bool, steps: int, lr: float, bn_weight: float, fit: Callable,
               augment: Augment | None = None, cosine_decay: bool = False) -> torch.Tensor:
    """SRe2L's recover step: minimise CE(f_k(A(x)), y) + bn_weight * L_BN(f_k; A(x)) over a :class:`SynthesisedSet`
    by Adam, one (frozen, eval-mode) teacher f_k per step, k = step mod K.

    ``augment(x, generator)`` (differentiable) shows the teacher a fresh random view of the images at every step,
    as SRe2L's recover step crops its images afresh at every iteration: the images are then recognised under every
    view the student will be trained on, not in one alignment only (without it, from noise, they are the teacher's
    adversarial examples: classified in place and lost when shifted). Its draws come from ``fit``'s generator.
    ``cosine_decay`` anneals Adam's rate to zero over the steps (SRe2L's recover step uses a cosine schedule).
    ``fit(model, loss_fn, next_batch, steps=..., optimizer=...)`` runs the steps: ``run.fit`` with its name and
    seed bound (checkpointed), or :func:`distillbook.core.training.fit` with a seed.
    """
    images = SynthesisedSet(start, n_classes, shared_per_slot)
    hooks = [BNStatistics(t) for t in teachers]

    def draw(gen: torch.Generator) -> int:
        # the seed of this step's augmentation draws (drawn even without ``augment``: one stream either way), a
        # plain int that stays on the host
        return int(torch.randint(0, 2 ** 62, (), generator=gen))

    def loss_fn(m: SynthesisedSet, augment_seed: int, step: int) -> torch.Tensor:
        k = step % len(teachers)
        x = m()
        if augment is not None:
            x = augment(x, torch.Generator().manual_seed(augment_seed))  # A(x): a fresh view per step
        # L = CE(f_k(A(x)), y) + lambda_BN * L_BN(f_k; A(x))
        loss = F.cross_entropy(teachers[k](x), y) + bn_weight * hooks[k].loss()
        for other in hooks:
            other.batch_stats = []
        return loss

    try:
        optimizer = torch.optim.Adam(images.parameters(), lr=lr)
        # eta_i = eta_0 * (1 + cos(pi * i / steps)) / 2
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if cosine_decay else None
        fit(images, loss_fn, draw, steps=steps, optimizer=optimizer, scheduler=scheduler)
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


def augmented_soft_labels(teachers: Sequence[nn.Module], x: torch.Tensor, temperature: float, max_shift: int,
                          image_shape: Sequence[int]) -> torch.Tensor:
    """Static soft labels consistent with a random-shift augmentation: per image, the mean over every shift
    (dy, dx) in [-max_shift, max_shift]^2 of the teachers' softened prediction on the shifted image, i.e. the
    expected dynamic label under the augmentation. One vector per image, the storage of :func:`soft_labels`.

    INFER (paper 78) stores one soft label per synthetic image, made once by its teacher ensemble, while the
    student still trains on augmented images; a label computed on the unshifted image alone is the label of
    one of the (2 s + 1)^2 shifted views the student sees, this one is the average over all of them.
    """
    offsets = shift_offsets(max_shift)
    # y_i = (1 / |S|) sum_{(dy, dx) in S} softmax(mean_k f_k(roll(x_i, (dy, dx))) / T)
    return torch.stack([soft_labels(teachers, shift_by(x, dy, dx, image_shape), temperature)
                        for dy, dx in offsets]).mean(0)
