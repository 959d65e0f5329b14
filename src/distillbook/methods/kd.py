"""Knowledge-distillation losses on logits.

Convention throughout: **p is the teacher, q the student**, both softened by
the same temperature T: p = softmax(v / T), q = softmax(z / T). Every function
takes ``(student_logits, teacher_logits)`` in that order and says in its
docstring which distribution sits on the left of each KL, because that is
where public implementations have shipped swapped-weight bugs.

The token-level divergences take logits of shape (..., V) and an optional
mask of shape (...) (1 = a real token, 0 = padding) and return the mean over
unmasked positions. The teacher's logits never receive a gradient.

Where a distilled language model's training strings come from is the *data regime*
(:func:`regime_batches`): ``offline`` (a fixed set of teacher samples, repeated for epochs), ``online``
(fresh teacher samples at every step) or ``on_policy`` (the student's own samples at every step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

METHODS: dict[str, tuple[str, int | None]] = {
    "Hinton soft targets (softmax at temperature T)": ("soft_targets", None),
    "Hinton knowledge-distillation loss, T^2 KL(p_T || q_T)": ("hinton_kd_loss", None),
    "Hinton distillation objective (soft targets + hard labels)": ("distillation_objective", None),
    "forward KL (token-level, mass-covering)": ("forward_kl", None),
    "reverse KL (token-level, mode-seeking)": ("reverse_kl", None),
    "generalized Jensen-Shannon divergence (GKD)": ("generalized_jsd", None),
    "total variation distance": ("total_variation", None),
    "skew KL (DistiLLM)": ("skew_kl", None),
    "skew reverse KL (DistiLLM)": ("skew_reverse_kl", None),
    "LM distillation data regimes: offline, online, on-policy": ("regime_batches", 43),
}
REGIMES = ("offline", "online", "on_policy")


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's softened distribution: p_i = exp(z_i / T) / sum_j exp(z_j / T)."""
    _check_temperature(temperature)
    return F.softmax(logits / temperature, dim=-1)


def hinton_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target loss of Hinton, Vinyals & Dean (2015), averaged over the batch.

    L = T^2 * KL(p_T || q_T),  p_T = softmax(v / T) (teacher),  q_T = softmax(z / T) (student).

    Its gradient is dL/dz_i = T (q_i - p_i); the T^2 factor keeps the soft
    term's gradient on the same scale for every T. At high T with zero-mean
    logits, L -> (1 / 2N) * sum_i (z_i - v_i)^2: logit matching (N classes).
    KL rather than cross-entropy, so identical logits give exactly zero; the
    two differ by the teacher's entropy, a constant for the student.
    """
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    # KL(p || q) = sum_v p_v (log p_v - log q_v), mean over the batch
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    return temperature**2 * kl


def distillation_objective(student_logits_soft: torch.Tensor, teacher_logits_soft: torch.Tensor,
                           student_logits_hard: torch.Tensor, labels: torch.Tensor,
                           temperature: float, alpha: float) -> torch.Tensor:
    """Hinton's weighted objective: alpha * T^2 KL(p_T || q_T) + (1 - alpha) * CE(y, q_1).

    The soft term runs on the transfer set (labelled or not), the hard term
    on labelled examples only.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    soft = hinton_kd_loss(student_logits_soft, teacher_logits_soft, temperature)
    hard = F.cross_entropy(student_logits_hard, labels)
    return alpha * soft + (1 - alpha) * hard


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


# ---------------------------------------------------------------- token-level divergences


def _log_probs(student_logits, teacher_logits, temperature):
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}")
    return (F.log_softmax(student_logits / temperature, dim=-1),
            F.log_softmax(teacher_logits.detach() / temperature, dim=-1))


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) = sum_v a_v (log a_v - log b_v), per position; 0 log 0 = 0."""
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(dim=-1)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w a + (1 - w) b), computed stably, for 0 < w < 1."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _masked_mean(per_position: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_position.mean()
    if mask.shape != per_position.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the logits' leading shape {tuple(per_position.shape)}")
    mask = mask.to(per_position.dtype)
    total = mask.sum()
    if total == 0:
        raise ValueError("mask selects no position")
    return (per_position * mask).sum() / total


def forward_kl(student_logits, teacher_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """Forward KL, mass-covering: KL(p || q) = sum_v p_v (log p_v - log q_v)."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _masked_mean(_kl(log_p, log_q), mask)


def reverse_kl(student_logits, teacher_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """Reverse KL, mode-seeking: KL(q || p) = sum_v q_v (log q_v - log p_v)."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _masked_mean(_kl(log_q, log_p), mask)


def generalized_jsd(student_logits, teacher_logits, beta: float = 0.5, temperature: float = 1.0,
                    mask=None) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024), as in TRL.

    M = beta p + (1 - beta) q,   JSD_beta = beta KL(p || M) + (1 - beta) KL(q || M),   0 < beta < 1.

    JSD_beta itself tends to 0 at both ends; the endpoints are defined by the
    limits of the rescaled divergence and computed exactly, without a mixture:
    beta = 0 gives KL(p || q) (= lim JSD_beta / beta, forward KL) and beta = 1
    gives KL(q || p) (= lim JSD_beta / (1 - beta), reverse KL). beta = 0.5 is
    the ordinary Jensen-Shannon divergence.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    if beta == 0.0:
        per_position = _kl(log_p, log_q)
    elif beta == 1.0:
        per_position = _kl(log_q, log_p)
    else:
        log_m = _log_mixture(log_p, log_q, beta)
        per_position = beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)
    return _masked_mean(per_position, mask)


def total_variation(student_logits, teacher_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """Total variation distance: TV(p, q) = 1/2 sum_v |p_v - q_v| (symmetric, in [0, 1])."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _masked_mean(0.5 * (log_p.exp() - log_q.exp()).abs().sum(dim=-1), mask)


def skew_kl(student_logits, teacher_logits, alpha: float = 0.1, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """Skew KL of DistiLLM (Ko et al., 2024): KL(p || alpha p + (1 - alpha) q); alpha = 0 is forward KL."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    log_m = log_q if alpha == 0.0 else _log_mixture(log_p, log_q, alpha)
    return _masked_mean(_kl(log_p, log_m), mask)


def skew_reverse_kl(student_logits, teacher_logits, alpha: float = 0.1, temperature: float = 1.0,
                    mask=None) -> torch.Tensor:
    """Skew reverse KL of DistiLLM: KL(q || (1 - alpha) p + alpha q); alpha = 0 is reverse KL."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    log_m = log_p if alpha == 0.0 else _log_mixture(log_q, log_p, alpha)
    return _masked_mean(_kl(log_q, log_m), mask)


DIVERGENCES = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "total_variation": total_variation,
    "skew_kl": skew_kl,
    "skew_reverse_kl": skew_reverse_kl,
}


# ---------------------------------------------------------------- data regimes of language-model distillation


def regime_batches(regime: str, *, batch_size: int, length: int, bos_id: int, n_symbols: int,
                   offline_set: torch.Tensor | None = None, teacher: torch.nn.Module | None = None,
                   student: torch.nn.Module | None = None) -> Callable[[torch.Generator], torch.Tensor]:
    """``next_batch(generator) -> (batch_size, length)`` token ids for ``regime``, for
    :func:`distillbook.core.training.fit` (so data order and samples replay exactly on resume).

    - ``offline``: ``batch_size`` strings drawn with replacement from the fixed ``offline_set``;
    - ``online``: ``batch_size`` fresh samples x ~ p_teacher at every step;
    - ``on_policy``: ``batch_size`` fresh samples x ~ q_student at every step (the student being trained).
    """
    # the sampler's module imports transformers (seconds): only the language-model chapters need it
    from distillbook.models.lm import sample

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
