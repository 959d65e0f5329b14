"""The decoding-helpers chapter's task definitions and claim wiring."""

import torch

from distillbook.chapters.decoding_helpers import Params
from distillbook.chapters.decoding_helpers import experiment as dh


def test_deco_g_format_automaton_and_answer_formats():
    dfa = dh.format_dfa()
    A, DOT, PAD = dh.ANS_MARK, dh.DOT, dh.PAD
    assert dfa.accepts([A, 7, DOT, PAD, PAD]) and dfa.accepts([A, 1, 2, DOT, PAD])
    for bad in ([7, PAD, PAD, PAD, PAD], [A, DOT, PAD, PAD, PAD], [A, 1, 2, 3, DOT], [PAD, 7, DOT, PAD, PAD],
                [A, 7, DOT, PAD, 3]):
        assert not dfa.accepts(bad), bad
    answers = dh._answer_tokens(torch.tensor([7, 12, 12]), torch.tensor([0, 1, 2]))
    assert answers.tolist() == [[A, 7, DOT, PAD, PAD], [1, 2, PAD, PAD, PAD], [PAD, 1, 2, DOT, PAD]]
    strings = torch.cat([torch.tensor([[3, dh.PLUS, 4, dh.EQ], [9, dh.PLUS, 3, dh.EQ], [9, dh.PLUS, 3, dh.EQ]]),
                         answers], 1)
    assert dh._dg_correct(strings).tolist() == [True, True, True]
    strings[0, 5] = 8
    assert not dh._dg_correct(strings)[0]


def test_permutation_task():
    p = Params.for_profile("smoke")
    x = dh._perm_problems(p, 50, torch.Generator().manual_seed(0))
    assert x.shape == (50, 2 * p.dp_digits + 1) and (x[:, p.dp_digits] == dh.SEP).all()
    assert dh._valid(p, x).all()
    x[0, -1], x[0, -2] = x[0, 0], x[0, 0]  # a repeated digit is not a permutation
    assert not dh._valid(p, x)[0]
