"""Speculative sampling: a draft model proposes, the target verifies, and the output follows the target exactly.

One round, with the prefix x, draft q and target p (Leviathan et al., 2023; Chen et al., 2023):

1. the draft samples gamma tokens d_1..d_gamma autoregressively, d_j ~ q(. | x, d_<j);
2. one target call gives p(. | x, d_<j) for j = 1..gamma+1;
3. d_j is accepted with probability min(1, p(d_j) / q(d_j)), in order, until the first rejection;
4. at a rejection the token is resampled from the residual norm(max(0, p - q)); if all gamma are
   accepted, one more token is drawn from p(. | x, d_1..d_gamma).

Each emitted token is distributed exactly as under p. With a per-position acceptance rate
alpha = sum_v min(p(v), q(v)) = 1 - TV(p, q) that is the same at every position, the expected number of
tokens per target call (block efficiency) is (1 - alpha^(gamma+1)) / (1 - alpha).

DistillSpec (paper 79) raises alpha by distilling the draft towards the target: a divergence D between
their next-token distributions, on strings from data (offline) or from the draft itself (on-policy),
:func:`draft_distillation_loss`; :func:`measured_block_efficiency` counts the tokens per target call it buys.

Models enter as ``next_probs(x) -> (len(x) + 1, V)``: row i is the next-token distribution after x[:i]
(:func:`lm_next_probs` makes one from a causal language model). The tests check the output law against
exact string probabilities, the verification law against transformers' own ``_speculative_sampling``, and
the block-efficiency formula against measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distillbook.methods.kd import DIVERGENCES

NextProbs = Callable[[torch.Tensor], torch.Tensor]
METHODS = {
    "speculative sampling (draft proposes, target verifies)": ("speculative_sample", None),
    "speculative verification: accept min(1, p/q), resample norm(max(0, p - q))": ("verify", None),
    "acceptance rate alpha = sum_v min(p, q)": ("acceptance_rate", None),
    "block efficiency (1 - alpha^(gamma+1)) / (1 - alpha)": ("block_efficiency", None),
    "DistillSpec draft distillation loss (forward KL, TVD, JSD; offline or on-policy)": ("draft_distillation_loss",
                                                                                        79),
    "measured block efficiency (tokens per target call)": ("measured_block_efficiency", 79),
}


def acceptance_rate(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """alpha = sum_v min(p(v), q(v)) over the last axis (= 1 - total variation distance)."""
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    # alpha = sum_v min(p(v), q(v))
    return torch.minimum(p, q).sum(-1)


def block_efficiency(alpha, gamma: int) -> torch.Tensor:
    """Expected tokens per target call, (1 - alpha^(gamma+1)) / (1 - alpha); gamma + 1 at alpha = 1."""
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    a = torch.as_tensor(alpha, dtype=torch.float64)
    if ((a < 0) | (a > 1)).any():
        raise ValueError("alpha must lie in [0, 1]")
    # (1 - alpha^(gamma+1)) / (1 - alpha) = 1 + alpha + ... + alpha^gamma
    geometric = (1 - a ** (gamma + 1)) / (1 - a).clamp_min(1e-300)
    return torch.where(a >= 1, torch.full_like(a, gamma + 1.0), geometric)


def _residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)); p itself where p <= q everywhere (then a rejection has probability 0)."""
    # max(0, p - q) / sum_v max(0, p(v) - q(v))
    r = (p - q).clamp_min(0)
    total = r.sum()
    return r / total if total > 0 else p


def verify(p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Steps 3-4 of a round: ``p`` (gamma+1, V) target rows, ``q`` (gamma, V) draft rows, ``draft`` (gamma,)
    tokens. Returns the emitted tokens (accepted drafts plus one) and the number of accepted drafts."""
    gamma = len(draft)
    if p.shape[0] != gamma + 1 or q.shape[0] != gamma:
        raise ValueError(f"{gamma} draft tokens need {gamma + 1} target rows and {gamma} draft rows, "
                         f"got {p.shape[0]} and {q.shape[0]}")
    for j in range(gamma):
        token = int(draft[j])
        ratio = p[j, token] / q[j, token]
        if torch.rand((), generator=generator, dtype=p.dtype) < ratio:  # accept with min(1, p/q)
            continue
        extra = torch.multinomial(_residual(p[j], q[j]), 1, generator=generator)
        return torch.cat([draft[:j], extra]), j
    extra = torch.multinomial(p[gamma], 1, generator=generator)
    return torch.cat([draft, extra]), gamma


def verification_law(p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor) -> torch.Tensor:
    """The exact law of ``verify`` for fixed drafts: entry (n, v) is P(n drafts accepted, then token v)."""
    gamma = len(draft)
    law = torch.zeros(gamma + 1, p.shape[1], dtype=torch.float64)
    reach = torch.ones((), dtype=torch.float64)  # probability that the first j drafts were accepted
    for j in range(gamma):
        keep = torch.clamp(p[j, draft[j]] / q[j, draft[j]], max=1).double()
        law[j] = reach * (1 - keep) * _residual(p[j], q[j]).double()
        reach = reach * keep
    law[gamma] = reach * p[gamma].double()
    return law


@dataclass
class SpeculativeResult:
    tokens: torch.Tensor    # the new tokens, (new_tokens,)
    target_calls: int
    accepted: list[int]     # accepted drafts per round

    @property
    def tokens_per_call(self) -> float:
        """Emitted tokens per target call, counting every round in full (the block efficiency measured)."""
        return (sum(self.accepted) + len(self.accepted)) / self.target_calls


@torch.no_grad()
def speculative_sample(target: NextProbs, draft: NextProbs, prefix: torch.Tensor, new_tokens: int, gamma: int,
                       generator: torch.Generator) -> SpeculativeResult:
    """Sample ``new_tokens`` tokens after ``prefix`` from ``target``, drafting ``gamma`` tokens per round."""
    if new_tokens < 1 or gamma < 1:
        raise ValueError(f"new_tokens and gamma must be >= 1, got {new_tokens} and {gamma}")
    x = prefix.clone()
    calls, accepted = 0, []
    while len(x) - len(prefix) < new_tokens:
        proposal, q_rows = x, []
        for _ in range(gamma):
            q_next = draft(proposal)[-1]
            q_rows.append(q_next)
            proposal = torch.cat([proposal, torch.multinomial(q_next, 1, generator=generator)])
        p_rows = target(proposal)[-(gamma + 1):]
        calls += 1
        emitted, n = verify(p_rows, torch.stack(q_rows), proposal[len(x):], generator)
        accepted.append(n)
        x = torch.cat([x, emitted])
    return SpeculativeResult(x[len(prefix):len(prefix) + new_tokens], calls, accepted)


def draft_distillation_loss(draft_logits: torch.Tensor, target_logits: torch.Tensor, divergence: str) -> torch.Tensor:
    """DistillSpec's loss for the draft: L = mean over strings x and positions t of D(p(. | x_<t), q(. | x_<t)),
    p the target, q the draft, D one of :data:`distillbook.methods.kd.DIVERGENCES` (``forward_kl``,
    ``total_variation``, ``jsd``, ...). The strings come from data (offline) or from the draft's own samples
    (on-policy); that choice is the caller's batches. The target gets no gradient."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence={divergence!r}; allowed: {', '.join(DIVERGENCES)}")
    # D(p(. | x_<t), q(. | x_<t)), mean over strings and positions
    return DIVERGENCES[divergence](draft_logits, target_logits.detach())


def lm_next_probs(model: torch.nn.Module, n_symbols: int, bos_id: int) -> NextProbs:
    """A causal language model (``input_ids`` -> ``.logits``) as ``next_probs``: x -> the softmax over the first
    ``n_symbols`` ids after BOS + x[:i], for i = 0 .. len(x), in float64, on the host (the sampler's accept and
    reject draws run there), the model on its own device."""
    device = next(model.parameters()).device

    def next_probs(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ids = torch.cat([torch.tensor([bos_id]), x.cpu()])[None].to(device)
            return torch.softmax(model(input_ids=ids).logits[0, :, :n_symbols].double(), -1).cpu()
    return next_probs


def measured_block_efficiency(target: NextProbs, draft: NextProbs, prefix: torch.Tensor, new_tokens: int, gamma: int,
                              strings: int, generator: torch.Generator) -> float:
    """Tokens emitted per target call, pooled over ``strings`` runs of :func:`speculative_sample` after ``prefix``:
    sum over rounds of (accepted drafts + 1), over the number of target calls."""
    tokens = calls = 0
    for _ in range(strings):
        result = speculative_sample(target, draft, prefix, new_tokens, gamma, generator)
        # a round emits its accepted drafts plus one token, for one target call
        tokens += sum(result.accepted) + len(result.accepted)
        calls += result.target_calls
    return tokens / calls
