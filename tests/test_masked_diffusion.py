"""Threshold decoding's edge cases and dParallel's loss against torch.distributions."""

import pytest
import torch

from distillbook.methods import masked_diffusion as md

MASK = 9


def _fixed_logits(n, t, v=MASK + 1, seed=0):
    """A 'model' whose beliefs ignore the context; the mask token is in its vocabulary (as in LLaDA) and
    gets the largest logit everywhere, which decoding must never write."""
    table = 3 * torch.randn(n, t, v, generator=torch.Generator().manual_seed(seed))
    table[..., MASK] = table.amax(-1) + 1
    return lambda x: table  # noqa: E731


def _without_mask(logits):
    return logits[..., :MASK]


def test_entropy_matches_categorical():
    logits = torch.randn(7, 5)
    torch.testing.assert_close(md.entropy(logits), torch.distributions.Categorical(logits=logits).entropy())


def test_a_threshold_above_every_confidence_decodes_one_token_per_step():
    x = torch.tensor([[1, MASK, MASK, MASK, 2], [MASK, 3, MASK, 4, 4]])
    fn = _fixed_logits(2, 5)
    out, steps, states = md.threshold_decode(fn, x, MASK, tau=1.0)
    assert steps.tolist() == [3, 2]
    assert len(states) == 4 and not (out == MASK).any()
    # each step unmasks the most confident remaining position: the order follows the confidences
    table = torch.softmax(_without_mask(fn(x)).double(), -1).max(-1)
    first_step = (states[1] != states[0]).nonzero().tolist()
    assert first_step == [[0, int(table.values[0, 1:4].argmax()) + 1], [1, 0 if table.values[1, 0] > table.values[1, 2] else 2]]
    # and writes the arg-max token
    assert torch.equal(out[x == MASK], _without_mask(fn(x)).argmax(-1)[x == MASK])


def test_zero_threshold_decodes_everything_at_once_and_vocab_restricts():
    x = torch.full((3, 6), MASK)
    out, steps, _ = md.threshold_decode(_fixed_logits(3, 6, seed=1), x, MASK, tau=0.0, vocab=slice(0, 4))
    assert steps.tolist() == [1, 1, 1]
    assert out.max() < 4
    with pytest.raises(ValueError, match="tau"):
        md.threshold_decode(_fixed_logits(3, 6), x, MASK, tau=-0.1)


def test_certainty_forcing_loss():
    logits = torch.randn(4, 6, 8, requires_grad=True)
    targets = logits.argmax(-1).detach().clone()
    targets[:, 0] = (targets[:, 0] + 1) % 8  # position 0 wrong, the others right
    masked = torch.zeros(4, 6, dtype=torch.bool)
    masked[:, :3] = True
    loss, parts = md.certainty_forcing_loss(logits, targets, masked, entropy_weight=2.0)
    ce = torch.nn.functional.cross_entropy(logits[masked], targets[masked])
    h = torch.distributions.Categorical(logits=logits[:, 1:3].reshape(-1, 8)).entropy().mean()
    torch.testing.assert_close(loss, ce + 2 * h)
    control, _ = md.certainty_forcing_loss(logits, targets, masked, entropy_weight=0.0)
    torch.testing.assert_close(control, ce)
    loss.backward()
    assert logits.grad[:, 3:].abs().sum() == 0  # unmasked positions take no gradient
    with pytest.raises(ValueError, match="masked"):
        md.certainty_forcing_loss(logits, targets, torch.zeros_like(masked))


def test_mask_positions_masks_at_least_one_per_row():
    answer = torch.zeros(500, 4, dtype=torch.long)
    masked = md.mask_positions(answer, torch.zeros(500), torch.Generator().manual_seed(0))
    assert masked.sum(1).tolist() == [1] * 500
    half = md.mask_positions(answer, torch.full((500,), 0.5), torch.Generator().manual_seed(0))
    assert 0.5 < half.float().mean() < 0.7
