"""The chapter's cross-tokenizer losses (ALM, ULD, their wiring), chunk alignment, the data regimes, and its claims."""

import math

import numpy as np
import pytest
import torch

from distillbook.chapters import lm_kd_dynamics
from distillbook.chapters.lm_kd_dynamics import proxy_fall_after_golden_minimum
from distillbook.core.results import Run
from distillbook.methods.cross_tokenizer import alm_loss, cross_tokenizer_loss, encode_bpe, token_log_probs, uld_term
from distillbook.methods.kd import regime_batches
from distillbook.models.lm import tiny_gpt2
from distillbook.testbeds.grammar import ALPHABET, HMMLanguage, golden_kl, to_strings, train_bpe


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


def test_cross_tokenizer_loss_wires_each_method():
    """ntp is -mean log q(x); uld adds weight * ULD on the student's probabilities; alm is ALM on char log-probs."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, dtype=torch.float64)
    x = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 1]])
    chunk = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 2]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    teacher_logp = torch.log_softmax(torch.randn(2, 3, 5, dtype=torch.float64), -1)
    chunk_logp = token_log_probs(teacher_logp, torch.tensor([[1, 4, 0], [3, 3, 2]]))
    kw = dict(chunk=chunk, teacher_chunk_logp=chunk_logp, teacher_probs=teacher_logp.exp(), mask=mask)
    logp = torch.log_softmax(logits, -1)
    char_logp = torch.stack([logp[i, t, x[i, t]] for i in range(2) for t in range(4)]).reshape(2, 4)
    assert chunk_logp[0, 1] == teacher_logp[0, 1, 4]
    ntp = cross_tokenizer_loss("ntp", logits, x, knob=None, **kw)
    assert ntp.item() == pytest.approx(-char_logp.mean().item())
    uld = cross_tokenizer_loss("uld", logits, x, knob=0.5, **kw)
    assert uld.item() == pytest.approx(ntp.item() + 0.5 * uld_term(logp.exp(), teacher_logp.exp(), mask).item())
    alm = cross_tokenizer_loss("alm", logits, x, knob=2.0, **kw)
    assert alm.item() == pytest.approx(alm_loss(char_logp, chunk, chunk_logp, mask, 2.0).item())
    both = cross_tokenizer_loss("alm_ntp", logits, x, knob=2.0, **kw)  # the paper's combined setting
    assert both.item() == pytest.approx(ntp.item() + alm.item())
    with pytest.raises(ValueError, match="method='nope'"):
        cross_tokenizer_loss("nope", logits, x, knob=1.0, **kw)


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


# Claim wiring (moved from test_chapter_claims.py): made-up per-seed numbers reach every verdict of every claim
SEEDS = [0, 1, 2, 3]
N_EVALS = 12
SPREAD = np.array([0.0, 1.0, -1.0, 0.5])  # a per-seed pattern whose t-interval is wide


def _ramp(seed: int, k: float, n: int) -> np.ndarray:
    """Seed- and arm-specific noise that grows along the curve, so that no statistic is the same in every seed."""
    return 0.0001 * k * ((seed * 7919) % 5 + 1) * np.linspace(0.0, 1.0, n)


def _curve(values, seed, k=1.0):
    values = np.asarray(values, dtype=float)
    return (values + _ramp(seed, k, len(values))).tolist()


def _u_curve(depth):
    """Falls from 1 to 0.3 by evaluation 3, then plateaus at 0.3 * (1 + depth): relative U-depth = depth."""
    top = 0.3 * (1 + depth)
    return [1.0, 0.6, 0.4, 0.3, (0.3 + top) / 2] + [top] * (N_EVALS - 5)


def _flat(level):
    return [1.0, 0.6, 0.4, 0.3 + (level - 0.3) / 2] + [level] * (N_EVALS - 4)


FALLING = np.linspace(1.0, 0.45, N_EVALS).tolist()  # still moving at the end, above the teacher floor: not converged
CONVERGED_BPC = [2.505, 2.5, 2.5, 2.5, 2.5, 2.5]  # 6 evaluations, as the profiles record: flat over both windows


def _variant(kind: str, s: int) -> dict:
    """Per-seed metrics of one seed for the variant that should give ``kind`` for every claim."""
    if kind == "reproduced":
        off, off_proxy = _u_curve(0.4), _flat(0.15)
        oracle, online, on_policy, large = _flat(0.3), _flat(0.27), _flat(0.27), _flat(0.3)
        capacity = [0.4, 0.25, 0.35]
        alm = (np.asarray(CONVERGED_BPC) - 0.2).tolist()
    elif kind == "not reproduced":
        off, off_proxy = _flat(0.3), _flat(0.15)
        oracle, online, on_policy, large = _u_curve(0.4), _flat(0.35), _flat(0.35), _flat(0.35)
        capacity = [0.4, 0.3, 0.25]
        alm = (np.asarray(CONVERGED_BPC) + 0.2).tolist()
    else:  # seed-to-seed spread straddling the decision line, or curves still moving at the end
        depth = 0.06 + 0.06 * SPREAD[s]
        off, off_proxy = _u_curve(depth), FALLING
        oracle, online, on_policy, large = _flat(0.3), _flat(0.31), _flat(0.31), _flat(0.31)
        capacity = [0.4, 0.3, 0.3 * (1 + depth)]
        alm = (np.asarray(CONVERGED_BPC) - 0.01 - 0.02 * SPREAD[s]).tolist()  # compared at equal steps
    xtok = {"ntp": CONVERGED_BPC, "uld": CONVERGED_BPC, "alm": alm, "alm_ntp": alm, "alm_debiased": alm}
    return {
        "teacher_golden": 0.27, "oracle_bits_per_char": 1.8,
        "hacking_offline4_golden": _curve(off, s, 1), "hacking_offline4_proxy": _curve(off_proxy, s, 2),
        "hacking_offline16_golden": _curve(large, s, 3), "hacking_oracle4_golden": _curve(oracle, s, 4),
        "hacking_online_golden": _curve(online, s, 5), "hacking_on_policy_golden": _curve(on_policy, s, 6),
        "capacity_s4_golden": _curve(capacity, s, 7), "capacity_s8_golden": _curve(capacity, s, 8),
        "capacity_s4_drift": 0.001, "capacity_s8_drift": 0.001,
        **{f"xtok_{m}_bpc_curve": _curve(c, s, 9 + i) for i, (m, c) in enumerate(xtok.items())},
    }


@pytest.mark.parametrize("kind", ["reproduced", "not reproduced", "inconclusive"])
def test_lm_kd_claims_reach_every_verdict(scratch, kind):
    params = lm_kd_dynamics.Params.for_profile("smoke", seeds=SEEDS)  # offline sizes [4, 16], students [4, 8]
    run = Run("lm-kd-dynamics", params)
    for s in SEEDS:
        run.record(s, **_variant(kind, s))
    results = lm_kd_dynamics.evaluate_claims(run)
    assert [r["id"] for r in results] == [c.id for c in lm_kd_dynamics.claims(params)]
    assert {r["id"]: r["verdict"] for r in results} == {r["id"]: kind for r in results}
    if kind == "inconclusive":
        reasons = {r["id"]: r["reason"] for r in results}
        for cid in ("offline-golden-turns-up", "online-beats-offline", "on-policy-beats-offline", "alm-beats-uld",
                    "alm-beats-next-token"):
            assert reasons[cid] == "interval spans the region", cid  # compared at equal steps: never "not converged"


def test_capacity_claim_is_judged_per_student_size(scratch):
    """One student size with a U and one without: the claim is not reproduced, with a verdict per size."""
    params = lm_kd_dynamics.Params.for_profile("smoke", seeds=SEEDS)
    run = Run("lm-kd-dynamics", params)
    for s in SEEDS:
        metrics = _variant("reproduced", s)
        metrics["capacity_s8_golden"] = _curve([0.4, 0.3, 0.25], s, 8)
        run.record(s, **metrics)
    result = {r["id"]: r for r in lm_kd_dynamics.evaluate_claims(run)}["capacity-gap-u-shape"]
    assert result["verdict"] == "not reproduced"
    assert {g: r["verdict"] for g, r in result["groups"].items()} == {"student width 4": "reproduced",
                                                                      "student width 8": "not reproduced"}


def test_relative_u_depth_against_its_closed_form():
    curves = np.array([[1.0, 0.5, 0.4, 0.6, 0.7, 0.8], [1.2, 0.45, 0.5, 0.55, 0.6, 0.9],
                       [0.9, 0.6, 0.3, 0.3, 0.3, 0.3]])
    # window 3: interior arg-min over indices 1..2 of the other seeds' mean curve
    # seed 0: others' mean [.., 0.525, 0.4] -> k = 2; end = mean(0.6, 0.7, 0.8) = 0.7
    # seed 1: others' mean [.., 0.55, 0.35] -> k = 2; end = mean(0.55, 0.6, 0.9) = 0.6833
    # seed 2: others' mean [.., 0.475, 0.45] -> k = 2; end = 0.3
    expected = [min(1.0 - 0.4, 0.7 - 0.4) / 0.4, min(1.2 - 0.5, (0.55 + 0.6 + 0.9) / 3 - 0.5) / 0.5,
                min(0.9 - 0.3, 0.0) / 0.3]
    assert lm_kd_dynamics.relative_u_depth(curves, window=3).tolist() == pytest.approx(expected)
    # window 1 on a 3-point sweep: the only interior point is the minimum
    assert lm_kd_dynamics.relative_u_depth([[0.4, 0.2, 0.3], [0.5, 0.25, 0.2]]).tolist() == pytest.approx(
        [min(0.2, 0.1) / 0.2, min(0.25, -0.05) / 0.25])
    proxy = np.array([[1.0, 0.8, 0.6, 0.5, 0.4, 0.3], [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], [1.0, 0.5, 0.5, 0.5, 0.5, 0.5]])
    drop = lm_kd_dynamics.proxy_fall_after_golden_minimum(curves, proxy, window=3, relative=True)
    assert drop.tolist() == pytest.approx([(0.6 - 0.4) / 0.6, (0.8 - 0.6) / 0.8, 0.0])
    with pytest.raises(ValueError, match="window"):
        lm_kd_dynamics.relative_u_depth(curves[:, :4], window=3)


@pytest.mark.parametrize("field", ["student_dim", "xtok_teacher_dim", "xtok_student_dim"])
def test_lm_kd_widths_must_suit_two_heads(field):
    from distillbook.core.params import ParameterError

    with pytest.raises(ParameterError, match="even and >= 4"):
        lm_kd_dynamics.Params.for_profile("smoke", **{field: 15})
    with pytest.raises(ParameterError, match="even and >= 4"):
        lm_kd_dynamics.Params.for_profile("smoke", capacity_student_dims=[4, 15])
    with pytest.raises(ParameterError, match="even and >= 4"):
        lm_kd_dynamics.Params.for_profile("smoke", capacity_teacher_dims=[0, 2, 4])


# ---------------------------------------------------------------- the teacher-hacking test bed


def test_confidently_wrong_teacher_reverses_states_and_keeps_their_entropy():
    from distillbook.chapters.lm_kd_dynamics.experiment import confidently_wrong

    lang = HMMLanguage.random(0, n_states=16, vocab_size=12, length=16)
    teacher, wrong = confidently_wrong(lang, 0.15, torch.Generator().manual_seed(1))
    assert wrong and len(wrong) < lang.n_states
    for s in range(lang.n_states):
        a, b = lang.emission[s], teacher.emission[s]
        assert torch.equal(a.sort().values, b.sort().values)  # a permutation: same sharpness
        if s in wrong:
            support = a > 0
            least = lambda v: torch.where(support, v, torch.inf).argmin()  # noqa: E731 (within the support)
            assert torch.equal(support, b > 0) and a.argmax() == least(b) and least(a) == b.argmax()
        else:
            assert torch.equal(a, b)
    x = lang.sample(512, torch.Generator().manual_seed(2))
    kl = float(golden_kl(lang.next_token_probs(x), teacher.next_token_probs(x).clamp_min(1e-30).log()).mean())
    assert 0 < kl <= 0.2  # within the budget, up to the probe strings' sampling noise
    with pytest.raises(ValueError, match="teacher_golden_kl"):
        confidently_wrong(lang, 1e-9, torch.Generator().manual_seed(1))


def test_state_beliefs_give_the_oracle_next_token_probs():
    from distillbook.chapters.lm_kd_dynamics.experiment import state_beliefs

    lang = HMMLanguage.random(3, n_states=8, vocab_size=6, length=10)
    x = lang.sample(20, torch.Generator().manual_seed(0))
    beliefs = state_beliefs(lang, x)
    torch.testing.assert_close(beliefs.sum(-1), torch.ones(20, 10, dtype=torch.float64))
    torch.testing.assert_close(beliefs @ lang.emission, lang.next_token_probs(x))


def test_golden_split_with_equal_weights_is_the_golden_kl():
    from distillbook.chapters.lm_kd_dynamics import Bed, Params
    from distillbook.chapters.lm_kd_dynamics.experiment import golden, golden_split

    bed = Bed(Params.for_profile("smoke"))
    torch.manual_seed(0)
    model = tiny_gpt2(bed.V + 1, 8, 1, max_length=bed.length + 1)
    at_wrong, at_right = golden_split(bed, model, torch.full(bed.golden_x.shape, 0.5, dtype=torch.float64))
    assert at_wrong == pytest.approx(golden(bed, model)) and at_right == pytest.approx(golden(bed, model))
    # all weight on the first position: the golden KL there alone
    w = torch.zeros(bed.golden_x.shape, dtype=torch.float64)
    w[:, 0] = 1.0
    with torch.no_grad():
        first = golden_kl(bed.golden_probs[:, :1], symbol_logits_of(model, bed)[:, :1]).mean()
    assert golden_split(bed, model, w)[0] == pytest.approx(float(first))


def symbol_logits_of(model, bed):
    from distillbook.chapters.lm_kd_dynamics import symbol_logits

    return symbol_logits(model, bed, bed.golden_x)


def test_emission_floor_scores_any_string():
    from distillbook.chapters.lm_kd_dynamics.experiment import hmm_targets, with_emission_floor

    lang = HMMLanguage.random(0, n_states=8, vocab_size=6, length=8)
    random = torch.randint(0, 6, (50, 8), generator=torch.Generator().manual_seed(0))
    impossible = random[~lang.valid(random)]  # strings this sparse oracle cannot produce
    assert len(impossible) > 0
    with pytest.raises(ValueError, match="probability 0"):
        hmm_targets(lang)(impossible)
    targets = hmm_targets(with_emission_floor(lang))(impossible)
    assert torch.isfinite(targets).all() and targets.exp().sum(-1).allclose(torch.ones(len(impossible), 8))


# ---------------------------------------------------------------- chunk debiasing


def test_extension_matrix_and_debiased_chunk_probabilities():
    from distillbook.methods.cross_tokenizer import debiased_token_log_probs, extension_matrix

    class Vocab:  # tokens "<bos>", "a", "b", "ab", "abb"
        def get_vocab(self):
            return {"<bos>": 0, "a": 1, "b": 2, "ab": 3, "abb": 4}

    extends = extension_matrix(Vocab())
    assert extends[1].tolist() == [False, True, False, True, True]  # "a" is extended by "ab" and "abb"
    assert extends[3].tolist() == [False, False, False, True, True]
    assert extends[0].tolist() == [True, False, False, False, False]
    probs = torch.tensor([[[0.0, 0.2, 0.3, 0.4, 0.1], [0.0, 0.5, 0.1, 0.2, 0.2]]], dtype=torch.float64)
    ids = torch.tensor([[1, 3]])
    out = debiased_token_log_probs(probs.log(), ids, extends)
    torch.testing.assert_close(out.exp(), torch.tensor([[0.2 + 0.4 + 0.1, 0.2 + 0.2]], dtype=torch.float64))
    # with no token extending another, debiasing is the identity
    plain = debiased_token_log_probs(probs.log(), ids, torch.eye(5, dtype=torch.bool))
    torch.testing.assert_close(plain, token_log_probs(probs.log(), ids))
