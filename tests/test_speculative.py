"""Speculative sampling: exact output law, the verification rule against transformers', block efficiency."""

import itertools

import pytest
import torch
from scipy import stats
from transformers.generation.utils import _speculative_sampling

from distillbook.speculative import (acceptance_rate, block_efficiency, speculative_sample, verification_law,
                                     verify)
from distillbook.testbeds.grammar import HMMLanguage


def _random_probs(v, gen, rows=1):
    return torch.softmax(2 * torch.randn(rows, v, generator=gen, dtype=torch.float64), dim=-1)


def test_acceptance_rate_is_one_minus_total_variation():
    gen = torch.Generator().manual_seed(0)
    p, q = _random_probs(6, gen, 5), _random_probs(6, gen, 5)
    torch.testing.assert_close(acceptance_rate(p, q), 1 - 0.5 * (p - q).abs().sum(-1))
    torch.testing.assert_close(acceptance_rate(p, p), torch.ones(5, dtype=torch.float64))


def test_first_emitted_token_follows_the_target_exactly():
    """Averaged over the draft token d ~ q, the verification law's first token is distributed as p."""
    gen = torch.Generator().manual_seed(1)
    v = 5
    p, q = _random_probs(v, gen, 2), _random_probs(v, gen, 1)
    first = torch.zeros(v, dtype=torch.float64)
    for d in range(v):
        law = verification_law(p, q, torch.tensor([d]))
        assert law.sum().item() == pytest.approx(1.0)
        first += q[0, d] * law[0]               # rejected: the token comes from the residual
        first[d] += q[0, d] * law[1].sum()      # accepted: the token is d
    torch.testing.assert_close(first, p[0])


def test_verification_matches_transformers_speculative_sampling():
    """The law of (accepted drafts, next token) for fixed drafts: ours exactly, transformers' and ours by sampling."""
    gen = torch.Generator().manual_seed(2)
    v, gamma = 4, 3
    p, q = _random_probs(v, gen, gamma + 1), _random_probs(v, gen, gamma)
    draft = torch.tensor([0, 2, 1])
    law = verification_law(p, q, draft)
    n = 20000
    ours, theirs = torch.zeros_like(law), torch.zeros_like(law)
    torch.manual_seed(0)  # transformers draws from the global generator
    for _ in range(n):
        tokens, accepted = verify(p, q, draft, gen)
        assert len(tokens) == accepted + 1
        ours[len(tokens) - 1, tokens[-1]] += 1 / n
        valid, n_matches = _speculative_sampling(draft[None], q.log()[None], gamma, p.log()[None])
        theirs[int(n_matches), valid[0, -1]] += 1 / n
        assert torch.equal(valid[0, :-1], draft[:int(n_matches)])
    assert (ours - law).abs().max() < 0.012
    assert (theirs - law).abs().max() < 0.012


def _hmm_next_probs(lang: HMMLanguage):
    def next_probs(x):
        belief, rows = lang.initial, []
        for t in range(len(x) + 1):
            rows.append(belief @ lang.emission)
            if t < len(x):
                joint = belief * lang.emission[:, x[t]]
                belief = (joint / joint.sum()) @ lang.transition
        return torch.stack(rows)
    return next_probs


def test_speculative_strings_follow_the_target_law():
    target = HMMLanguage.random(0, n_states=4, vocab_size=3, length=3, branching=2, emissions=2)
    draft = HMMLanguage.random(1, n_states=4, vocab_size=3, length=3, branching=3, emissions=3)
    strings = torch.tensor(list(itertools.product(range(3), repeat=3)))
    exact = target.log_likelihood(strings).exp()
    index = {tuple(s.tolist()): i for i, s in enumerate(strings)}
    gen = torch.Generator().manual_seed(3)
    n = 8000
    counts = torch.zeros(len(strings), dtype=torch.float64)
    for _ in range(n):
        out = speculative_sample(_hmm_next_probs(target), _hmm_next_probs(draft), torch.zeros(0, dtype=torch.long),
                                 3, gamma=2, generator=gen)
        counts[index[tuple(out.tokens.tolist())]] += 1
    assert 0.5 * (counts / n - exact).abs().sum() < 0.03  # total variation, MC error about 0.01
    # the draft alone would be far off
    assert 0.5 * (draft.log_likelihood(strings).exp() - exact).abs().sum() > 0.2


def test_measured_block_efficiency_matches_the_formula_at_constant_alpha():
    gen = torch.Generator().manual_seed(4)
    p, q = _random_probs(6, gen)[0], _random_probs(6, gen)[0]
    constant = lambda dist: (lambda x: dist.expand(len(x) + 1, -1))  # noqa: E731  prefix-independent
    alpha = acceptance_rate(p, q)
    for gamma in (1, 4):
        out = speculative_sample(constant(p), constant(q), torch.zeros(0, dtype=torch.long), 6000, gamma, gen)
        assert out.tokens_per_call == pytest.approx(block_efficiency(alpha, gamma).item(), rel=0.04)
    same = speculative_sample(constant(p), constant(p), torch.zeros(0, dtype=torch.long), 50, 4, gen)
    assert all(n == 4 for n in same.accepted) and same.tokens_per_call == 5


def test_block_efficiency_edges_and_errors():
    assert block_efficiency(1.0, 4).item() == 5
    assert block_efficiency(0.0, 4).item() == 1
    assert block_efficiency(0.5, 1).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="gamma"):
        block_efficiency(0.5, 0)
    with pytest.raises(ValueError, match="draft rows"):
        verify(torch.ones(2, 3) / 3, torch.ones(2, 3) / 3, torch.tensor([0]), torch.Generator())


def test_transformers_assisted_generation_samples_the_target_law():
    """The end-to-end counterpart: transformers' generate(assistant_model=...) with sampling draws 3-token
    strings from the target's exact law, as our speculative_sample does (both checked against enumeration)."""
    from distillbook.models.lm import tiny_gpt2

    torch.manual_seed(0)
    vocab, bos = 3, 3
    target, draft = tiny_gpt2(vocab + 1, 16, 1, max_length=12).eval(), tiny_gpt2(vocab + 1, 8, 1, max_length=12).eval()
    for m in (target, draft):
        m.generation_config.pad_token_id = bos
        with torch.no_grad():
            m.transformer.ln_f.weight.mul_(8)  # peaked, distinct laws (random inits are near uniform)
    strings = torch.tensor(list(itertools.product(range(vocab + 1), repeat=3)))  # every token, BOS included

    def law(model):
        with torch.no_grad():
            logits = model(input_ids=torch.cat([torch.full((len(strings), 1), bos), strings], 1)).logits.double()
        logp = torch.log_softmax(logits, -1)
        return logp[torch.arange(len(strings))[:, None], torch.arange(3), strings].sum(1).exp()

    exact = law(target)
    index = {tuple(s.tolist()): i for i, s in enumerate(strings)}
    n = 1500
    counts = torch.zeros(len(strings), dtype=torch.float64)
    torch.manual_seed(1)
    prompt = torch.tensor([[bos]])
    for _ in range(n):
        out = target.generate(prompt, assistant_model=draft, do_sample=True, max_new_tokens=3, min_new_tokens=3,
                              top_k=0, num_assistant_tokens=2, num_assistant_tokens_schedule="constant")
        counts[index[tuple(out[0, 1:4].tolist())]] += 1
    fits = lambda probs: stats.chisquare(counts, probs * n / probs.sum()).pvalue  # noqa: E731
    assert fits(exact) > 1e-3          # consistent with the target's law
    assert fits(law(draft)) < 1e-6     # and the test has the power to reject the draft's
