"""Tiny causal language models from transformers configs, and an explicit sampler.

``tiny_gpt2`` builds a ``GPT2LMHeadModel`` from a config sized by the
chapter's profile (no weights are downloaded). ``sample`` is an ancestral
sampler with a KV cache and a dedicated ``torch.Generator``, so samples are
reproducible (``model.generate`` draws from the global generator).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

# transformers imports tqdm.auto, which warns (into executed notebooks) that ipywidgets are missing.
warnings.filterwarnings("ignore", message="IProgress not found")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402


def tiny_gpt2(vocab_size: int, d_model: int, n_layer: int, n_head: int = 2, max_length: int = 64,
              dropout: float = 0.0) -> GPT2LMHeadModel:
    """A GPT-2 with ``n_layer`` blocks of width ``d_model`` (4x MLP), tied embeddings."""
    if d_model % n_head:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
    config = GPT2Config(vocab_size=vocab_size, n_positions=max_length, n_embd=d_model, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=None,
                        eos_token_id=None, pad_token_id=None)
    return GPT2LMHeadModel(config)


def symbol_logits(model: torch.nn.Module, x: torch.Tensor, n_symbols: int, bos_id: int) -> torch.Tensor:
    """Logits over the first ``n_symbols`` ids at every position of strings ``x`` (n, T): the model reads
    BOS + x[:-1], so position t predicts x_t."""
    device = next(model.parameters()).device
    ids = torch.cat([torch.full((len(x), 1), bos_id, dtype=x.dtype, device=x.device), x[:, :-1]], dim=1)
    return model(input_ids=ids.to(device)).logits[..., :n_symbols]


def next_token_loss(model: torch.nn.Module, x: torch.Tensor, n_symbols: int, bos_id: int) -> torch.Tensor:
    """Next-token cross-entropy of strings ``x`` (n, T), mean over positions: -mean_t log p(x_t | BOS, x_<t)."""
    logits = symbol_logits(model, x, n_symbols, bos_id)
    return F.cross_entropy(logits.reshape(-1, n_symbols), x.to(logits.device).reshape(-1))


@torch.no_grad()
def sample(model: torch.nn.Module, n: int, length: int, bos_id: int, generator: torch.Generator,
           n_symbols: int | None = None) -> torch.Tensor:
    """``n`` strings of ``length`` tokens drawn from ``model`` after a BOS token.

    ``n_symbols`` restricts sampling to the first ``n_symbols`` ids (e.g. to
    never sample BOS itself).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = torch.full((n, 1), bos_id, dtype=torch.long, device=device)
    out = torch.empty(n, length, dtype=torch.long)
    cache = None
    for t in range(length):
        result = model(input_ids=tokens, cache=cache, use_cache=True)
        cache = result.cache
        logits = result.logits[:, -1, :n_symbols].double().cpu()
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
        out[:, t] = nxt.squeeze(1)
        tokens = nxt.to(device)
    model.train(was_training)
    return out
