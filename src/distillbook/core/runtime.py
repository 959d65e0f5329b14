"""Seeds, devices and threads: the run-time knobs every chapter sets the same way.

Threads. Torch defaults to one intra-op thread per core. On the book's 2-core
machines, two torch processes side by side (a notebook and a test run, say)
each using 2 threads oversubscribe the cores, and the tiny models of the cpu
profiles slow down by an order of magnitude while threads spin and wait for
each other. Small models gain little from a second thread anyway, so the
default is **1 thread** (``threads`` parameter); the README gives the
measurements. GPU runs are unaffected by this setting.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_THREADS = 1


def derived_seed(*parts: int) -> int:
    """A 32-bit seed for one purpose of one run seed, e.g. ``derived_seed(seed, arm, role)``: numpy's
    ``SeedSequence`` mixes the parts, so no two distinct tuples collide in practice."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def derived_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derived_seed` of ``parts``."""
    return torch.Generator().manual_seed(derived_seed(*parts))


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` are taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available; use 'auto' or 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} but MPS is not available; use 'auto' or 'cpu'")
    return resolved


def set_threads(threads: int = DEFAULT_THREADS) -> None:
    """Fix torch's intra-op threads (and BLAS's, for processes that start after)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def deterministic_algorithms(enabled: bool = True) -> None:
    """Require deterministic kernels, so that a seed gives the same numbers on the same machine.

    Strict: an op with no deterministic implementation raises (on CUDA), and
    the chapter must choose another op rather than silently lose determinism.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = False

