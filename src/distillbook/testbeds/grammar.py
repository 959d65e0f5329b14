"""The ``grammar`` test bed: languages whose exact next-token distribution is known.

The first language is a sparse hidden Markov model (:class:`HMMLanguage`):
each hidden state moves to only a few states and emits only a few symbols,
with Dirichlet(0.5) weights, so the language is far from uniform. Because
the oracle is explicit, p(x_t | x_<t) is computed exactly by forward
filtering, and a model's *golden* divergence KL(oracle || model) is exact at
every position of a held-out string (averaged over a fixed set of strings).

Strings are written over the letters ``a, b, c, ...``; :class:`CharTokenizer`
maps them one to one, and :func:`train_bpe` trains a byte-pair tokenizer on
them with the ``tokenizers`` library (for cross-tokenizer distillation, whose
chunk alignment is :func:`distillbook.methods.cross_tokenizer.encode_bpe`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import torch

ALPHABET = string.ascii_lowercase


@dataclass(frozen=True)
class HMMLanguage:
    """A sparse HMM over ``vocab_size`` symbols, emitting strings of ``length`` symbols.

    ``initial`` (K,), ``transition`` (K, K) rows = from-state, ``emission`` (K, V).
    """

    initial: torch.Tensor
    transition: torch.Tensor
    emission: torch.Tensor
    length: int

    @property
    def vocab_size(self) -> int:
        return self.emission.shape[1]

    @property
    def n_states(self) -> int:
        return self.emission.shape[0]

    @classmethod
    def random(cls, seed: int, n_states: int = 16, vocab_size: int = 12, length: int = 24, branching: int = 3,
               emissions: int = 3, concentration: float = 0.5) -> "HMMLanguage":
        """A random sparse HMM: ``branching`` successors and ``emissions`` symbols per state."""
        if not 1 <= branching <= n_states or not 1 <= emissions <= vocab_size:
            raise ValueError(f"need 1 <= branching <= n_states ({n_states}) and 1 <= emissions <= vocab_size ({vocab_size})")
        if vocab_size > len(ALPHABET):
            raise ValueError(f"vocab_size must be <= {len(ALPHABET)}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        rng = np.random.default_rng(seed)

        def sparse_rows(rows: int, cols: int, support: int) -> torch.Tensor:
            out = torch.zeros(rows, cols, dtype=torch.float64)
            for r in range(rows):
                idx = rng.permutation(cols)[:support]
                w = rng.dirichlet(np.full(support, concentration)) + 1e-3  # keep every allowed entry reachable
                out[r, idx] = torch.from_numpy(w / w.sum())
            return out

        initial = sparse_rows(1, n_states, branching)[0]
        return cls(initial, sparse_rows(n_states, n_states, branching), sparse_rows(n_states, vocab_size, emissions),
                   length)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` strings as token ids, (n, length) int64."""
        states = torch.multinomial(self.initial.expand(n, -1), 1, generator=generator).squeeze(1)
        out = torch.empty(n, self.length, dtype=torch.long)
        for t in range(self.length):
            if t > 0:
                states = torch.multinomial(self.transition[states], 1, generator=generator).squeeze(1)
            out[:, t] = torch.multinomial(self.emission[states], 1, generator=generator).squeeze(1)
        return out

    def next_token_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Exact p(x_t = v | x_<t) for every position: (n, length, V), float64.

        Forward filtering: b_0 = initial; p_t = (b_t) B; after seeing x_t,
        b_{t+1} ∝ (b_t ⊙ B[:, x_t]) A.
        """
        if x.ndim != 2 or x.shape[1] > self.length:
            raise ValueError(f"x must be (n, <= {self.length}) token ids")
        belief = self.initial.expand(len(x), -1)
        out = torch.empty(len(x), x.shape[1], self.vocab_size, dtype=torch.float64)
        for t in range(x.shape[1]):
            out[:, t] = belief @ self.emission
            joint = belief * self.emission[:, x[:, t]].T  # p(state, x_t | x_<t)
            norm = joint.sum(dim=1, keepdim=True)
            if (norm == 0).any():
                raise ValueError(f"a string has probability 0 under the oracle at position {t}")
            belief = (joint / norm) @ self.transition
        return out

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per string (nats); -inf for strings the oracle cannot produce.

        Scaled forward algorithm: log p(x) = sum_t log sum_k (b_t ⊙ B[:, x_t])_k.
        """
        belief = self.initial.expand(len(x), -1)
        total = torch.zeros(len(x), dtype=torch.float64)
        for t in range(x.shape[1]):
            joint = belief * self.emission[:, x[:, t]].T
            norm = joint.sum(dim=1, keepdim=True)
            total += norm.squeeze(1).log()
            belief = (joint / norm.clamp_min(1e-300)) @ self.transition
        return total

    def valid(self, x: torch.Tensor) -> torch.Tensor:
        """Whether each string has positive probability under the oracle (a grammar's notion of correct)."""
        return torch.isfinite(self.log_likelihood(x))


def golden_kl(oracle_probs: torch.Tensor, model_logits: torch.Tensor) -> torch.Tensor:
    """Per-string mean over positions of KL(oracle_t || model_t), exact at each position.

    ``oracle_probs`` (n, L, V) from :meth:`HMMLanguage.next_token_probs`; ``model_logits`` (n, L, >= V):
    extra logits (e.g. a BOS token) are dropped and the rest renormalised. Computed on the model's device.
    """
    log_q = torch.log_softmax(model_logits[..., : oracle_probs.shape[-1]].double(), dim=-1)
    p = oracle_probs.to(log_q.device)
    kl = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - log_q), torch.zeros_like(p)).sum(-1)
    return kl.mean(dim=1)


# ---------------------------------------------------------------- tokenizers


def to_strings(x: torch.Tensor) -> list[str]:
    return ["".join(ALPHABET[i] for i in row.tolist()) for row in x]


class CharTokenizer:
    """One token per symbol, plus a BOS token (id ``vocab_size``) to condition the first prediction."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.bos_id = vocab_size

    def encode(self, text: str) -> list[int]:
        ids = [ALPHABET.index(ch) for ch in text]
        if any(i >= self.vocab_size for i in ids):
            raise ValueError(f"text uses symbols beyond the first {self.vocab_size}: {text!r}")
        return ids

    def decode(self, ids) -> str:
        return "".join(ALPHABET[i] for i in ids if i != self.bos_id)


def train_bpe(strings: list[str], vocab_size: int, alphabet: str):
    """A byte-pair-encoding tokenizer trained on ``strings`` (``tokenizers`` library), with a ``<bos>`` token.

    Every symbol of ``alphabet`` is in the vocabulary, so any string encodes; the
    encoding's ``offsets`` give each token's character span.
    """
    from tokenizers import Tokenizer, models, trainers

    tokenizer = Tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=list(alphabet), special_tokens=["<bos>"],
                                  show_progress=False)
    tokenizer.train_from_iterator(strings, trainer=trainer)
    return tokenizer


def with_bos(x: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Prepend BOS: the model reads ``with_bos(x)[:, :-1]`` and predicts ``x`` at every position."""
    return torch.cat([torch.full((len(x), 1), bos_id, dtype=x.dtype, device=x.device), x], dim=1)
