"""The chapter's cross-tokenizer losses (ALM, ULD), chunk alignment, and the data regimes."""

import math

import numpy as np
import pytest
import torch

from distillbook.chapters.lm_kd_dynamics import proxy_fall_after_golden_minimum
from distillbook.losses.cross_tokenizer import alm_loss, uld_term
from distillbook.models.lm import tiny_gpt2
from distillbook.regimes import regime_batches
from distillbook.testbeds.grammar import ALPHABET, HMMLanguage, encode_bpe, to_strings, train_bpe


def _binary_kl(t, s):
    return t * math.log(t / s) + (1 - t) * math.log((1 - t) / (1 - s))


def test_alm_is_the_binary_kl_of_chunk_probabilities():
    # two strings of 4 characters; chunks [0, 0, 1, 1] and [0, 1, 1, 2]
    chunk = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 2]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    char_logp = torch.log(torch.tensor([[0.5, 0.4, 0.9, 0.5], [0.3, 0.6, 0.5, 0.8]], dtype=torch.float64))
    teacher = torch.log(torch.tensor([[0.3, 0.5, 0.7], [0.25, 0.2, 0.9]], dtype=torch.float64))
    tau = 2.0
    student_chunks = [[0.5 * 0.4, 0.9 * 0.5], [0.3, 0.6 * 0.5, 0.8]]
    expected = [_binary_kl(teacher[0, k].exp().item() ** (1 / tau), student_chunks[0][k] ** (1 / tau)) for k in range(2)]
    expected += [_binary_kl(teacher[1, k].exp().item() ** (1 / tau), student_chunks[1][k] ** (1 / tau)) for k in range(3)]
    assert alm_loss(char_logp, chunk, teacher, mask, tau).item() == pytest.approx(np.mean(expected), rel=1e-9)


def test_alm_vanishes_with_zero_gradient_when_chunks_match():
    chunk = torch.tensor([[0, 0, 1, 2]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    char_logp = torch.log(torch.tensor([[0.5, 0.4, 0.9, 0.5]], dtype=torch.float64)).requires_grad_(True)
    teacher = torch.log(torch.tensor([[0.2, 0.9, 0.5]], dtype=torch.float64))
    loss = alm_loss(char_logp, chunk, teacher, mask, tau=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert char_logp.grad.abs().max().item() < 1e-9


def test_alm_with_identical_tokenizers_matches_token_by_token():
    # every token is its own chunk: the loss is the mean binary KL of per-token probabilities
    teacher = torch.log(torch.tensor([[0.6, 0.3, 0.8]], dtype=torch.float64))
    student = torch.log(torch.tensor([[0.5, 0.4, 0.7]], dtype=torch.float64))
    chunk = torch.arange(3)[None]
    expected = np.mean([_binary_kl(t, s) for t, s in zip([0.6, 0.3, 0.8], [0.5, 0.4, 0.7])])
    assert alm_loss(student, chunk, teacher, torch.ones(1, 3, dtype=torch.bool), 1.0).item() == pytest.approx(expected)


def test_uld_is_l1_between_sorted_padded_probabilities():
    student = torch.tensor([[[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]])  # 3-symbol vocabulary
    teacher = torch.tensor([[[0.5, 0.1, 0.1, 0.3]]])  # 4-token vocabulary, one position
    mask = torch.ones(1, 1)
    # sorted: student (0.6, 0.3, 0.1, 0), teacher (0.5, 0.3, 0.1, 0.1) -> 0.1 + 0 + 0 + 0.1
    assert uld_term(student, teacher, mask).item() == pytest.approx(0.2)
    assert uld_term(teacher, teacher, mask).item() == pytest.approx(0.0)


def test_bpe_chunks_tile_each_string():
    lang = HMMLanguage.random(0, length=12)
    x = lang.sample(50, torch.Generator().manual_seed(0))
    bpe = train_bpe(to_strings(x), 30, ALPHABET[: lang.vocab_size])
    ids, mask, chunk = encode_bpe(bpe, x, bpe.token_to_id("<bos>"))
    for i, text in enumerate(to_strings(x)):
        tokens = [bpe.id_to_token(t) for t in ids[i][mask[i]].tolist()]
        rebuilt = ["".join(ch for ch, k in zip(text, chunk[i].tolist()) if k == j) for j in range(len(tokens))]
        assert rebuilt == tokens
        assert (torch.diff(chunk[i]) >= 0).all()


def test_proxy_drop_statistic_cross_fits_the_minimum():
    golden = np.array([[3.0, 1.0, 2.0, 2.5], [3.0, 1.2, 2.0, 2.6], [3.0, 2.5, 0.5, 2.4]])
    proxy = np.array([[3.0, 1.5, 1.0, 0.5], [3.0, 1.6, 1.2, 0.4], [3.0, 1.4, 0.9, 0.8]])
    # seeds 0 and 1: the others' mean minimum is at index 2 -> proxy[2] - proxy[-1]; seed 2: index 1
    assert proxy_fall_after_golden_minimum(golden, proxy).tolist() == pytest.approx([0.5, 0.8, 0.6])


def test_regimes_draw_from_their_source():
    lang = HMMLanguage.random(0, length=6)
    offline = lang.sample(5, torch.Generator().manual_seed(0))
    batch = regime_batches("offline", batch_size=8, length=6, bos_id=12, n_symbols=12, offline_set=offline)
    drawn = batch(torch.Generator().manual_seed(1))
    assert all(any(torch.equal(row, o) for o in offline) for row in drawn)
    torch.manual_seed(0)
    teacher, student = tiny_gpt2(13, 8, 1), tiny_gpt2(13, 8, 1)
    with torch.no_grad():  # make the two models' samples tell apart: the teacher always says symbol 3
        teacher.transformer.ln_f.weight.zero_()
        teacher.transformer.ln_f.bias.fill_(1.0)  # every final hidden state is all ones
        teacher.transformer.wte.weight.zero_()  # tied to lm_head: only symbol 3 gets a logit
        teacher.transformer.wte.weight[3] = 10.0
    both = {"teacher": teacher, "student": student}
    online = regime_batches("online", batch_size=4, length=6, bos_id=12, n_symbols=12, **both)
    on_policy = regime_batches("on_policy", batch_size=4, length=6, bos_id=12, n_symbols=12, **both)
    assert (online(torch.Generator().manual_seed(2)) == 3).all()
    drawn = on_policy(torch.Generator().manual_seed(2))
    assert drawn.shape == (4, 6) and int(drawn.max()) < 12 and not (drawn == 3).all()
    assert torch.equal(drawn, on_policy(torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="regime='nope'"):
        regime_batches("nope", batch_size=1, length=1, bos_id=0, n_symbols=1)
    with pytest.raises(ValueError, match="needs the teacher"):
        regime_batches("online", batch_size=1, length=1, bos_id=0, n_symbols=1)


def test_symbol_logits_are_causal_and_aligned():
    """Position t predicts x_t from BOS + x_<t: changing x_t changes positions > t only."""
    from distillbook.chapters.lm_kd_dynamics import Bed, Params, symbol_logits

    bed = Bed(Params.for_profile("smoke"))
    torch.manual_seed(0)
    model = tiny_gpt2(bed.V + 1, 8, 1, max_length=bed.length + 1)
    x = bed.golden_x[:2].clone()
    y = x.clone()
    t = 3
    y[:, t] = (y[:, t] + 1) % bed.V
    with torch.no_grad():
        a, b = symbol_logits(model, bed, x), symbol_logits(model, bed, y)
    assert a.shape == (2, bed.length, bed.V)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1], b[:, t + 1])


def test_oracle_targets_are_the_oracle_distribution():
    from distillbook.chapters.lm_kd_dynamics import Bed, Params, oracle_targets

    bed = Bed(Params.for_profile("smoke"))
    x = bed.golden_x[:5]
    probs = torch.softmax(oracle_targets(bed)(x).double(), -1)
    torch.testing.assert_close(probs, bed.lang.next_token_probs(x), atol=1e-6, rtol=0)
