"""HMM EM against hmmlearn, format probabilities against brute-force enumeration, guaranteed compliance."""

import itertools

import numpy as np
import pytest
import torch
from hmmlearn.hmm import CategoricalHMM

from distillbook.methods import constrained as cz
from distillbook.testbeds.grammar import HMMLanguage


def _dfa_ends_with_2_no_0_after_1():
    """Accept strings that end with 2 and never have a 0 right after a 1.
    States: 0 = neutral, 1 = last token was 1, 2 = last token was 2 (accepting)."""
    D = cz.DEAD
    transition = torch.tensor([[0, 1, 2],    # from 0
                               [D, 1, 2],    # from 1: a 0 kills it
                               [0, 1, 2]])   # from 2: as from 0
    return cz.DFA(transition, torch.tensor([False, False, True]))


def test_hmm_log_likelihood_matches_hmmlearn():
    lang = HMMLanguage.random(0, n_states=4, vocab_size=5, length=6)
    x = lang.sample(50, torch.Generator().manual_seed(1))
    model = CategoricalHMM(n_components=4, n_features=5)
    model.startprob_, model.transmat_, model.emissionprob_ = (lang.initial.numpy(), lang.transition.numpy(),
                                                              lang.emission.numpy())
    theirs = model.score(x.reshape(-1, 1).numpy(), lengths=[6] * 50)
    assert lang.log_likelihood(x).sum().item() == pytest.approx(theirs, rel=1e-9)


def test_em_increases_the_likelihood_and_fits_the_data():
    lang = HMMLanguage.random(2, n_states=4, vocab_size=5, length=8)
    x = lang.sample(400, torch.Generator().manual_seed(3))
    hmm, history = cz.fit_hmm(x, 6, 5, iterations=25, generator=torch.Generator().manual_seed(4), smoothing=0.0)
    assert all(b >= a - 1e-9 for a, b in zip(history, history[1:]))  # EM never decreases the likelihood
    held_out = lang.sample(400, torch.Generator().manual_seed(5))
    fitted, truth = hmm.log_likelihood(held_out).mean().item(), lang.log_likelihood(held_out).mean().item()
    uniform = 8 * np.log(1 / 5)
    assert fitted > uniform + 0.8 * (truth - uniform)
    model = CategoricalHMM(n_components=6, n_features=5)
    model.startprob_, model.transmat_, model.emissionprob_ = hmm.initial.numpy(), hmm.transition.numpy(), hmm.emission.numpy()
    assert hmm.log_likelihood(x).mean().item() == pytest.approx(model.score(x.reshape(-1, 1).numpy(), [8] * 400) / 400)


def test_format_weights_match_brute_force():
    hmm = HMMLanguage.random(6, n_states=3, vocab_size=3, length=5, branching=3, emissions=3)
    dfa = _dfa_ends_with_2_no_0_after_1()
    length = 5
    beta = cz.format_backward(hmm, dfa, length)
    strings = torch.tensor(list(itertools.product(range(3), repeat=length)))
    prob = hmm.log_likelihood(strings).exp()
    ok = torch.tensor([dfa.accepts(s.tolist()) for s in strings])
    for prefix in ([], [1], [2, 1], [1, 1, 2, 0]):
        t = len(prefix)
        weights = cz.format_weights(hmm, dfa, beta, torch.tensor(prefix, dtype=torch.long))
        for v in range(3):
            match = (strings[:, :t + 1] == torch.tensor(prefix + [v])).all(1)
            expected = (prob * match * ok).sum() / (prob * match).sum()
            assert weights[v].item() == pytest.approx(expected.item(), abs=1e-12), (prefix, v)
    # at the start, the backward pass is P(format) itself
    total = (beta[0] * hmm.initial[:, None]).sum(0)[dfa.start]
    assert total.item() == pytest.approx((prob * ok).sum().item())


def test_constrained_decoding_always_complies_and_is_neutral_without_a_format():
    hmm = HMMLanguage.random(7, n_states=3, vocab_size=3, length=6)
    hmm = HMMLanguage(hmm.initial * 0.9 + 0.1 / 3, hmm.transition * 0.9 + 0.1 / 3, hmm.emission * 0.9 + 0.1 / 3, 6)
    dfa = _dfa_ends_with_2_no_0_after_1()
    beta, ok = cz.format_backward(hmm, dfa, 6), cz.reachable(dfa, 6)
    gen = torch.Generator().manual_seed(8)
    lm = torch.softmax(torch.randn(3, generator=gen, dtype=torch.float64), 0)
    for use_hmm in (True, False):
        for _ in range(50):
            x = torch.zeros(0, dtype=torch.long)
            for _ in range(6):
                p = cz.constrained_probs(lm, x, dfa, 6, hmm=hmm if use_hmm else None, beta=beta, ok=ok)
                x = torch.cat([x, torch.multinomial(p, 1, generator=gen)])
            assert dfa.accepts(x.tolist())
    free = cz.DFA(torch.zeros(1, 3, dtype=torch.long), torch.tensor([True]))
    free_beta = cz.format_backward(hmm, free, 6)
    torch.testing.assert_close(cz.constrained_probs(lm, torch.tensor([1, 2]), free, 6, hmm=hmm, beta=free_beta), lm)


def test_a_broken_prefix_is_refused_by_both_decoders():
    hmm = HMMLanguage.random(9, n_states=3, vocab_size=3, length=4)
    dfa = _dfa_ends_with_2_no_0_after_1()
    lm = torch.full((3,), 1 / 3, dtype=torch.float64)
    for kwargs in ({"hmm": hmm}, {}):
        with pytest.raises(ValueError, match="breaks the format"):
            cz.constrained_probs(lm, torch.tensor([1, 0]), dfa, 4, **kwargs)


def test_decode_appends_tokens_free_masked_or_reweighted():
    hmm = HMMLanguage.random(10, n_states=3, vocab_size=3, length=5)
    dfa = _dfa_ends_with_2_no_0_after_1()
    beta, ok = cz.format_backward(hmm, dfa, 5), cz.reachable(dfa, 5)
    lm = torch.softmax(torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64), 0)  # the LM prefers 0, then 1

    def next_probs(x):
        return lm.expand(len(x), -1)

    prompts = torch.tensor([[1, 1], [2, 0]])
    free = cz.decode(next_probs, prompts, 5, greedy=True)
    assert free.shape == (2, 7) and torch.equal(free[:, :2], prompts) and (free[:, 2:] == 0).all()
    for kwargs in ({"ok": ok}, {"hmm": hmm, "beta": beta}):
        for greedy in (True, False):
            out = cz.decode(next_probs, prompts, 5, torch.Generator().manual_seed(11), dfa=dfa, greedy=greedy,
                            **kwargs)
            assert torch.equal(out[:, :2], prompts)
            assert all(dfa.accepts(row) for row in out[:, 2:].tolist()), (kwargs.keys(), greedy)
    # hard masking keeps the LM's preference wherever the format stays reachable
    hard = cz.decode(next_probs, prompts, 5, dfa=dfa, ok=ok, greedy=True)
    assert hard[0, 2:].tolist() == [0, 0, 0, 0, 2]


def test_format_weights_with_a_prompt_context_match_brute_force():
    """An HMM over prompt + answer: the weights read the prompt, and the format applies to the answer only."""
    prompt_length, length = 2, 3
    hmm = HMMLanguage.random(7, n_states=3, vocab_size=3, length=prompt_length + length, branching=3, emissions=3)
    dfa = _dfa_ends_with_2_no_0_after_1()
    beta = cz.format_backward(hmm, dfa, length)
    strings = torch.tensor(list(itertools.product(range(3), repeat=prompt_length + length)))
    prob = hmm.log_likelihood(strings).exp()
    ok = torch.tensor([dfa.accepts(s[prompt_length:].tolist()) for s in strings])
    for context, prefix in (([0, 1], []), ([2, 2], [1]), ([1, 0], [2, 1])):
        t = prompt_length + len(prefix)
        weights = cz.format_weights(hmm, dfa, beta, torch.tensor(prefix, dtype=torch.long),
                                    context=torch.tensor(context))
        for v in range(3):
            match = (strings[:, :t + 1] == torch.tensor(context + prefix + [v])).all(1)
            expected = (prob * match * ok).sum() / (prob * match).sum()
            assert weights[v].item() == pytest.approx(expected.item(), abs=1e-12), (context, prefix, v)
