"""The decoding-helpers chapter's task definitions and claim wiring."""

import torch

from distillbook.chapters.decoding_helpers import Params
from distillbook.chapters.decoding_helpers import experiment as dh


def test_deco_g_format_automaton_and_answer_formats():
    dfa = dh.format_dfa()
    A, DOT, PAD = dh.ANS_MARK, dh.DOT, dh.PAD
    for good in ([A, 7, DOT, PAD, PAD], [A, 1, 2, DOT, PAD], [A, PAD, PAD, 7, DOT], [A, PAD, 1, 2, DOT]):
        assert dfa.accepts(good), good
    for bad in ([7, PAD, PAD, PAD, PAD], [A, DOT, PAD, PAD, PAD], [A, 1, 2, 3, DOT], [PAD, 7, DOT, PAD, PAD],
                [A, 7, DOT, PAD, 3], [A, PAD, PAD, 1, 2]):
        assert not dfa.accepts(bad), bad
    answers = dh._answer_tokens(torch.tensor([7, 1, 1]), torch.tensor([1, 2, 2]), torch.tensor([0, 1, 2]))
    assert answers.tolist() == [[A, 7, DOT, PAD, PAD, PAD], [A, PAD, PAD, 1, 1, DOT], [1, 1, PAD, PAD, PAD, PAD]]
    prompts = torch.tensor([[dh.INSTRUCTED, 7, 1, dh.EQ], [dh.INSTRUCTED, 1, 2, dh.EQ], [dh.FREE, 1, 2, dh.EQ]])
    strings = torch.cat([prompts, answers], 1)
    assert dh._dg_correct(strings).tolist() == [True, True, True]
    strings[1, 8] = 3
    assert not dh._dg_correct(strings)[1]


def test_the_format_trap_the_chatty_prefix_is_allowed_but_dooms_two_digits():
    """After 'A _ _' the format is still completable (one digit), so hard masking allows it; a two-digit answer
    no longer fits."""
    from distillbook.methods import constrained

    dfa, A, PAD, DOT = dh.format_dfa(), dh.ANS_MARK, dh.PAD, dh.DOT
    ok = constrained.reachable(dfa, dh.DG_ANSWER)
    assert ok[3, dfa.run([A, PAD, PAD])]
    assert dfa.run([A, PAD, PAD, 1, 1]) != constrained.DEAD and not ok[5, dfa.run([A, PAD, PAD, 1, 1])]
    assert dfa.accepts([A, 1, 1, DOT, PAD])


def test_digit_mapping_task_and_noise():
    p = Params.for_profile("smoke")
    x = dh._digit_problems(p, 50, torch.Generator().manual_seed(0))
    assert x.shape == (50, 2 * p.dp_digits + 1) and (x[:, p.dp_digits] == dh.SEP).all()
    N = p.dp_digits
    for i in range(N):
        assert torch.equal(x[:, N + 1 + i], (3 * x[:, N - 1 - i] + 1) % 10)
    eps = dh.answer_noise(p)
    assert eps[0] == 0 and abs(eps[-1] - p.dp_noise_max) < 1e-12 and (eps.diff() > 0).all()
    x_in, targets, masked = dh._noisy_batch(p, torch.Generator().manual_seed(1))
    assert masked.any(1).all() and (x_in[:, dh._answer(p)][masked] == dh.MASK).all()


def test_deco_g_tests_every_distinct_prompt_once():
    prompts = dh.dg_test_prompts()
    assert len(prompts) == 20 and len({tuple(r) for r in prompts.tolist()}) == 20
    assert set(prompts[:, 1].tolist()) == set(range(10)) and set(prompts[:, 2].tolist()) == {1, 2}
    assert (prompts[:, 0] == dh.INSTRUCTED).all() and (prompts[:, 3] == dh.EQ).all()
