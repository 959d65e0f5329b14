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

:func:`decode` runs threshold decoding on a Hugging Face masked LM; :func:`mask_random_share` builds the training
batches and :func:`masked_lm_loss` the loss (CE alone, or with the entropy term: :func:`certainty_forcing_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

METHODS = {
    "masked-diffusion confidence-threshold parallel decoding": ("threshold_decode", None),
    "threshold decoding of a masked language model's answer positions": ("decode", None),
    "masked CE (masked-diffusion LM training loss)": ("masked_ce", None),
    "random-share answer masking for masked-diffusion training": ("mask_random_share", 36),
    "dParallel certainty forcing (CE + entropy on correct masked positions)": ("certainty_forcing_loss", 36),
    "dParallel training loss on a masked LM (CE or certainty forcing)": ("masked_lm_loss", 36),
}


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) = -sum_v p log p over the last axis (nats)."""
    log_p = torch.log_softmax(logits, dim=-1)
    # H = -sum_v p_v log p_v
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
    steps = torch.zeros(len(x), dtype=torch.long, device=x.device)
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
                           entropy_weight: float = 2.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """dParallel's loss on masked positions: CE to ``targets`` + ``entropy_weight`` x the mean entropy of the
    masked positions whose arg-max already equals the target. ``entropy_weight`` 0 is the CE-only control."""
    if masked.sum() == 0:
        raise ValueError("no masked position to train on")
    ce = masked_ce(logits, targets, masked)
    correct = masked & (logits.argmax(-1) == targets)
    # mean entropy over the masked positions whose arg-max is already the target (0 when there are none)
    h = entropy(logits[correct]).mean() if correct.any() else logits.sum() * 0.0
    # L = CE + lambda * H
    return ce + entropy_weight * h, {"ce": ce.detach(), "entropy": h.detach()}


def masked_ce(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the masked positions only: the masked-diffusion LM's training loss."""
    # mean over masked (i, j) of -log softmax(logits[i, j])[targets[i, j]]
    return F.cross_entropy(logits[masked], targets[masked])


def mask_random_share(x: torch.Tensor, positions: slice, mask_id: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch from complete rows ``x`` (n, T): each row's ``positions`` are masked with its own share
    r ~ U(0, 1) (at least one position, :func:`mask_positions`). Returns the input with ``mask_id`` at the masked
    positions, the targets ``x[:, positions]`` and the mask over them."""
    targets = x[:, positions]
    masked = mask_positions(targets, torch.rand(len(x), generator=generator), generator)
    x_in = x.clone()
    x_in[:, positions] = torch.where(masked, torch.full_like(targets, mask_id), targets)
    return x_in, targets, masked


def masked_lm_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], positions: slice,
                   vocab: slice, entropy_weight: float | None = None):
    """The loss of a masked LM (``input_ids`` -> ``.logits``) on a :func:`mask_random_share` batch, over the tokens
    ``vocab`` at ``positions``: :func:`masked_ce` when ``entropy_weight`` is None, else
    :func:`certainty_forcing_loss` (``entropy_weight`` 0: its CE-only control)."""
    x_in, targets, masked = batch
    logits = model(input_ids=x_in).logits[:, positions, vocab]
    if entropy_weight is None:
        return masked_ce(logits, targets, masked)
    return certainty_forcing_loss(logits, targets, masked, entropy_weight)


def decode(model: torch.nn.Module, x: torch.Tensor, positions: slice, mask_id: int, tau: float,
           vocab: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``positions`` of every row of ``x`` and decode them by :func:`threshold_decode` with a masked LM
    (``input_ids`` -> ``.logits``); returns the rows and the steps each took."""
    x_in = x.clone()
    x_in[:, positions] = mask_id

    def logits_fn(t: torch.Tensor) -> torch.Tensor:
        return model(input_ids=t).logits

    out, steps, _ = threshold_decode(logits_fn, x_in, mask_id, tau, vocab=vocab)
    return out, steps
