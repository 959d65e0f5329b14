"""Where a distilled language model's training strings come from.

- ``offline``: a fixed set of strings, sampled once and repeated for epochs;
- ``online``: fresh teacher samples at every step;
- ``on_policy``: the student's own samples at every step.

Each regime is a ``next_batch(generator)`` for :func:`distillbook.core.training.fit`,
so that data order and samples replay exactly on resume.

Used by: ``lm-kd-dynamics``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distillbook.models.lm import sample

REGIMES = ("offline", "online", "on_policy")


def regime_batches(regime: str, *, batch_size: int, length: int, bos_id: int, n_symbols: int,
                   offline_set: torch.Tensor | None = None, teacher: torch.nn.Module | None = None,
                   student: torch.nn.Module | None = None) -> Callable[[torch.Generator], torch.Tensor]:
    """``next_batch(generator) -> (batch_size, length)`` token ids for ``regime``."""
    if regime == "offline":
        if offline_set is None:
            raise ValueError("regime 'offline' needs offline_set")
        return lambda gen: offline_set[torch.randint(0, len(offline_set), (batch_size,), generator=gen)]
    if regime == "online":
        if teacher is None:
            raise ValueError("regime 'online' needs the teacher")
        return lambda gen: sample(teacher, batch_size, length, bos_id, gen, n_symbols=n_symbols)
    if regime == "on_policy":
        if student is None:
            raise ValueError("regime 'on_policy' needs the student")
        return lambda gen: sample(student, batch_size, length, bos_id, gen, n_symbols=n_symbols)
    raise ValueError(f"regime={regime!r}; allowed: {', '.join(REGIMES)}")
