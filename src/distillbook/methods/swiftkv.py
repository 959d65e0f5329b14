"""SwiftKV (paper 28): prompt tokens skip the later layers; those layers read their prompt KV from layer k.

For a Llama-class model with L layers and a prompt of P tokens, the prompt's first P - 1 tokens (the
*cheap* positions) run through layers 1..k only. Every later layer l > k takes the keys and values of
*all* tokens from layer k's output,

    K_l, V_l = W_K^l norm_l(h_k),  W_V^l norm_l(h_k)   (RoPE at each token's position),

while the last prompt token and every token after it (the *full* positions) still run through all L
layers to form their queries and outputs. As in the reference implementation, a decoded token's KV in
those layers also comes from h_k; unlike it, each layer keeps its own input norm rather than one new
shared norm (equal at k = L - 1, where the model is unchanged). Prefill then costs about k / L of the model's layer
compute for long prompts. Only W_Q, W_K, W_V of layers > k need retraining (:func:`unfreeze_later_qkv`), by
distillation from the unchanged model, T^2 KL(p_T || q_T) at T = 2 (:func:`distillation_loss`), to make up
for the rewiring.

:func:`forward` is written out layer by layer from the model's own modules; with k = L it must equal the
model's logits exactly (and with k = L - 1 too: the last layer's KV input *is* h_{L-1}), which the tests
check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

METHODS = {
    "SwiftKV forward (SingleInputKV: later layers read the prompt's KV from layer k)": ("forward", 28),
    "SwiftKV prefill FLOPs": ("prefill_flops", 28),
    "SwiftKV trainable weights (W_Q, W_K, W_V of the later layers)": ("unfreeze_later_qkv", 28),
    "SwiftKV distillation loss (T^2 KL to the unchanged model)": ("distillation_loss", 28),
}


def tiny_llama(vocab_size: int, d_model: int, n_layer: int, n_head: int = 2, n_kv_head: int | None = None,
               max_length: int = 128) -> LlamaForCausalLM:
    """A Llama of ``n_layer`` blocks of width ``d_model`` (SwiGLU MLP 4x, RoPE), eager attention."""
    if d_model % n_head:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=4 * d_model,
                         num_hidden_layers=n_layer, num_attention_heads=n_head,
                         num_key_value_heads=n_kv_head or n_head, max_position_embeddings=max_length,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=True,
                         attn_implementation="eager")
    return LlamaForCausalLM(config)


def _heads(x: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    return x.view(*x.shape[:2], n_heads, head_dim).transpose(1, 2)


def forward(model: LlamaForCausalLM, input_ids: torch.Tensor, n_prompt: int, k: int,
            local_layers: int = 0) -> torch.Tensor:
    """Logits (batch, T - n_prompt + 1, V) at the full positions n_prompt - 1 .. T - 1 under SwiftKV with
    ``k`` full layers for the prompt (``k`` = number of layers: the plain model).

    ``local_layers`` > 0 makes the first layers attend to their own position only, so that mixing across
    tokens can only happen later: a toy whose prompt processing lives in the later layers, where SwiftKV's
    rewiring has something to lose. Train such a model with this forward (``n_prompt=1``, ``k`` = layers).
    """
    config = model.config
    n_layers, T = config.num_hidden_layers, input_ids.shape[1]
    if not 0 <= k <= n_layers:
        raise ValueError(f"k must be in [0, {n_layers}], got {k}")
    if not 1 <= n_prompt <= T:
        raise ValueError(f"n_prompt must be in [1, {T}], got {n_prompt}")
    if not 0 <= local_layers <= n_layers:
        raise ValueError(f"local_layers must be in [0, {n_layers}], got {local_layers}")
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    full = slice(n_prompt - 1, T)
    positions = torch.arange(T, device=input_ids.device)[None]
    h = model.model.embed_tokens(input_ids)
    cos, sin = model.model.rotary_emb(h, positions)
    # full position i (absolute n_prompt - 1 + i) sees every cheap position and full positions <= i
    n_full = T - n_prompt + 1
    allowed = torch.ones(n_full, T, dtype=torch.bool, device=h.device)
    allowed[:, n_prompt - 1:] = torch.tril(torch.ones(n_full, n_full, dtype=torch.bool, device=h.device))
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=h.device))
    own = torch.eye(T, dtype=torch.bool, device=h.device)

    h_k = None
    for layer_index, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        head_dim = attn.head_dim
        if layer_index < k:  # every position, plain causal attention
            x = layer.input_layernorm(h)
            q, key, value = (_heads(proj(x), n, head_dim) for proj, n in
                             ((attn.q_proj, n_heads), (attn.k_proj, n_kv), (attn.v_proj, n_kv)))
            q, key = apply_rotary_pos_emb(q, key, cos, sin)
            mask = own if layer_index < local_layers else causal
        else:
            if h_k is None:  # entering the skipped layers: only the full positions go on
                h_k, h = h, h[:, full]
            x_kv = layer.input_layernorm(h_k)  # K_l, V_l = W^l norm_l(h_k) for every token
            q = _heads(attn.q_proj(layer.input_layernorm(h)), n_heads, head_dim)
            key, value = _heads(attn.k_proj(x_kv), n_kv, head_dim), _heads(attn.v_proj(x_kv), n_kv, head_dim)
            q, _ = apply_rotary_pos_emb(q, q, cos[:, full], sin[:, full])
            _, key = apply_rotary_pos_emb(key, key, cos, sin)
            mask = allowed & own[full] if layer_index < local_layers else allowed
        key, value = repeat_kv(key, n_heads // n_kv), repeat_kv(value, n_heads // n_kv)
        # softmax(q k^T * scaling + mask) v, scaling = 1 / sqrt(head_dim); then o_proj and the MLP, both residual
        scores = (q @ key.transpose(-1, -2)) * attn.scaling
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        out = (torch.softmax(scores, dim=-1) @ value).transpose(1, 2).reshape(*h.shape[:2], -1)
        h = h + attn.o_proj(out)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    if h_k is None:
        h = h[:, full]
    return model.lm_head(model.model.norm(h))


def prefill_flops(model: LlamaForCausalLM, input_ids: torch.Tensor, k: int) -> int:
    """Floating-point operations of prefilling ``input_ids`` as the prompt (counted by torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(model, input_ids, input_ids.shape[1], k)
    return counter.get_total_flops()


def unfreeze_later_qkv(model: LlamaForCausalLM, k: int) -> list[torch.nn.Parameter]:
    """Freeze ``model`` except W_Q, W_K, W_V of the layers after the first ``k`` (the weights SwiftKV retrains);
    returns those parameters, for the optimiser."""
    n_layers = model.config.num_hidden_layers
    trainable = [q for n, q in model.named_parameters()
                 if any(f"layers.{i}.self_attn.{w}_proj." in n for i in range(k, n_layers) for w in "qkv")]
    for q in model.parameters():
        q.requires_grad_(False)
    for q in trainable:
        q.requires_grad_(True)
    return trainable


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 2.0) -> torch.Tensor:
    """SwiftKV's distillation of the rewired model (student, q) from the unchanged one (teacher, p), logits
    (batch, positions, V): T^2 KL(p_T || q_T), summed over positions and averaged over the batch. The teacher
    gets no gradient."""
    T = temperature
    # T^2 sum_positions KL(softmax(teacher / T) || softmax(student / T)), mean over the batch
    return T * T * F.kl_div(F.log_softmax(student_logits / T, -1), F.log_softmax(teacher_logits.detach() / T, -1),
                            log_target=True, reduction="batchmean")
