"""Metrics shared across chapters.

Used by: ``foundations``, ``dataset-distillation``.
"""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose arg-max equals the label, in [0, 1]."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set")
    return (logits.argmax(dim=-1) == labels).float().mean().item()

