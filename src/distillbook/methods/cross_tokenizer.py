"""Distillation between models with different tokenizers: ULD and approximate likelihood matching (ALM).

Used by: ``lm-kd-dynamics``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uld_term(student_probs: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Universal logit distillation (Boizard et al., 2024) at index-aligned positions.

    W1 between the sorted probability vectors, sum_k |sort(p_T)_k - sort(q_S)_k|, the shorter vocabulary
    padded with zeros; teacher position i is paired with student position i (i < number of teacher tokens).
    """
    width = max(student_probs.shape[-1], teacher_probs.shape[-1])
    n_pos = teacher_probs.shape[1]
    s = F.pad(student_probs[:, :n_pos].sort(dim=-1, descending=True).values, (0, width - student_probs.shape[-1]))
    t = F.pad(teacher_probs.sort(dim=-1, descending=True).values, (0, width - teacher_probs.shape[-1]))
    per_position = (s - t).abs().sum(-1)
    return (per_position * mask).sum() / mask.sum()


def alm_loss(student_char_logp: torch.Tensor, chunk: torch.Tensor, teacher_chunk_logp: torch.Tensor,
             mask: torch.Tensor, tau: float) -> torch.Tensor:
    """Approximate likelihood matching (Minixhofer et al., 2025) over aligned chunks.

    ``chunk`` (n, L) gives, for each student token, the index of the chunk (teacher token) it falls in.
    log q_c = the sum of the student's log-probs over chunk c; log p_c = the teacher's log-prob of chunk c.
    Each chunk is a binary event with probabilities t = exp(log p_c / tau) and s = exp(log q_c / tau),
    matched by the binary KL
        KL(t || s) = t log(t / s) + (1 - t) log((1 - t) / (1 - s)),
    which is the binary cross-entropy less the teacher's binary entropy (zero when s = t).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    # sum the characters of each chunk with a one-hot matmul (deterministic on every device, unlike scatter_add)
    one_hot = F.one_hot(chunk, teacher_chunk_logp.shape[1]).to(student_char_logp.dtype)  # (n, L, T)
    student_chunk_logp = torch.einsum("nl,nlt->nt", student_char_logp, one_hot)
    log_s = (student_chunk_logp / tau).clamp(max=-1e-7)
    log_t = (teacher_chunk_logp / tau).clamp(max=-1e-7)
    t = log_t.exp()
    log1m_s, log1m_t = torch.log(-torch.expm1(log_s)), torch.log(-torch.expm1(log_t))
    kl = t * (log_t - log_s) + (1 - t) * (log1m_t - log1m_s)
    return (kl * mask).sum() / mask.sum()
