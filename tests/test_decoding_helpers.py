"""The decoding-helpers chapter's task definitions and claim wiring."""

import torch

from distillbook.chapters import decoding_helpers as dh
from distillbook.results import Run


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
    p = dh.Params.for_profile("smoke")
    x = dh._perm_problems(p, 50, torch.Generator().manual_seed(0))
    assert x.shape == (50, 2 * p.dp_digits + 1) and (x[:, p.dp_digits] == dh.SEP).all()
    assert dh._valid(p, x).all()
    x[0, -1], x[0, -2] = x[0, 0], x[0, 0]  # a repeated digit is not a permutation
    assert not dh._valid(p, x)[0]


def test_claims_read_the_right_arms(scratch):
    run = Run(dh.CHAPTER, dh.Params.for_profile("smoke", seeds=[0, 1, 2, 3]))
    for s in run.seeds:
        e = 0.001 * s
        run.record(s, alpha_data=0.80 + e, alpha_fkl_offline=0.85 + e, alpha_tvd_onpolicy=0.86 + e,
                   alpha_jsd_onpolicy=0.84 + 2 * e, block_measured_tvd_onpolicy=3.70 + e,
                   block_analytic_tvd_onpolicy=3.75, kv_agree_base=0.9, kv_agree_rewired=0.6 + e,
                   kv_agree_distilled=0.88 + e, kv_prefill_flops_ratio=0.45, dp_steps_base=4.0, dp_steps_ce=3.9 + e,
                   dp_steps_dparallel=3.0 + e, dp_valid_base=0.99, dp_valid_dparallel=0.90 + e,
                   dg_compliance_decog=1.0, dg_accuracy_decog=0.93 + e, dg_accuracy_hard=0.93)
    verdicts = {r["id"]: r["verdict"] for r in dh.evaluate_claims(run)}
    assert verdicts == {
        "distilled-drafts-accept-more": "reproduced",
        "on-policy-tvd-beats-offline": "reproduced",
        "on-policy-jsd-beats-offline": "not reproduced",
        "block-efficiency-formula": "reproduced",
        "swiftkv-distilled-keeps-90": "reproduced",
        "swiftkv-rewiring-collapses": "not reproduced",
        "swiftkv-half-prefill": "reproduced",
        "dparallel-fewer-steps": "not reproduced",
        "dparallel-keeps-accuracy": "not reproduced",
        "entropy-term-matters": "reproduced",
        "decog-complies": "reproduced",
        "decog-accuracy-vs-masking": "reproduced",
    }
