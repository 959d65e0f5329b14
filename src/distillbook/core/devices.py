"""Device discipline: every model and tensor of a run lives on the run's device.

A chapter that forgets ``.to(run.device)`` runs silently on one CPU thread when the run's device is a GPU,
or fails at its first CUDA step with a device mismatch. Neither shows on the CPU-only machines where the book
is developed, because there every tensor is on the CPU. :class:`DeviceCheck` makes it show: a
``TorchFunctionMode`` that plays the run's device on the CPU. It follows which tensors the code put on the
run's device and which it left on the host, and applies CUDA's rules to them:

- a tensor is on the host when a factory made it without a ``device`` (``torch.zeros(3)``, ``torch.tensor``,
  a module's parameters at construction), when ``.cpu()`` returned it, or when an op made it from host
  tensors only, or was asked for the device by the string ``"cpu"``; ``.to(device)``, ``.cuda()``, a factory
  given a ``torch.device`` (``run.device``), and any op with an input on the device put it on the device (so does anything the check did not see made: gradients, loaded checkpoints);
- an op that mixes a host tensor of one or more dimensions with a device tensor, or writes a device result into
  a host tensor in place, raises :class:`DeviceMismatch` (CUDA allows 0-dim host tensors and host index tensors,
  and so does the check);
- ``.numpy()`` of a device tensor raises, as it does on CUDA.

It also counts the values read from device tensors (``.item()``, ``float()``, ``bool()``, ``.cpu()``, ...): on a
GPU each read makes the host wait for the device, so a loop that reads one per step keeps the GPU idle.

``.to(device)`` of a host tensor returns a copy under the check, as on a GPU (on the CPU it returns the tensor
itself), so the host original stays on the host. The fit loop's guard (:func:`require_on_device`) asks the
check whether a model's parameters are on the run's device: moved or made there (a model the check did not see
made, e.g. loaded by ``from_pretrained``, must be moved too). Runs under the check keep their seeds in one process
(tensors sent to a worker would arrive unseen).

:class:`~distillbook.core.results.Run` turns the check on for smoke runs on the CPU (the CI runs every chapter
so), and ``DISTILLBOOK_DEVICE_CHECK=1`` / ``0`` turns it on or off for any run.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

ENV = "DISTILLBOOK_DEVICE_CHECK"


class DeviceMismatch(RuntimeError):
    """A host tensor met a tensor on the run's device in one op (CUDA would raise), or a device tensor was
    read as numpy."""


_active: DeviceCheck | None = None
_run_device: torch.device | None = None

# ops whose tensor arguments may legitimately sit on different devices
_CROSS_DEVICE = {
    torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.copy_, torch.Tensor.to, torch.Tensor.cpu,
    torch.Tensor.cuda, torch.Tensor.set_, torch.Tensor.new_tensor, torch._has_compatible_shallow_copy_type,
    torch.Tensor.index_put_, torch.Tensor.index_put, torch.index_put,
    torch.Tensor.data.__set__,  # Module.to swaps a parameter's data for its moved copy
    torch.Tensor.__deepcopy__,  # its memo holds tensors from anywhere; the copy stays where the original is
}

_DEVICE = torch._C.TensorBase.__dict__["device"]  # the getter's ``__self__``
_READS = {torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__,
          torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__}


def _storage(t: torch.Tensor) -> torch.UntypedStorage | None:
    """The tensor's storage (one Python object per storage, shared by views and parameters built on it)."""
    try:
        return t.untyped_storage() if t.device.type == "cpu" else None
    except (RuntimeError, NotImplementedError, TypeError):  # functorch wrappers, sparse or meta tensors
        return None


HOST, DEVICE, UNSEEN = "host", "device", None
HOST_DEVICE = torch.device("cpu")  # what ``.device`` of a host tensor returns under the check: it names the host


class DeviceCheck(TorchFunctionMode):
    """Track host and device tensors on a CPU-only machine and raise where CUDA would (module docstring)."""

    def __init__(self):
        super().__init__()
        self._where = {HOST: weakref.WeakSet(), DEVICE: weakref.WeakSet()}  # storages, forgotten when freed
        self.reads = 0  # values read from device tensors: each one makes the host wait for a GPU

    # -- what is where -------------------------------------------------------------------------------------
    def where(self, t: torch.Tensor) -> str | None:
        """``HOST``, ``DEVICE``, or ``UNSEEN`` for a tensor the check did not see made (``torch.from_numpy``,
        gradients, loaded checkpoints): it may go with either."""
        storage = _storage(t)
        if storage is None:
            return UNSEEN
        return HOST if storage in self._where[HOST] else DEVICE if storage in self._where[DEVICE] else UNSEEN

    def on_host(self, t: torch.Tensor) -> bool:
        return self.where(t) == HOST

    def _mark(self, t: torch.Tensor, where: str) -> None:
        storage = _storage(t)
        if storage is not None:
            self._where[where].add(storage)
            self._where[HOST if where == DEVICE else DEVICE].discard(storage)

    # -- the rules -----------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__self__", None) is _DEVICE:  # ``y.device`` of a host tensor names the host: x.to(y.device)
            out = func(*args, **kwargs)
            return HOST_DEVICE if self.on_host(args[0]) and out.type == "cpu" else out
        leaves = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        where = [self.where(t) for t in leaves]
        if func in _READS and leaves and where[0] == DEVICE:
            self.reads += 1
            if func in (torch.Tensor.numpy, torch.Tensor.__array__) and not kwargs.get("force"):
                raise DeviceMismatch(f"{_name(func)} of a tensor on the run's device: CUDA cannot; call .cpu() first")
        if func not in _CROSS_DEVICE and DEVICE in where:
            host = [t for t, w in zip(leaves, where) if w == HOST and t.dim() > 0]  # CUDA takes 0-dim host tensors
            into_host = _name(func).endswith("_") and args and isinstance(args[0], torch.Tensor) and where[0] == HOST
            if host or into_host:
                shape = tuple((host or leaves)[0].shape)
                raise DeviceMismatch(
                    f"{_name(func)} mixes a host tensor of shape {shape} with a tensor on the run's device (CUDA "
                    "raises here); move it with .to(run.device) or create it with device=run.device")
        moved_to = _target_device(func, args, kwargs)
        if moved_to == HOST and leaves and where[0] == DEVICE:
            self.reads += 1  # a copy to the host waits for the device too
        out = func(*args, **kwargs)
        if moved_to is not None and args and out is args[0] and self.where(out) != moved_to:
            out = out.clone()  # a move copies on a GPU; so does the check, leaving the original where it was
        outputs = [x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)]
        if not outputs or func is torch.Tensor.__setitem__:
            return out
        if moved_to is not None:
            out_where = moved_to
        elif func is torch.Tensor.__deepcopy__:
            out_where = where[0]
        elif leaves:
            out_where = DEVICE if DEVICE in where else HOST if HOST in where else UNSEEN
        else:
            out_where = HOST  # a factory without a device
        if out_where is UNSEEN:
            return out
        for t in outputs:
            if args and t is args[0] and moved_to is None:
                continue  # an in-place op keeps its tensor where it was
            self._mark(t, out_where)
        return out


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


def _target_device(func, args, kwargs) -> str | None:
    """Where an op puts its output by request (``.to``, ``.cuda``, ``.cpu``, ``device=``): "device", "host" or None."""
    if func is torch.Tensor.cuda:
        return DEVICE
    if func is torch.Tensor.cpu:
        return HOST
    if func is not torch.Tensor.to:
        return _requested(kwargs.get("device"))  # a factory (or as_tensor) given a device
    for a in list(args[1:]) + [kwargs.get("device"), kwargs.get("other")]:
        if isinstance(a, torch.Tensor):
            return HOST if _active is not None and _active.on_host(a) else DEVICE
        if _requested(a) is not None:
            return _requested(a)
    return None


def _requested(device) -> str | None:
    """The string ``"cpu"`` asks for the host (as library code does, e.g. an optimiser's step counter), and so
    does the ``.device`` of a host tensor; any other ``torch.device`` (``run.device``) or name asks for the run's
    device."""
    if isinstance(device, str):
        return HOST if device.split(":")[0] == "cpu" else DEVICE
    if isinstance(device, torch.device):
        return HOST if device is HOST_DEVICE else DEVICE
    if isinstance(device, int) and not isinstance(device, bool):
        return DEVICE
    return None


def enabled_for(profile: str, device: torch.device) -> bool:
    """Whether a run checks its device discipline: smoke runs on the CPU, unless ``DISTILLBOOK_DEVICE_CHECK``
    says otherwise (1 on, 0 off)."""
    env = os.environ.get(ENV)
    if env is not None and env.strip() not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 or 1, got {env!r}")
    if device.type != "cpu":
        return False  # a real accelerator checks itself
    return env.strip() == "1" if env is not None else profile == "smoke"


_module_to = torch.nn.Module.to


def _checked_module_to(module: torch.nn.Module, *args, **kwargs):
    """``Module.to`` under the check: it parses its arguments into a new ``torch.device``, losing whether they
    named the host (``"cpu"``, ``x.device`` of a host tensor); this keeps it."""
    out = _module_to(module, *args, **kwargs)
    if _active is not None and any(_requested(a) == HOST for a in (*args, kwargs.get("device"))):
        for t in (*module.parameters(), *module.buffers()):
            _active._mark(t, HOST)
    return out


def start_check() -> DeviceCheck:
    """Turn the check on for the rest of the process (a chapter's kernel) and return it."""
    global _active
    if _active is None:
        _active = DeviceCheck()
        _active.__enter__()
        torch.nn.Module.to = _checked_module_to
    return _active


def stop_check() -> None:
    global _active
    if _active is not None:
        _active.__exit__(None, None, None)
        _active = None
        torch.nn.Module.to = _module_to


def active_check() -> DeviceCheck | None:
    return _active


def set_run_device(device: torch.device | None) -> None:
    """The device of the run in progress; :func:`~distillbook.core.training.fit` trains there by default."""
    global _run_device
    _run_device = device


def run_device() -> torch.device | None:
    return _run_device


PRECISIONS = ("fp32", "tf32", "bf16")
_run_autocast: torch.dtype | None = None


def set_run_precision(precision: str) -> None:
    """The run's arithmetic. ``fp32``: full float32 everywhere (TF32 off for CUDA matmuls and convolutions);
    ``tf32``: CUDA matmuls and convolutions in TF32 (a 10-bit mantissa, about 8x the float32 rate on an H200);
    ``bf16``: the losses of :func:`~distillbook.core.training.fit` under ``torch.autocast`` to bfloat16 (weights,
    optimiser and reductions stay float32). The deterministic mode holds for all three."""
    global _run_autocast
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    _run_autocast = torch.bfloat16 if precision == "bf16" else None


def run_autocast() -> torch.dtype | None:
    """The dtype the run's losses are autocast to (None: no autocast)."""
    return _run_autocast


def is_on(t: torch.Tensor, device: torch.device) -> bool:
    """Whether ``t`` is on ``device`` (under the check: moved or made there, so a model loaded and never moved
    is not)."""
    if _active is not None and device.type == "cpu":
        return _active.where(t) == DEVICE
    if t.device.type != device.type:
        return False
    return device.index is None or t.device.index in (device.index, None)


def require_on_device(tensors: Iterable[tuple[str, torch.Tensor]], device: torch.device, where: str) -> None:
    """Raise, naming the first one, when a named tensor (a model's parameters) is not on ``device``."""
    for name, t in tensors:
        if not is_on(t, device):
            shown = "the host (never moved)" if _active is not None and device.type == "cpu" else str(t.device)
            raise DeviceMismatch(f"{where}: parameter {name!r} is on {shown}, not on the run's device {device}; "
                                 "move the model with .to(run.device) before training it")
