"""Distillation between models with different tokenizers: ULD and approximate likelihood matching (ALM).

A teacher reads a string as BPE tokens, a student as characters. ALM aligns the two by *chunks*: every
teacher token is a run of characters (:func:`encode_bpe` gives, for every character, the index of the
token it falls in), so the teacher's probability of a token can be compared with the student's
probability of the same characters (:func:`alm_loss`). ULD ignores the alignment and compares sorted
probability vectors position by position (:func:`uld_term`). :func:`cross_tokenizer_loss` wires either
one (or plain next-token prediction, the baseline) to a character student's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillbook.testbeds.grammar import to_strings

METHODS: dict[str, tuple[str, int | None]] = {
    "ALM chunk alignment (teacher tokens to student characters)": ("encode_bpe", 70),
    "ALM approximate likelihood matching (binarised chunk likelihoods)": ("alm_loss", 70),
    "ULD universal logit distillation (sorted-probability Wasserstein term)": ("uld_term", None),
    "cross-tokenizer student loss: next-token, ULD or ALM": ("cross_tokenizer_loss", 70),
    "log-probability of each token (chunk) of a string": ("token_log_probs", None),
    "ALM chunk debiasing: the teacher's probability of a chunk's characters, not of its token":
        ("debiased_token_log_probs", 70),
}
LOSSES = ("ntp", "uld", "alm", "alm_ntp")


def encode_bpe(tokenizer, x: torch.Tensor, bos_id: int, width: int | None = None):
    """BPE ids (n, T) padded with BOS, their mask, and for every symbol the index of its BPE token (n, L).

    The BPE tokens are the *chunks* of cross-tokenizer distillation: every token boundary is a symbol
    boundary, so each token's span lines up with a run of a character model's tokens:
        chunk[i, a:b] = k  for the k-th token of string i, whose character span (offsets) is [a, b).
    """
    encodings = tokenizer.encode_batch(to_strings(x))
    width = width or max(len(e.ids) for e in encodings)
    ids = torch.full((len(x), width), bos_id, dtype=torch.long)
    mask = torch.zeros(len(x), width, dtype=torch.bool)
    chunk = torch.full(x.shape, -1, dtype=torch.long)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = True
        for k, (a, b) in enumerate(e.offsets):
            chunk[i, a:b] = k
    if (chunk < 0).any():
        raise ValueError("the BPE tokenizer dropped symbols: every symbol must belong to a token")
    return ids, mask, chunk


def token_log_probs(log_probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids_t | ids_<t) at every position, (n, T), from a model's log-probabilities (n, T, V).

    For a BPE teacher, the log-probability of its token t is log p_c of chunk c = t; for a character
    student, the log-probability of each character.
    """
    return log_probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def extension_matrix(tokenizer) -> torch.Tensor:
    """``extends[c, w]`` is True when token ``w``'s text starts with token ``c``'s text (``w = c`` included).

    Special tokens (``<bos>``) extend only themselves.
    """
    vocab = tokenizer.get_vocab()
    text = [""] * len(vocab)
    for token, i in vocab.items():
        text[i] = token
    special = {i for token, i in vocab.items() if token.startswith("<")}
    extends = torch.zeros(len(text), len(text), dtype=torch.bool)
    for c, a in enumerate(text):
        for w, b in enumerate(text):
            extends[c, w] = w == c or (c not in special and w not in special and b.startswith(a))
    return extends


def debiased_token_log_probs(log_probs: torch.Tensor, ids: torch.Tensor, extends: torch.Tensor) -> torch.Tensor:
    """The teacher's log-probability that the next characters are token ``c``'s, at every position (n, T).

    A character student's chunk probability q_c is the probability of c's *characters*, whatever follows; the
    teacher's canonical token probability p(c) leaves out every longer token that starts with those characters,
    so it is biased low (tokenization bias). To first order (one teacher token ahead), the characters of c come
    next with probability
        p~_c = sum_{w : text(w) starts with text(c)} p(w),
    a log-sum-exp over the tokens that extend c (:func:`extension_matrix`). Paths through shorter,
    non-canonical tokens are left out: a teacher trained on canonical tokenizations gives them little mass.
    """
    mask = extends[ids]  # (n, T, V_T): the tokens extending each position's token
    return torch.logsumexp(log_probs.masked_fill(~mask.to(log_probs.device), float("-inf")), dim=-1)


def uld_term(student_probs: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Universal logit distillation (Boizard et al., 2024) at index-aligned positions.

    W1 between the sorted probability vectors, sum_k |sort(p_T)_k - sort(q_S)_k|, the shorter vocabulary
    padded with zeros; teacher position i is paired with student position i (i < number of teacher tokens).
    """
    width = max(student_probs.shape[-1], teacher_probs.shape[-1])
    n_pos = teacher_probs.shape[1]
    s = F.pad(student_probs[:, :n_pos].sort(dim=-1, descending=True).values, (0, width - student_probs.shape[-1]))
    t = F.pad(teacher_probs.sort(dim=-1, descending=True).values, (0, width - teacher_probs.shape[-1]))
    # sum_k |sort(q_S)_k - sort(p_T)_k| per position, mean over the teacher's real tokens
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
    # log q_c = sum_{l in c} log q(x_l): the characters of each chunk summed with a one-hot matmul
    # (deterministic on every device, unlike scatter_add)
    one_hot = F.one_hot(chunk, teacher_chunk_logp.shape[1]).to(student_char_logp.dtype)  # (n, L, T)
    student_chunk_logp = torch.einsum("nl,nlt->nt", student_char_logp, one_hot)
    # log s = log q_c / tau, log t = log p_c / tau (kept below 0 so that 1 - s, 1 - t > 0)
    log_s = (student_chunk_logp / tau).clamp(max=-1e-7)
    log_t = (teacher_chunk_logp / tau).clamp(max=-1e-7)
    t = log_t.exp()
    log1m_s, log1m_t = torch.log(-torch.expm1(log_s)), torch.log(-torch.expm1(log_t))
    # KL(t || s) = t log(t / s) + (1 - t) log((1 - t) / (1 - s)), mean over the teacher's real chunks
    kl = t * (log_t - log_s) + (1 - t) * (log1m_t - log1m_s)
    return (kl * mask).sum() / mask.sum()


def cross_tokenizer_loss(method: str, student_logits: torch.Tensor, x: torch.Tensor, *, chunk: torch.Tensor,
                         teacher_chunk_logp: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor,
                         knob: float | None) -> torch.Tensor:
    """The character student's loss on strings ``x`` (n, L), from its logits (n, L, V).

    With log q(x_l) the student's log-probability of character l:
    - ``ntp`` (next-token prediction on the transfer set, no teacher): -mean_l log q(x_l);
    - ``uld``: -mean_l log q(x_l) + knob * ULD(q, p_T) (:func:`uld_term`, ``knob`` its weight);
    - ``alm``: ALM alone (:func:`alm_loss`, ``knob`` its tau), over the chunks of :func:`encode_bpe`;
    - ``alm_ntp``: ALM plus next-token prediction, -mean_l log q(x_l) + ALM (the paper's combined setting).
    ``teacher_chunk_logp`` (n, T) is the teacher's log-probability of each of its tokens
    (:func:`token_log_probs`), ``teacher_probs`` (n, T, V_T) its next-token distributions, ``mask`` (n, T)
    its real tokens.
    """
    logp = torch.log_softmax(student_logits, -1)
    char_logp = token_log_probs(logp, x)
    if method == "ntp":
        return -char_logp.mean()
    if method == "uld":
        return -char_logp.mean() + knob * uld_term(logp.exp(), teacher_probs, mask)
    if method == "alm":
        return alm_loss(char_logp, chunk, teacher_chunk_logp, mask, knob)
    if method == "alm_ntp":
        return -char_logp.mean() + alm_loss(char_logp, chunk, teacher_chunk_logp, mask, knob)
    raise ValueError(f"method={method!r}; allowed: {', '.join(LOSSES)}")
