"""Batch-norm statistics matching, the data-free prior of SRe2L and INFER.

Synthetic inputs are pushed to produce, at every ``BatchNorm`` layer of a trained (frozen) network,
batch statistics that match the running statistics the network saw on real data:

    L_BN = sum_l ||mu_l(x) - mu_l^run||_2 + ||sigma^2_l(x) - sigma^2_l^run||_2.

Used by: ``dataset-distillation``.
"""

from __future__ import annotations

import torch
from torch import nn


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
        self.batch_stats.append((x.mean(dim=dims), x.var(dim=dims, unbiased=False)))

    def loss(self) -> torch.Tensor:
        """L_BN over the layers recorded since the last call (then cleared)."""
        if len(self.batch_stats) != len(self.layers):
            raise RuntimeError(f"expected one forward pass: {len(self.batch_stats)} records for {len(self.layers)} layers")
        total = sum(torch.norm(mean - layer.running_mean, 2) + torch.norm(var - layer.running_var, 2)
                    for (mean, var), layer in zip(self.batch_stats, self.layers))
        self.batch_stats = []
        return total

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
