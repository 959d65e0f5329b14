"""Knowledge-distillation losses on logits.

Convention: the **teacher** distribution p is the target; the student q is
fitted to it. KL(p || q) = sum_v p_v (log p_v - log q_v).

Used by: ``foundations``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
