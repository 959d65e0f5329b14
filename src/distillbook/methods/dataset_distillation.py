"""Matching training trajectories (MTT, Cazenavette et al. 2022) and the smoother experts of AST.

A dataset is distilled into a few synthetic examples so that a network trained on them follows the
path an expert took on the real data. From an expert checkpoint theta*_t, the student takes N
gradient steps on the synthetic set with a learnable learning rate, and the loss compares where it
lands with where the expert was M epochs later:

    L = ||theta_hat_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2.

The unrolled steps are written with ``torch.func`` (``functional_call`` and ``grad``), and the loss
is differentiated through them with respect to the synthetic inputs and the learning rate
(``tests/test_trajectory_matching.py`` checks that meta-gradient against finite differences).

AST (Shen et al., 2024) trains smoother experts. Its input-gradient penalty is an option of
:func:`expert_trajectory`, in the form lambda * ||grad_x CE(x)||_2^2 that always smooths:
the two-sided form lambda * (||grad_x CE||_2 - 1)^2 pulls norms *towards* 1, and on digits, whose
per-example input gradients are already below 1, it made the experts rougher (measured: larger
steps in parameter space).

Used by: ``dataset-distillation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

Params = dict[str, torch.Tensor]


def snapshot(model: torch.nn.Module) -> Params:
    """A detached copy of the model's parameters."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def expert_trajectory(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
                      batch_size: int, generator: torch.Generator, gradient_penalty: float = 0.0,
                      loss_scales: Sequence[float] = ()) -> list[Params]:
    """Train ``model`` by plain SGD on (x, y); return its parameters at the start and after every epoch.

    ``gradient_penalty`` > 0 adds lambda * ||grad_x CE(x)||_2^2 per example (averaged), which flattens the
    loss around the data and so slows and smooths the expert's trajectory. ``loss_scales[e]`` multiplies
    the cross-entropy in epoch e (AST's clipped loss: a ramp from 0.5 towards 1 over the first epochs;
    1 after the list ends), shortening the early, steepest part of the path.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trajectory = [snapshot(model)]
    for epoch in range(epochs):
        scale = loss_scales[epoch] if epoch < len(loss_scales) else 1.0
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb = x[idx].clone().requires_grad_(gradient_penalty > 0)
            ce = F.cross_entropy(model(xb), y[idx])
            loss = scale * ce
            if gradient_penalty > 0:
                (gx,) = torch.autograd.grad(ce * len(idx), xb, create_graph=True)
                loss = loss + gradient_penalty * gx.flatten(1).pow(2).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        trajectory.append(snapshot(model))
    return trajectory


def unroll(model: torch.nn.Module, start: Params, x_syn: torch.Tensor, y_syn: torch.Tensor, syn_lr: torch.Tensor,
           steps: int, batch_size: int | None = None, generator: torch.Generator | None = None) -> Params:
    """``steps`` SGD steps from ``start`` on the synthetic set: theta_{k+1} = theta_k - lr * grad CE(theta_k).

    Differentiable in ``x_syn`` and ``syn_lr`` (and ``y_syn`` when it holds soft labels).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")

    def loss(params: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (xb,)), yb)

    params = dict(start)
    for _ in range(steps):
        if batch_size is None or batch_size >= len(x_syn):
            xb, yb = x_syn, y_syn
        else:
            idx = torch.randperm(len(x_syn), generator=generator)[:batch_size]
            xb, yb = x_syn[idx], y_syn[idx]
        grads = grad(loss)(params, xb, yb)
        params = {k: params[k] - syn_lr * grads[k] for k in params}
    return params


def path_length(trajectory: list[Params]) -> float:
    """Total parameter movement, sum_t ||theta_{t+1} - theta_t||_2: shorter means a smoother expert."""
    return float(sum(torch.sqrt(sum((b[k] - a[k]).pow(2).sum() for k in a))
                     for a, b in zip(trajectory, trajectory[1:])))


def matching_loss(student_end: Params, expert_start: Params, expert_target: Params) -> torch.Tensor:
    """||theta_hat_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2, over all parameters."""
    num = sum((student_end[k] - expert_target[k]).pow(2).sum() for k in expert_target)
    den = sum((expert_start[k] - expert_target[k]).pow(2).sum() for k in expert_target)
    if den == 0:
        raise ValueError("the expert did not move between the start and target checkpoints")
    return num / den


def trajectory_matching_step(model: torch.nn.Module, trajectory: list[Params], start_epoch: int, expert_epochs: int,
                             x_syn: torch.Tensor, y_syn: torch.Tensor, syn_lr: torch.Tensor, steps: int,
                             **unroll_kwargs) -> torch.Tensor:
    """The MTT loss for one expert segment: start at ``trajectory[start_epoch]``, aim ``expert_epochs`` ahead."""
    target_epoch = start_epoch + expert_epochs
    if not 0 <= start_epoch < target_epoch < len(trajectory):
        raise ValueError(f"need 0 <= start_epoch < start_epoch + expert_epochs <= {len(trajectory) - 1}")
    start, target = trajectory[start_epoch], trajectory[target_epoch]
    end = unroll(model, start, x_syn, y_syn, syn_lr, steps, **unroll_kwargs)
    return matching_loss(end, start, target)
