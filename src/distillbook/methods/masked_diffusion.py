"""Masked-diffusion language models: confidence-threshold parallel decoding and dParallel's certainty forcing.

A masked-diffusion LM (bidirectional) fills masked positions. Decoding starts with every answer position
masked and, at each step, unmasks every masked position whose confidence (the top probability) exceeds
``tau``, or the single most confident one when none does; so tau >= 1 decodes one token per step and
tau = 0 everything in one step.

dParallel (paper 36) distils the model into itself so that it is confident earlier: on the model's own
decoding trajectories that ended correct, with a random share of the answer masked,

    L = CE(masked positions -> the trajectory's tokens) + lambda * mean entropy(masked positions the model
        already predicts correctly),

lambda = 2 in the paper ("certainty forcing"). The entropy term sharpens what the model already gets right.

Used by: ``decoding-helpers``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) = -sum_v p log p over the last axis (nats)."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def mask_positions(answer: torch.Tensor, ratio: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask over ``answer`` (n, L): each position masked with its row's probability ``ratio`` (n,),
    and at least one position per row."""
    n, length = answer.shape
    masked = torch.rand(n, length, generator=generator) < ratio[:, None]
    forced = torch.randint(0, length, (n,), generator=generator)
    masked[torch.arange(n), forced] = True
    return masked


@torch.no_grad()
def threshold_decode(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mask_id: int,
                     tau: float, vocab: slice | None = None) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Decode every ``mask_id`` position of ``x`` (n, T); returns the tokens, the steps per row, and the
    sequence of states (for training on the model's own trajectories). ``vocab`` restricts the tokens
    that may be written (e.g. digits only)."""
    if not 0 <= tau:
        raise ValueError(f"tau must be >= 0, got {tau}")
    x = x.clone()
    steps = torch.zeros(len(x), dtype=torch.long)
    states = [x.clone()]
    while (x == mask_id).any():
        masked = x == mask_id
        logits = logits_fn(x).clone()
        logits[..., mask_id] = float("-inf")  # never write the mask token itself (it would never finish)
        if vocab is not None:
            blocked = torch.full_like(logits, float("-inf"))
            blocked[..., vocab] = 0
            logits = logits + blocked
        probs = torch.softmax(logits.double(), dim=-1)
        confidence, token = probs.max(dim=-1)
        confidence = confidence.masked_fill(~masked, -1.0)
        chosen = (confidence > tau) & masked
        best = confidence.argmax(dim=1)
        active = masked.any(dim=1)
        none = active & ~chosen.any(dim=1)
        chosen[none, best[none]] = True
        x = torch.where(chosen, token, x)
        steps += active.long()
        states.append(x.clone())
    return x, steps, states


def certainty_forcing_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor,
                           entropy_weight: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    """dParallel's loss on masked positions: CE to ``targets`` + ``entropy_weight`` x the mean entropy of the
    masked positions whose arg-max already equals the target. ``entropy_weight`` 0 is the CE-only control."""
    if masked.sum() == 0:
        raise ValueError("no masked position to train on")
    ce = F.cross_entropy(logits[masked], targets[masked])
    correct = masked & (logits.argmax(-1) == targets)
    h = entropy(logits[correct]).mean() if correct.any() else logits.sum() * 0.0
    return ce + entropy_weight * h, {"ce": ce.item(), "entropy": h.item()}
