"""The HMM oracle's exact next-token distributions, its sampler, tokenizers, and the tiny-LM sampler."""

import itertools
import math

import pytest
import torch
from scipy import stats

from distillbook.models.lm import sample, tiny_gpt2
from distillbook.testbeds.grammar import (ALPHABET, CharTokenizer, HMMLanguage, golden_kl, to_strings, train_bpe,
                                          with_bos)


@pytest.fixture(scope="module")
def lang():
    return HMMLanguage.random(0, n_states=5, vocab_size=4, length=3, branching=2, emissions=2)


def _brute_force_joint(lang):
    """p(x) for every string, by summing over every hidden path."""
    joint = {}
    for x in itertools.product(range(lang.vocab_size), repeat=lang.length):
        total = 0.0
        for path in itertools.product(range(lang.n_states), repeat=lang.length):
            p = lang.initial[path[0]] * lang.emission[path[0], x[0]]
            for t in range(1, lang.length):
                p = p * lang.transition[path[t - 1], path[t]] * lang.emission[path[t], x[t]]
            total += float(p)
        joint[x] = total
    return joint


def test_next_token_probs_equal_brute_force_conditionals(lang):
    joint = _brute_force_joint(lang)
    assert sum(joint.values()) == pytest.approx(1.0, abs=1e-12)
    strings = [x for x, p in joint.items() if p > 0]
    probs = lang.next_token_probs(torch.tensor(strings))
    for row, x in zip(probs, strings):
        for t in range(lang.length):
            prefix_mass = sum(p for y, p in joint.items() if y[:t] == x[:t])
            for v in range(lang.vocab_size):
                mass = sum(p for y, p in joint.items() if y[:t] == x[:t] and y[t] == v)
                assert row[t, v].item() == pytest.approx(mass / prefix_mass, abs=1e-12)
    log_lik = lang.log_likelihood(torch.tensor(strings))
    assert log_lik.exp().tolist() == pytest.approx([joint[x] for x in strings], rel=1e-10)


def test_sampler_follows_the_oracle(lang):
    joint = _brute_force_joint(lang)
    x = lang.sample(20_000, torch.Generator().manual_seed(0))
    counts = {}
    for row in x.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    support = [k for k, p in joint.items() if p > 0]
    assert set(counts) <= set(support)
    observed = [counts.get(k, 0) for k in support]
    expected = [joint[k] * len(x) for k in support]
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_language_is_far_from_uniform():
    lang = HMMLanguage.random(0)
    x = lang.sample(2000, torch.Generator().manual_seed(0))
    entropy_rate = float(-lang.log_likelihood(x).mean() / lang.length)
    assert entropy_rate < 0.7 * math.log(lang.vocab_size)


def test_golden_kl_is_zero_for_the_oracle_and_positive_for_uniform(lang):
    x = lang.sample(100, torch.Generator().manual_seed(1))
    probs = lang.next_token_probs(x)
    extra = torch.full(probs.shape[:-1] + (1,), -1e9, dtype=torch.float64)  # a BOS logit, dropped
    assert golden_kl(probs, torch.cat([probs.clamp_min(1e-300).log(), extra], -1)).abs().max() < 1e-9
    assert (golden_kl(probs, torch.zeros_like(probs)) > 0).all()


def test_tokenizers_cover_the_strings():
    lang = HMMLanguage.random(0)
    strings = to_strings(lang.sample(500, torch.Generator().manual_seed(2)))
    char = CharTokenizer(lang.vocab_size)
    assert char.decode(char.encode(strings[0])) == strings[0]
    bpe = train_bpe(strings, vocab_size=40, alphabet=ALPHABET[: lang.vocab_size])
    assert bpe.get_vocab_size() <= 40
    for text in strings[:20]:
        enc = bpe.encode(text)
        assert "".join(enc.tokens) == text
        assert enc.offsets[0][0] == 0 and enc.offsets[-1][1] == len(text)
        assert all(a[1] == b[0] for a, b in zip(enc.offsets, enc.offsets[1:])), "spans tile the string"


def test_cached_sampler_matches_a_full_recompute():
    torch.manual_seed(0)
    model = tiny_gpt2(vocab_size=5, d_model=16, n_layer=1)
    drawn = sample(model, 6, 8, bos_id=4, generator=torch.Generator().manual_seed(3), n_symbols=4)
    with torch.no_grad():
        probs = torch.softmax(model(with_bos(drawn, 4)[:, :-1]).logits[..., :4].double(), -1)
    replay = torch.Generator().manual_seed(3)
    again = torch.stack([torch.multinomial(probs[:, t], 1, generator=replay).squeeze(1) for t in range(8)], dim=1)
    assert torch.equal(again, drawn)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="branching"):
        HMMLanguage.random(0, n_states=3, branching=5)
    with pytest.raises(ValueError, match="divisible"):
        tiny_gpt2(vocab_size=5, d_model=15, n_layer=1, n_head=2)
