"""Seeds side by side: ``map_seeds`` runs a chapter's per-seed function in worker processes.

Seeds are independent, and every random draw in a seed's work comes from that seed, so running them in
parallel changes the wall time, not the numbers (``tests/test_dmd_one_step.py`` checks this). Each worker is
a fresh ``spawn``-ed process with the run's thread count and deterministic kernels; it receives a copy
of the :class:`~distillbook.core.results.Run` (so ``run.fit`` checkpoints where the parent would) and sends
back what it recorded for its seed, which is merged into the parent's run.

``workers`` (a run setting) is ``auto`` by default: one per CPU core up to the number of seeds, and 1 on
CUDA (sharing one GPU between spawned workers is untested here, and the provenance's GPU memory covers
the parent process only). With tracking on, seeds always run in this process (one wandb run per chapter).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from distillbook.core import devices
from distillbook.core.runtime import deterministic_algorithms, set_threads


def resolve_workers(run) -> int:
    p = run.params
    if getattr(run, "device_check", False):  # the device check follows tensors within one process only
        return 1
    if p.tracking != "off":  # the wandb run lives in this process; workers would each need their own
        return 1
    if p.workers != "auto":
        return int(p.workers)
    if run.device.type != "cpu":
        return 1
    return max(1, min(len(run.seeds), os.cpu_count() or 1))


def map_seeds(run, fn: Callable[..., Any], *args: Any) -> list[Any]:
    """``[fn(run, seed, *args) for seed in run.seeds]``, in up to ``run.params.workers`` processes.

    ``fn`` must be importable (a module-level function of ``distillbook``) and ``args`` picklable.
    """
    from distillbook.core.training import progress

    workers = min(resolve_workers(run), len(run.seeds))
    if workers == 1:
        return [fn(run, seed, *args) for seed in progress(run.seeds, desc="seeds")]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(run.params.threads,)) as pool:
        futures = [pool.submit(_one_seed, run, fn, seed, *args) for seed in run.seeds]
        outputs = []
        for seed, future in zip(progress(run.seeds, desc=f"seeds ({workers} workers)"), futures):
            recorded, output = future.result()
            run.record(seed, **recorded)
            outputs.append(output)
    return outputs


def _start_worker(threads: int) -> None:
    set_threads(threads)
    deterministic_algorithms()


def _one_seed(run, fn, seed, *args):
    devices.set_run_device(run.device)  # as the parent's Run did: fits train there, the device check follows
    devices.set_run_precision(run.params.precision)
    if run.device_check:
        devices.start_check()
    output = fn(run, seed, *args)
    return run.per_seed[seed], output
