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

    def logits_fn(x):
        return table
    return logits_fn


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


def test_masked_ce_is_the_cross_entropy_of_the_masked_positions_only():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, generator=gen)
    targets = torch.randint(0, 5, (2, 4), generator=gen)
    masked = torch.tensor([[True, False, True, False], [False, False, False, True]])
    log_p = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    # mean over the three masked positions of -log p(target)
    torch.testing.assert_close(md.masked_ce(logits, targets, masked), -(log_p[masked]).mean())


def test_mask_random_share_masks_only_the_given_positions():
    x = torch.arange(1, 8).repeat(300, 1)
    x_in, targets, masked = md.mask_random_share(x, slice(3, 7), MASK, torch.Generator().manual_seed(4))
    assert torch.equal(targets, x[:, 3:7]) and torch.equal(x_in[:, :3], x[:, :3]) and torch.equal(x_in[:, 7:], x[:, 7:])
    assert torch.equal(x_in[:, 3:7] == MASK, masked) and (masked.sum(1) >= 1).all()
    assert torch.equal(x_in[:, 3:7][~masked], targets[~masked])
    # the share is uniform per row, so about half the positions are masked overall (more: one is always masked)
    assert 0.5 < masked.float().mean() < 0.75


class _TableLM(torch.nn.Module):
    """A 'masked LM' returning fixed logits whatever the input (``input_ids`` -> ``.logits``)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids):
        return type("Out", (), {"logits": self.table.expand(len(input_ids), -1, -1)})()


def test_masked_lm_loss_picks_ce_or_certainty_forcing():
    gen = torch.Generator().manual_seed(5)
    model = _TableLM(torch.randn(1, 7, MASK + 1, generator=gen))
    x = torch.randint(0, 6, (3, 7), generator=gen)
    batch = md.mask_random_share(x, slice(4, 7), MASK, gen)
    _, targets, masked = batch
    logits = model(batch[0]).logits[:, 4:7, :6]
    torch.testing.assert_close(md.masked_lm_loss(model, batch, slice(4, 7), slice(0, 6)),
                               md.masked_ce(logits, targets, masked))
    loss, parts = md.masked_lm_loss(model, batch, slice(4, 7), slice(0, 6), entropy_weight=2.0)
    torch.testing.assert_close(loss, md.certainty_forcing_loss(logits, targets, masked, 2.0)[0])


def test_decode_fills_the_positions_and_keeps_the_rest():
    model = _TableLM(_fixed_logits(1, 6, seed=2)(None))
    x = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    out, steps = md.decode(model, x, slice(2, 5), MASK, tau=1.0, vocab=slice(0, 4))
    assert torch.equal(out[:, :2], x[:, :2]) and torch.equal(out[:, 5:], x[:, 5:])
    assert steps.tolist() == [3, 3] and (out[:, 2:5] < 4).all()
    assert torch.equal(out[0, 2:5], model.table[0, 2:5, :4].argmax(-1))
