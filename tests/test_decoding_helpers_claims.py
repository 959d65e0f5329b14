"""The decoding-helpers chapter's claims: wiring, each verdict reachable, and the set-up facts kept out of the table."""

import numpy as np
import pytest

from distillbook.chapters import decoding_helpers as dh
from distillbook.core.claims import ClaimError
from distillbook.core.results import Run

SEEDS = [0, 1, 2, 3]
P = np.array([0.0, 1.0, -1.0, 0.5])  # per-seed pattern straddling a decision line
Q = np.array([0.0, 1.0, -0.4, 0.5])  # non-negative once shifted by 0.01 / 0.02


def _variant(kind: str, s: int) -> dict:
    e = 0.001 * (s + 1)
    if kind == "reproduced":
        data, fkl_off, fkl_on, tvd = 0.80 + e, 0.83 + 2 * e, 0.85 + 3 * e, 0.87 + 4 * e
        measured, analytic = 3.7 + e, 3.7
        distilled, rewired, base = 0.89 + e, 0.5, 0.9
        steps_dp, steps_ce = 1.1 + e, 2.0
        decog, prompt, hard = 0.9 + e, 0.8, 0.5
    elif kind == "not reproduced":
        data, fkl_off, fkl_on, tvd = 0.80, 0.80 + 2 * e, 0.78 + e, 0.76 + e
        measured, analytic = 3.0 + e, 3.7
        distilled, rewired, base = 0.5 + e, 0.8, 0.9
        steps_dp, steps_ce = 2.5 + e, 2.0
        decog, prompt, hard = 0.7 + e, 0.75, 0.75
    else:
        data = 0.80
        fkl_off = data + 0.01 + 0.02 * P[s]
        fkl_on = fkl_off + 0.01 + 0.02 * Q[s]
        tvd = fkl_on + 0.01 + 0.02 * Q[::-1][s]
        measured, analytic = 3.7 * (1.05 + 0.03 * P[s]), 3.7
        base = 0.9
        distilled = base * (0.97 + 0.05 * P[s])
        rewired = distilled - 0.02 - 0.03 * P[s]
        steps_dp = 1 + 3 * ((29 / 255) + 0.05 * P[s])  # smoke answers: 4 tokens
        steps_ce = steps_dp + 0.1 + 0.3 * P[s]
        prompt = 0.7  # Deco-G's margin is one prompt in 20 (0.05)
        decog = 0.75 + 0.1 * P[s]
        hard = decog - 0.05 - 0.1 * P[s]
    flat = {f"alpha_curve_{arm}": [value] * 10 for arm, value in
            (("data", data), ("fkl_offline", fkl_off), ("fkl_onpolicy", fkl_on), ("tvd_onpolicy", tvd))}
    return dict(**flat, alpha_data=data, alpha_fkl_offline=fkl_off, alpha_fkl_onpolicy=fkl_on, alpha_tvd_onpolicy=tvd,
                block_measured_tvd_onpolicy=measured, block_analytic_tvd_onpolicy=analytic, kv_agree_base=base,
                kv_agree_rewired=rewired, kv_agree_distilled=distilled, kv_prefill_flops_ratio=0.45,
                dp_steps_base=3.0, dp_steps_ce=steps_ce, dp_steps_dparallel=steps_dp, dp_exact_base=1.0,
                dp_exact_ce=1.0, dp_exact_dparallel=1.0, dg_compliance_prompt=0.5, dg_compliance_hard=1.0,
                dg_compliance_decog=1.0, dg_accuracy_decog=decog, dg_accuracy_decog_answers=decog,
                dg_accuracy_hard=hard, dg_accuracy_prompt=prompt, dg_accuracy_two_hard=0.0,
                dg_accuracy_strict_prompt=prompt / 2, alpha_shift_onpolicy=0.001 * s, dg_hmm_prompt_gap=0.0,
                dg_loglik_lm=-1.0, dg_loglik_hmm=-2.0, dg_loglik_hmm_answers=-2.0,
                kv_agree_curve_distilled=[rewired, distilled, distilled])


def _run(kind: str) -> Run:
    run = Run(dh.CHAPTER, dh.Params.for_profile("smoke", seeds=SEEDS))
    for s in SEEDS:
        run.record(s, **_variant(kind, s))
    return run


@pytest.mark.parametrize("kind", ["reproduced", "not reproduced", "inconclusive"])
def test_every_claim_reaches_each_verdict(scratch, kind):
    run = _run(kind)
    results = dh.evaluate_claims(run)
    assert [r["id"] for r in results] == [c.id for c in dh.claims(run.params)]
    assert {r["id"]: r["verdict"] for r in results} == {r["id"]: kind for r in results}


def test_the_claims_read_the_right_arms(scratch):
    by_id = {r["id"]: r for r in dh.evaluate_claims(_run("reproduced"))}
    # the worst distilled draft is offline forward KL (0.83 + 2e) against the data draft (0.80 + e)
    assert by_id["distilled-drafts-accept-more"]["measured"]["per_seed"] == pytest.approx(
        [0.03 + 0.001 * (s + 1) for s in SEEDS])
    # one thing changes per comparison: the data source, then the divergence
    assert by_id["on-policy-fkl-beats-offline"]["measured"]["per_seed"] == pytest.approx(
        [0.02 + 0.001 * (s + 1) for s in SEEDS])
    assert by_id["tvd-beats-fkl-on-policy"]["measured"]["per_seed"] == pytest.approx(
        [0.02 + 0.001 * (s + 1) for s in SEEDS])
    # dParallel's steps as a share of the answer length above the one-step floor: (1.1 + e - 1) / (4 - 1)
    assert by_id["dparallel-fewer-steps"]["measured"]["per_seed"] == pytest.approx(
        [(0.1 + 0.001 * (s + 1)) / 3 for s in SEEDS])
    assert by_id["decog-beats-hard-masking"]["margin"] == pytest.approx(1 / 20)
    # DistillSpec's drafts are compared at equal training steps, as the paper reports them
    assert all(by_id[c]["convergence"]["budget_matched"] for c in
               ("distilled-drafts-accept-more", "on-policy-fkl-beats-offline", "tvd-beats-fkl-on-policy"))
    assert by_id["decog-beats-hard-masking"]["measured"]["per_seed"] == pytest.approx(
        [0.4 + 0.001 * (s + 1) for s in SEEDS])


def test_setup_facts_are_computed_not_claimed(scratch):
    run = _run("reproduced")
    facts = dh.setup_facts(run)
    assert facts["prefill_ratio"] == pytest.approx(0.45) and facts["prefill_ratio_spread"] == 0.0
    assert facts["hard_compliance_min"] == 1.0 and facts["base_exact_min"] == 1.0
    assert facts["base_step_share"] == pytest.approx((3.0 - 1) / (4 - 1))
    assert facts["ce_under_bar"] == 0  # CE only at 2.0 steps, above the 4-token bar of 1.34
    glued = dh.glue_values(run, None)
    assert glued["dg_prompts"] == 20 and glued["dg_margin"] == pytest.approx(0.05)
    assert {k: glued[k] for k in facts} == facts
    assert (glued["kv_k"], glued["kv_layers"], glued["dp_digits"]) == (run.params.kv_k, run.params.kv_layers,
                                                                       run.params.dp_digits)
    # the reason they are prose: as claims, a statistic identical in every seed is refused
    from distillbook.core.claims import Claim
    with pytest.raises(ClaimError, match="in every seed"):
        Claim("half-prefill", 28, "constant", a="prefill FLOPs ratio", statistic="value", region=("<", 0.55),
              margin=0.0, rationale="configuration").evaluate(run.values("kv_prefill_flops_ratio"))


def test_rescaled_step_bar_is_the_papers_share_of_the_answer_length():
    """The dParallel bar: 256 -> 30 steps uses (30 - 1) / (256 - 1) of the steps above the one-step floor; an
    N-token answer at that share takes 1 + (N - 1) * 29 / 255 steps, 8.76x fewer excess steps than one per token."""
    assert (256 - 1) / (30 - 1) == pytest.approx(8.79, abs=0.01)
    p = dh.Params.for_profile("cpu")
    claim = {c.id: c for c in dh.claims(p)}["dparallel-fewer-steps"]
    assert claim.region == ("<", pytest.approx(29 / 255))
    steps = 1 + (p.dp_digits - 1) * 29 / 255
    from distillbook.chapters.decoding_helpers.claims import excess_step_share
    assert excess_step_share([steps], p.dp_digits)[0] == pytest.approx(29 / 255)
    assert p.dp_digits >= 16  # long enough for parallel decoding to matter
