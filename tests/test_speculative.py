"""Speculative sampling: exact output law, the verification rule against transformers', block efficiency."""

import itertools
import math

import pytest
import torch
from scipy import stats
from transformers.generation.utils import _speculative_sampling

from distillbook.methods.kd import DIVERGENCES
from distillbook.methods.speculative import (acceptance_rate, block_efficiency, draft_distillation_loss, lm_next_probs,
                                             measured_block_efficiency, speculative_sample, verification_law, verify)
from distillbook.models.lm import tiny_gpt2
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


def _constant(dist):
    """A prefix-independent model: the same next-token distribution after every prefix."""
    def next_probs(x):
        return dist.expand(len(x) + 1, -1)
    return next_probs


def test_measured_block_efficiency_matches_the_formula_at_constant_alpha():
    gen = torch.Generator().manual_seed(4)
    p, q = _random_probs(6, gen)[0], _random_probs(6, gen)[0]
    constant = _constant
    alpha = acceptance_rate(p, q).item()
    for gamma in (1, 4):
        out = speculative_sample(constant(p), constant(q), torch.zeros(0, dtype=torch.long), 6000, gamma, gen)
        closed_form = (1 - alpha ** (gamma + 1)) / (1 - alpha)
        assert block_efficiency(alpha, gamma).item() == pytest.approx(closed_form)
        assert out.tokens_per_call == pytest.approx(closed_form, rel=0.04)
    same = speculative_sample(constant(p), constant(p), torch.zeros(0, dtype=torch.long), 50, 4, gen)
    assert all(n == 4 for n in same.accepted) and same.tokens_per_call == 5


def test_block_efficiency_edges_and_errors():
    assert block_efficiency(1.0, 4).item() == 5
    assert block_efficiency(0.0, 4).item() == 1
    assert block_efficiency(0.5, 1).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="gamma"):
        block_efficiency(0.5, 0)
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"^alpha must lie in \[0, 1\]$"):
            block_efficiency(alpha, 2)
    with pytest.raises(ValueError, match="^1 draft tokens need 2 target rows and 1 draft rows, got 2 and 2$"):
        verify(torch.ones(2, 3) / 3, torch.ones(2, 3) / 3, torch.tensor([0]), torch.Generator())
    with pytest.raises(ValueError, match=r"^p and q must have the same shape, got \(2, 3\) and \(3, 3\)$"):
        acceptance_rate(torch.ones(2, 3) / 3, torch.ones(3, 3) / 3)


def test_verify_draws_only_from_its_generator():
    """Same seed, same tokens, whatever the global RNG does in between: acceptance draws, residual draws and the
    bonus draw all come from ``generator`` (all three happen in these 300 rounds)."""
    gamma = 2
    p = torch.tensor([[0.4, 0.35, 0.25], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]], dtype=torch.float64)
    q = torch.tensor([[0.6, 0.2, 0.2], [0.3, 0.4, 0.3]], dtype=torch.float64)
    drafts = torch.tensor([0, 1])  # accepted with 2/3 then 1; a rejection resamples from (0, 3/4, 1/4)

    def rounds(global_seed):
        torch.manual_seed(global_seed)
        local = torch.Generator().manual_seed(0)
        return [verify(p, q, drafts, local) for _ in range(300)]

    first, second = rounds(1), rounds(2)
    counts = [sum(n == k for _, n in first) for k in (0, gamma)]
    assert min(counts) > 50, counts  # rejections (residual draws) and full acceptances (bonus draws)
    for (a, n), (b, m) in zip(first, second):
        assert n == m and torch.equal(a, b)


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
    def fits(probs):
        return stats.chisquare(counts, probs * n / probs.sum()).pvalue

    assert fits(exact) > 1e-3          # consistent with the target's law
    assert fits(law(draft)) < 1e-6     # and the test has the power to reject the draft's


# --- the bonus token and block efficiency, against exact laws with position-dependent rows ---------------------

def _position_table(rows):
    """A model whose next-token law depends only on the position: row i of ``rows`` after any i tokens."""
    def next_probs(x):
        assert len(x) < len(rows), "the table is too short for this prefix"
        return rows[:len(x) + 1]
    return next_probs


def test_bonus_token_is_drawn_from_the_row_after_the_last_draft():
    """When every draft is accepted (q = p on the draft rows, so min(1, p/q) = 1), the extra token follows
    p[gamma] and no other row. Row j lives on tokens {2j, 2j + 1}, so a token from any other row is out of
    support; the frequencies inside the support are then checked against p[gamma] itself."""
    gen = torch.Generator().manual_seed(5)
    for gamma in (1, 2, 4):
        v = 2 * (gamma + 1)
        p = torch.zeros(gamma + 1, v, dtype=torch.float64)
        for j in range(gamma + 1):
            p[j, 2 * j], p[j, 2 * j + 1] = 0.25, 0.75
        q = p[:gamma].clone()
        draft = torch.tensor([2 * j + (j % 2) for j in range(gamma)])
        law = verification_law(p, q, draft)
        assert law.shape == (gamma + 1, v)
        torch.testing.assert_close(law[gamma], p[gamma])  # the exact law: all accepted, then a p[gamma] token
        assert law[:gamma].abs().max().item() == 0
        n, ones = 2000, 0
        for _ in range(n):
            tokens, accepted = verify(p, q, draft, gen)
            assert accepted == gamma and torch.equal(tokens[:gamma], draft)
            assert int(tokens[-1]) in (2 * gamma, 2 * gamma + 1), (gamma, tokens)
            ones += int(tokens[-1]) == 2 * gamma + 1
        assert stats.binomtest(ones, n, 0.75).pvalue > 1e-3


def test_speculative_strings_follow_position_dependent_target_rows_exactly():
    """Target rows that differ strongly from position to position, a draft close to them (so that both drafts of
    a round are often accepted and the bonus token often comes from p(. | x, d_1, d_2)): the law of the 3-token
    string is the product of the target's rows, by a chi-square test with the power to tell the third position
    from the second (a bonus token from the wrong row shifts most of the mass of the third token)."""
    uniform = torch.full((2, 3), 1 / 3, dtype=torch.float64)  # positions 3 and 4, seen by a last round's proposal
    p = torch.cat([torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64), uniform])
    q = 0.8 * p + 0.2 * torch.cat([torch.tensor([[0.1, 0.2, 0.7], [0.7, 0.1, 0.2], [0.2, 0.7, 0.1]],
                                                dtype=torch.float64), uniform])
    strings = list(itertools.product(range(3), repeat=3))
    exact = torch.tensor([float(p[0, a] * p[1, b] * p[2, c]) for a, b, c in strings], dtype=torch.float64)
    wrong_bonus = torch.tensor([float(p[0, a] * p[1, b] * p[1, c]) for a, b, c in strings], dtype=torch.float64)
    index = {s: i for i, s in enumerate(strings)}
    gen = torch.Generator().manual_seed(6)
    n = 4000
    counts = torch.zeros(len(strings), dtype=torch.float64)
    all_accepted = 0
    for _ in range(n):
        out = speculative_sample(_position_table(p), _position_table(q), torch.zeros(0, dtype=torch.long), 3,
                                 gamma=2, generator=gen)
        counts[index[tuple(out.tokens.tolist())]] += 1
        all_accepted += out.accepted[0] == 2
    assert all_accepted > 0.4 * n  # the bonus token is drawn in a large share of the samples
    def fits(probs):
        return stats.chisquare(counts, probs * n).pvalue

    assert fits(exact) > 1e-3
    assert fits(0.5 * exact + 0.5 * wrong_bonus) < 1e-6  # the power to see half the bonus tokens misdrawn


def test_block_efficiency_closed_form_at_iid_acceptance():
    """E[tokens per block] = sum_k alpha^k (k = 0..gamma) = (1 - alpha^(gamma + 1)) / (1 - alpha)."""
    for alpha in (0.0, 0.1, 0.37, 0.5, 0.9, 0.999):
        for gamma in (1, 2, 5):
            series = sum(alpha ** k for k in range(gamma + 1))
            closed = (1 - alpha ** (gamma + 1)) / (1 - alpha)
            assert block_efficiency(alpha, gamma).item() == pytest.approx(closed, rel=1e-12)
            assert closed == pytest.approx(series, rel=1e-9)
    torch.testing.assert_close(block_efficiency(torch.tensor([0.2, 0.6]), 3),
                               torch.tensor([1 + 0.2 + 0.04 + 0.008, 1 + 0.6 + 0.36 + 0.216], dtype=torch.float64))


def test_accepted_drafts_follow_the_exact_law_at_position_varying_acceptance():
    """With rows that depend on the position, draft j is accepted with alpha_j = sum_v min(p_j, q_j) whatever came
    before, so in one round P(n accepted) = alpha_0 ... alpha_(n-1) (1 - alpha_n) (n < gamma), P(gamma) the full
    product, and E[tokens] = sum_k prod_(j<k) alpha_j: measured over single rounds from the empty prefix."""
    gamma = 3
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.5, 0.25, 0.25]], dtype=torch.float64)
    q = torch.tensor([[0.05, 0.15, 0.8], [0.1, 0.15, 0.75], [0.3, 0.35, 0.35]], dtype=torch.float64)
    alphas = acceptance_rate(p[:gamma], q).tolist()  # 0.3, 0.95, 0.95: far from constant
    assert alphas == pytest.approx([0.3, 0.95, 0.95])
    reach = [math.prod(alphas[:k]) for k in range(gamma + 1)]
    law = [reach[k] * (1 - alphas[k]) for k in range(gamma)] + [reach[gamma]]
    expected_tokens = sum(reach)  # 1 + 0.3 + 0.285 + 0.27075
    gen = torch.Generator().manual_seed(7)
    n = 3000
    accepted = torch.zeros(gamma + 1)
    for _ in range(n):
        out = speculative_sample(_position_table(p), _position_table(q), torch.zeros(0, dtype=torch.long), 1, gamma,
                                 gen)
        assert out.target_calls == 1
        accepted[out.accepted[0]] += 1
    assert stats.chisquare(accepted.numpy(), n * torch.tensor(law).numpy()).pvalue > 1e-3
    measured = float((accepted * torch.arange(1, gamma + 2)).sum() / n)
    assert measured == pytest.approx(expected_tokens, abs=0.05)  # MC error about 0.015
    # the i.i.d. formula at the mean acceptance rate would be off
    mean_alpha = sum(alphas) / gamma
    assert abs(block_efficiency(mean_alpha, gamma).item() - expected_tokens) > 0.5


# --- DistillSpec: the draft's distillation loss and the measured block efficiency -------------------------------

def test_draft_distillation_loss_is_the_chosen_divergence_and_spares_the_target():
    gen = torch.Generator().manual_seed(20)
    draft = torch.randn(3, 5, 7, generator=gen, requires_grad=True)
    target = torch.randn(3, 5, 7, generator=gen, requires_grad=True)
    for name in ("forward_kl", "total_variation", "jsd"):
        torch.testing.assert_close(draft_distillation_loss(draft, target, name), DIVERGENCES[name](draft, target))
    p, q = torch.softmax(target, -1), torch.softmax(draft, -1)
    # TVD = 1/2 sum_v |p - q|, mean over strings and positions
    torch.testing.assert_close(draft_distillation_loss(draft, target, "total_variation"),
                               0.5 * (p - q).abs().sum(-1).mean())
    draft_distillation_loss(draft, target, "forward_kl").backward()
    assert target.grad is None and draft.grad.abs().sum() > 0
    assert draft_distillation_loss(target, target, "forward_kl").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="divergence"):
        draft_distillation_loss(draft, target, "hellinger")


def test_measured_block_efficiency_pools_rounds_over_strings():
    gen = torch.Generator().manual_seed(21)
    p, q = _random_probs(6, gen)[0], _random_probs(6, gen)[0]
    empty = torch.zeros(0, dtype=torch.long)
    # a draft equal to the target is always accepted: gamma + 1 tokens per call
    assert measured_block_efficiency(_constant(p), _constant(p), empty, 10, 3, 4, gen) == 4
    # pooled over strings it is the total tokens over the total calls of the same runs
    first, second = torch.Generator().manual_seed(22), torch.Generator().manual_seed(22)
    runs = [speculative_sample(_constant(p), _constant(q), empty, 9, 2, first) for _ in range(5)]
    pooled = sum(sum(r.accepted) + len(r.accepted) for r in runs) / sum(r.target_calls for r in runs)
    assert measured_block_efficiency(_constant(p), _constant(q), empty, 9, 2, 5, second) == pooled


def test_lm_next_probs_reads_bos_then_the_prefix():
    torch.manual_seed(23)
    lm = tiny_gpt2(6, 8, 1, max_length=8).eval()
    x = torch.tensor([2, 0, 4])
    rows = lm_next_probs(lm, 5, bos_id=5)(x)
    assert rows.shape == (4, 5) and rows.dtype == torch.float64
    torch.testing.assert_close(rows.sum(-1), torch.ones(4, dtype=torch.float64))
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([[5, 2, 0, 4]])).logits[0, :, :5]
    torch.testing.assert_close(rows, torch.softmax(logits.double(), -1))
