"""A tiny CLIP from transformers' ``CLIPConfig``, its contrastive loss, and forwards that accept prompts.

``tiny_clip`` builds ``transformers.CLIPModel`` (no weights downloaded). Pretraining minimises the symmetric
InfoNCE loss of CLIP over a batch of n (image, caption) pairs with L2-normalised features u_i (image) and
v_j (text) and a learnable temperature t = exp(logit_scale):

    s_ij = t * <u_i, v_j>,   L = (CE(s, arange(n)) + CE(s^T, arange(n))) / 2

Prompt learners feed *token embeddings*, which ``CLIPTextModel`` does not accept (it takes ids only).
``text_features_from_embeddings`` runs the same modules the stock forward runs (position embeddings, the
causal mask from ``create_causal_mask``, each encoder layer with ``is_causal=True``, the final layer norm,
pooling at the end token, the projection), so with the ids' own embeddings it reproduces
``CLIPModel.get_text_features`` bit for bit. Both forwards also take *deep prompts* (IVLP, as in the MaPLe and
PromptSRC code): text prompts overwrite the context positions at the input of layers 1..J-1; image prompts
are appended after the patch embeddings (layer 0) and overwrite those tokens at the input of layers 1..J-1.

Pooling: ``CLIPTextModel`` takes the first ``eos_token_id`` position, except when ``eos_token_id == 2``, where
it falls back to ``argmax(input_ids)`` (pre-transformers-PR-24773 checkpoints). ``tiny_clip`` refuses eos id 2.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="IProgress not found")
from transformers import CLIPConfig, CLIPModel  # noqa: E402
from transformers.masking_utils import create_causal_mask  # noqa: E402

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the temperature at 100


def tiny_clip(vocab_size: int, image_size: int = 32, patch_size: int = 8, width: int = 64, layers: int = 2,
              heads: int = 4, projection_dim: int = 64, max_length: int = 16, pad_id: int = 0, eos_id: int = 1,
              bos_id: int = 2) -> CLIPModel:
    """A ``CLIPModel`` with text and vision towers of ``layers`` blocks of width ``width`` (4x MLP)."""
    if eos_id == 2:
        raise ValueError("eos_id must not be 2: CLIPTextModel then pools at argmax(input_ids) instead of the end token")
    if width % heads:
        raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
    tower = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads)
    config = CLIPConfig(
        text_config=dict(**tower, vocab_size=vocab_size, max_position_embeddings=max_length, pad_token_id=pad_id,
                         bos_token_id=bos_id, eos_token_id=eos_id),
        vision_config=dict(**tower, image_size=image_size, patch_size=patch_size, num_channels=3),
        projection_dim=projection_dim)
    return CLIPModel(config)


def text_features(model: CLIPModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Projected (unnormalised) text features of token ids: the stock path."""
    return model.get_text_features(input_ids=input_ids).pooler_output


def eos_positions(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Index of the first end token of each row (every row must have one)."""
    hit = input_ids == eos_id
    if not hit.any(dim=-1).all():
        raise ValueError(f"every sequence must contain the end token (id {eos_id})")
    return hit.int().argmax(dim=-1)


def text_features_from_embeddings(model: CLIPModel, token_embeddings: torch.Tensor, eos_at: torch.Tensor,
                                  deep_prompts: torch.Tensor | None = None, prompt_start: int = 1) -> torch.Tensor:
    """Projected text features of token embeddings (n, L, d), pooled at positions ``eos_at`` (n,).

    ``deep_prompts`` (J - 1, m, d) overwrite positions ``prompt_start`` .. ``prompt_start + m - 1`` at the input
    of layers 1 .. J - 1 (layer 0 sees ``token_embeddings`` as given).
    """
    text = model.text_model
    # h_0 = token embeddings + position embeddings
    hidden = text.embeddings(inputs_embeds=token_embeddings)
    mask = create_causal_mask(config=text.config, inputs_embeds=hidden, attention_mask=None, cache=None)
    n_deep = 0 if deep_prompts is None else len(deep_prompts)
    if n_deep >= len(text.encoder.layers):
        raise ValueError(f"deep_prompts has {n_deep} layers; at most {len(text.encoder.layers) - 1} fit")
    for depth, layer in enumerate(text.encoder.layers):
        if 1 <= depth <= n_deep:
            prompt = deep_prompts[depth - 1].expand(len(hidden), -1, -1)
            hidden = torch.cat([hidden[:, :prompt_start], prompt, hidden[:, prompt_start + prompt.shape[1]:]], 1)
        hidden = layer(hidden, mask, is_causal=True)
    hidden = text.final_layer_norm(hidden)
    pooled = hidden[torch.arange(len(hidden), device=hidden.device), eos_at]
    return model.text_projection(pooled)


def image_features(model: CLIPModel, images: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
    """Projected (unnormalised) image features; ``prompts`` (J, m, d) are deep visual prompts (None: stock path).

    Layer 0 sees the m prompts appended after the class and patch tokens; layer j >= 1 gets them overwritten
    with ``prompts[j]``. The class token (position 0) is pooled, as in the stock model.
    """
    vision = model.vision_model
    hidden = vision.embeddings(images)
    n_deep = 0 if prompts is None else len(prompts)
    if n_deep > len(vision.encoder.layers):
        raise ValueError(f"prompts has {n_deep} layers; the vision tower has {len(vision.encoder.layers)}")
    if n_deep:
        hidden = torch.cat([hidden, prompts[0].expand(len(hidden), -1, -1)], 1)
    hidden = vision.pre_layrnorm(hidden)
    for depth, layer in enumerate(vision.encoder.layers):
        if 1 <= depth < n_deep:
            m = prompts.shape[1]
            hidden = torch.cat([hidden[:, :-m], prompts[depth].expand(len(hidden), -1, -1)], 1)
        hidden = layer(hidden, None)
    return model.visual_projection(vision.post_layernorm(hidden[:, 0]))


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of n matched pairs (row i of each); features need not be normalised."""
    u, v = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    # s_ij = exp(logit_scale) <u_i, v_j>
    logits = logit_scale.exp() * u @ v.T
    target = torch.arange(len(logits), device=logits.device)
    # L = (CE(s, arange) + CE(s^T, arange)) / 2: each image picks its caption, each caption its image
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def pretrain_loss(model: CLIPModel, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """``fit``'s loss function for contrastive pretraining on (images, caption ids) batches."""
    images, ids = batch
    scale = model.logit_scale.clamp(max=MAX_LOGIT_SCALE)
    loss = clip_loss(image_features(model, images), text_features(model, ids), scale)
    return loss, {"temperature": float(scale.detach().exp())}


def load_clip(name_or_path: str, vocab_size: int, image_size: int) -> CLIPModel:
    """A saved ``CLIPModel`` (local folder, or hub id when online), checked against a test bed's vocabulary size,
    image size and end token."""
    clip = CLIPModel.from_pretrained(name_or_path)
    text, vision = clip.config.text_config, clip.config.vision_config
    if text.vocab_size != vocab_size or vision.image_size != image_size:
        raise ValueError(f"clip_checkpoint={name_or_path!r} has vocab {text.vocab_size} and image size "
                         f"{vision.image_size}; this test bed needs vocab {vocab_size} and image size {image_size}")
    if text.eos_token_id == 2:
        raise ValueError(f"clip_checkpoint={name_or_path!r} has eos_token_id 2, which makes CLIPTextModel pool at "
                         "argmax(input_ids); the test bed's end token is id 1")
    return clip
