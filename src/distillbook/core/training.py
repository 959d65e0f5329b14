"""The book's one training loop.

``fit`` runs ``steps`` optimiser steps of ``loss_fn(model, batch)`` on batches
drawn by ``next_batch(generator)``. The loop owns the step count: a ``loss_fn``
or ``after_step`` that declares a ``step`` parameter receives the index of the
step being taken (0, 1, ..., steps - 1), so schedules and alternations read it
from ``fit`` rather than from counters kept inside the model, and resume with it. Everything random in a run flows from
``seed``: the data generator is a dedicated ``torch.Generator``, and the global
torch/numpy/python generators (dropout, augmentation) are saved too. That
makes checkpoints exact: a run killed at any point and started again with the
same arguments resumes from its last checkpoint and ends with bit-identical
parameters and history (``tests/test_training.py`` kills one to check).

Progress is a plain-text tqdm bar (no widgets), so it reads well in executed
notebooks; the pipeline keeps only its final state there.

:class:`Stack` trains several independent models of one architecture as one
module (``torch.func.stack_module_state`` + ``vmap``): one ``fit``, one
optimiser step for all of them, the same numbers as training each alone.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils._python_dispatch
from tqdm.std import tqdm

from distillbook.core import devices
from distillbook.core.claims import WINDOW, relative_change, tail_mean
from distillbook.core.runtime import seed_everything

Batch = Any
LossFn = Callable[..., "torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]"]  # (model, batch[, step])


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    steps: int = 0

    def column(self, name: str) -> list[float]:
        return [row[name] for row in self.history if name in row]

    def final(self, name: str, window: int = WINDOW) -> float:
        """The converged reading of an evaluated metric: the mean of its last ``window`` evaluations."""
        return tail_mean(self.column(name), window)

    def drift(self, name: str, window: int = WINDOW) -> float:
        """How much the metric still moves: relative change of the last window's mean against the one before."""
        return relative_change(self.column(name), window)


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    next_batch: Callable[[torch.Generator], Batch],
    *,
    steps: int,
    optimizer: torch.optim.Optimizer,
    seed: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    evaluate: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
    eval_every: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_seconds: float = 60.0,
    checkpoint_every: int | None = None,
    device: torch.device | str | None = None,
    autocast: torch.dtype | None = None,
    tracker: Any | None = None,
    desc: str = "train",
    progress: bool = True,
    after_step: Callable[..., None] | None = None,
) -> FitResult:
    """Train ``model`` for ``steps`` steps on ``device``; return the evaluation history.

    ``device`` defaults to the run's (:func:`distillbook.core.devices.run_device`), else the model's; the
    model's parameters must already be there (the first step raises otherwise) and batches are moved there.
    ``autocast`` (default: the run's ``precision``, bf16 or none) runs ``loss_fn`` under ``torch.autocast``.
    ``evaluate(model)`` runs every ``eval_every`` steps and after the last
    step (in eval mode, without gradients). Each logged row holds the mean loss since the previous row and
    the mean of each extra ``loss_fn`` returned (over the steps that returned it; tensors or numbers).
    ``checkpoint`` names a file: the
    run resumes from it if present, saves to it every ``checkpoint_seconds`` of training (or every
    ``checkpoint_every`` steps, if given) and at the end, so calling ``fit`` again on a finished run returns
    its result without training. ``after_step(model)`` runs after every optimiser step (an EMA update,
    say); whatever it changes must live in ``model``'s state to be checkpointed. ``loss_fn`` and
    ``after_step`` that take a ``step`` argument get the index of the current step.

    The loop never waits for the device between logging points: each step's loss and extras are kept as
    tensors and read when a row is logged; a non-finite loss is found (with its step) then, when a checkpoint
    is saved, once every ``checkpoint_seconds``, or when a later step fails.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be >= 1 or None, got {eval_every}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 or None, got {checkpoint_every}")
    if checkpoint_seconds <= 0:
        raise ValueError(f"checkpoint_seconds must be > 0, got {checkpoint_seconds}")
    device = torch.device(device) if device is not None else devices.run_device() or _model_device(model)
    devices.require_on_device(model.named_parameters(), device, desc)
    autocast = devices.run_autocast() if autocast is None else autocast
    dry = DryRun.open(desc, steps)  # a dry run: a few steps of every fit, timed and counted, nothing checkpointed
    if dry is not None:  # every step logged, so that curves read downstream have as many points as steps
        steps, checkpoint, eval_every = dry.steps, None, 1 if eval_every is not None else None
    loss_at, after_step_at = _with_step(loss_fn), _with_step(after_step) if after_step is not None else None
    data_rng = torch.Generator().manual_seed(seed)
    result = FitResult()
    start = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state["steps"] != steps:
            raise ValueError(f"checkpoint {ckpt_path} was made for steps={state['steps']}, not {steps}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        data_rng.set_state(state["data_rng"])
        _set_global_rng(state["global_rng"])
        result = FitResult(history=state["history"], steps=state["step"])
        start = state["step"]
        window = _Window.restore(state["window"])
    else:
        seed_everything(seed)
        window = _Window(0)  # losses and extras since the last logged row

    bar = tqdm(total=steps, initial=start, desc=desc, file=sys.stdout, ascii=True,
               mininterval=5.0, ncols=80, disable=not progress or start == steps)
    saved_at = checked_at = time.monotonic()
    for step in range(start, steps):
        try:
            _step(model, optimizer, scheduler, loss_at, after_step_at, next_batch, data_rng, device, autocast, dry,
                  window, step)
        except Exception as err:  # a non-finite loss may be the cause: say so first
            window.raise_if_not_finite(desc)
            raise err
        bar.update(1)
        done = step + 1
        log = (eval_every and done % eval_every == 0) or done == steps
        now = time.monotonic()
        save = ckpt_path is not None and (done == steps or (
            done % checkpoint_every == 0 if checkpoint_every is not None else now - saved_at >= checkpoint_seconds))
        if log or save or now - checked_at >= checkpoint_seconds:
            window.raise_if_not_finite(desc)  # the only waits for the device: at logging, saving, once a minute
            checked_at = now
        if log:
            row = {"step": done, **window.means()}
            window = _Window(done)
            if evaluate is not None:
                row.update(_evaluate(model, evaluate))
            result.history.append(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step"}, refresh=False)
            if tracker is not None:  # the step is a metric: several fits share one tracked run
                tracker.log({f"{desc}/{k}": v for k, v in row.items()})
        result.steps = done
        if save:
            _save(ckpt_path, model, optimizer, scheduler, data_rng, result, done, steps, window.state())
            saved_at = time.monotonic()
    bar.close()
    if dry is not None:
        dry.close()
    if steps == 0 and evaluate is not None:
        result.history.append({"step": 0, **_evaluate(model, evaluate)})
    model.eval()
    return result


DRY_RUN_ENV = "DISTILLBOOK_DRY_RUN"  # "<steps per fit>:<log file>", set by ``distillbook run --dry-run``


class DryRun:
    """One fit of a dry run: its first ``steps`` steps only, each timed (waiting for the device), the second
    counted by :class:`~torch.utils.flop_counter.FlopCounterMode` (FLOPs) and an op counter (kernels launched).
    ``close`` appends a line to the log: the stage, the steps planned, seconds, FLOPs and kernels per step."""

    def __init__(self, desc: str, planned: int, steps: int, log: Path):
        self.desc, self.planned, self.steps, self.log = desc, planned, min(planned, steps), log
        self.times: list[float] = []
        self.flops = self.kernels = None
        self._counters: tuple | None = None

    @classmethod
    def open(cls, desc: str, planned: int) -> DryRun | None:
        value = os.environ.get(DRY_RUN_ENV)
        if not value:
            return None
        steps, _, log = value.partition(":")
        if not steps.isdigit() or int(steps) < 2 or not log:
            raise ValueError(f"{DRY_RUN_ENV} must be '<steps >= 2>:<log file>', got {value!r}")
        return cls(desc, planned, int(steps), Path(log))

    def step_starts(self, step: int, device: torch.device) -> None:
        _synchronize(device)
        if step == 1:  # the second step: past one-off costs (lazy optimiser state, caches)
            from torch.utils.flop_counter import FlopCounterMode

            self._counters = (FlopCounterMode(display=False), _KernelCounter())
            for mode in self._counters:
                mode.__enter__()
        self._started = time.perf_counter()

    def step_ends(self, device: torch.device) -> None:
        _synchronize(device)
        self.times.append(time.perf_counter() - self._started)
        if self._counters is not None:
            flops, kernels = self._counters
            kernels.__exit__(None, None, None)
            flops.__exit__(None, None, None)
            self.flops, self.kernels, self._counters = flops.get_total_flops(), kernels.count, None

    def close(self) -> None:
        timed = self.times[1:] or self.times  # the first step pays one-off costs
        stage = self.desc.split("/", 1)[-1] if self.desc.startswith("seed") else self.desc
        row = {"fit": self.desc, "stage": stage, "planned_steps": self.planned, "steps_run": len(self.times),
               "seconds_per_step": float(np.median(timed)) if timed else 0.0, "flops_per_step": self.flops,
               "kernels_per_step": self.kernels}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class _KernelCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten ops run (on a GPU, about one kernel launch each)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Window:
    """Losses and extras since the last logged row. Adding keeps the tensors where they are (no wait for the
    device); :meth:`means` copies them to the host once per row and sums them in order in float64, as Python
    floats would (the same numbers as reading each step's loss with ``.item()``)."""

    def __init__(self, first_step: int):
        self.first_step = first_step
        self.losses: list = []  # one detached 0-dim tensor (or float, restored) per step
        self.extras: dict[str, list] = {}  # name: its values, on the steps that reported it
        self.checked = 0  # losses already found finite

    def add(self, loss: torch.Tensor, extras: Mapping[str, Any]) -> None:
        self.losses.append(loss.detach())
        for k, v in extras.items():  # an extra reported on some steps only (a TTUR player) averages over those
            self.extras.setdefault(k, []).append(v.detach() if isinstance(v, torch.Tensor) else float(v))

    def raise_if_not_finite(self, desc: str) -> None:
        values = _to_floats(self.losses[self.checked:])
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            raise FloatingPointError(f"{desc}: loss is {values[bad]} at step {self.first_step + self.checked + bad}")
        self.checked = len(self.losses)

    def means(self) -> dict[str, float]:
        return {"loss": _ordered_mean(self.losses), **{k: _ordered_mean(v) for k, v in self.extras.items()}}

    def state(self) -> dict:
        return {"first_step": self.first_step, "losses": _to_floats(self.losses),
                "extras": {k: _to_floats(v) for k, v in self.extras.items()}}

    @classmethod
    def restore(cls, state: dict) -> _Window:
        window = cls(state["first_step"])
        window.losses, window.extras = list(state["losses"]), {k: list(v) for k, v in state["extras"].items()}
        return window


def _to_floats(values: list) -> list[float]:
    """Tensors and numbers as Python floats, the tensors copied to the host in one transfer per device."""
    out = [v for v in values]
    tensors = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor)]
    if tensors:
        stacked = torch.stack([values[i].reshape(()).to(values[tensors[0]].device, torch.float64) for i in tensors])
        for i, v in zip(tensors, stacked.cpu().tolist()):
            out[i] = v
    return [float(v) for v in out]


def _ordered_mean(values: list) -> float:
    total = 0.0
    for v in _to_floats(values):
        total += v
    return total / len(values)


def _model_device(model: torch.nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _step(model, optimizer, scheduler, loss_at, after_step_at, next_batch, data_rng, device, autocast, dry, window,
          step: int) -> None:
    """One optimiser step of :func:`fit`; the loss and extras go to ``window``, unread."""
    model.train()
    if dry is not None:
        dry.step_starts(step, device)
    batch = _to_device(next_batch(data_rng), device)
    with torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext():
        out = loss_at(model, batch, step=step)
    loss, extras = (out if isinstance(out, tuple) else (out, {}))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if after_step_at is not None:
        with torch.no_grad():
            after_step_at(model, step=step)
    window.add(loss, extras)
    if dry is not None:
        dry.step_ends(device)


def _with_step(fn: Callable) -> Callable:
    """``fn`` to be called as ``call(*args, step=k)``: ``step`` is passed on only if ``fn`` declares it."""
    try:
        takes_step = "step" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        takes_step = False

    def call(*args, step: int):
        return fn(*args, step=step) if takes_step else fn(*args)

    return call


class Stack(torch.nn.Module):
    """Independent models of one architecture trained as one: parameter ``name`` of model k is
    ``getattr(stack, mangled name)[k]``, and ``stack(x)`` is ``vmap`` over the models of
    ``functional_call(model_k, x_k)`` (``x`` carries the model axis first; ``shared_input=True`` gives
    every model the same ``x``).

    A loss that sums the models' losses gives each model exactly its own gradient, and elementwise
    optimisers (SGD, Adam, AdamW) then step each model as if alone, so :func:`fit` trains the stack as
    it trains one model. Gradient clipping by global norm would couple them: clip per model instead.
    Buffers are stacked too but not updated by ``vmap`` (use models without running statistics).
    """

    def __init__(self, models: list[torch.nn.Module], shared_input: bool = False):
        super().__init__()
        if not models:
            raise ValueError("Stack needs at least one model")
        shapes = [[(n, p.shape) for n, p in m.named_parameters()] for m in models]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("Stack needs models of one architecture (same parameter names and shapes)")
        params, buffers = torch.func.stack_module_state(models)
        self.names = list(params)
        for name, value in params.items():
            self.register_parameter(name.replace(".", "__"), torch.nn.Parameter(value, requires_grad=value.requires_grad))
        for name, value in buffers.items():
            self.register_buffer(name.replace(".", "__"), value)
        self.buffer_names = list(buffers)
        self.template = [copy.deepcopy(models[0]).to("meta")]  # a list: not registered as a submodule
        self.shared_input = shared_input

    def __len__(self) -> int:
        return getattr(self, self.names[0].replace(".", "__")).shape[0]

    def _state(self) -> tuple[dict, dict]:
        params = {n: getattr(self, n.replace(".", "__")) for n in self.names}
        buffers = {n: getattr(self, n.replace(".", "__")) for n in self.buffer_names}
        return params, buffers

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        template = self.template[0]

        def one(params, buffers, x_k, *a):
            return torch.func.functional_call(template, (params, buffers), (x_k, *a))

        in_x = None if self.shared_input else 0
        return torch.vmap(one, in_dims=(0, 0, in_x, *[None] * len(args)), randomness="different")(
            *self._state(), x, *args)

    def unstack(self, models: list[torch.nn.Module]) -> list[torch.nn.Module]:
        """Copy the trained parameters back into ``models`` (the list the stack was built from)."""
        params, buffers = self._state()
        with torch.no_grad():
            for k, model in enumerate(models):
                for name, value in model.named_parameters():
                    value.copy_(params[name][k])
                for name, value in model.named_buffers():
                    if name in buffers:
                        value.copy_(buffers[name][k])
        return models


def _evaluate(model, evaluate) -> dict[str, float]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in evaluate(model).items()}
    model.train(was_training)
    return metrics


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _global_rng() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(path: Path, model, optimizer, scheduler, data_rng, result, step, steps, window: dict) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "data_rng": data_rng.get_state(),
        "global_rng": _global_rng(),
        "history": result.history,
        "window": window,
        "step": step,
        "steps": steps,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def progress(iterable, desc: str, total: int | None = None):
    """The same plain-text bar as ``fit``'s, for loops over seeds or configurations."""
    return tqdm(iterable, desc=desc, total=total, file=sys.stdout, ascii=True, mininterval=5.0, ncols=80)
