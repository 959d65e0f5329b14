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
        fkl, tvd, jsd, data = 0.85 + 2 * e, 0.87 + 3 * e, 0.87 + 4 * e, 0.80 + e
        measured, analytic = 3.7 + e, 3.7
        distilled, rewired, base = 0.88 + e, 0.3 + e, 0.9
        steps_dp, steps_ce, valid_dp, valid_base = 1.2 + e, 4.0, 0.95 + e, 0.95
        decog, prompt = 0.75 + e, 0.70  # below the ceiling by more than one smoke answer in 10
    elif kind == "not reproduced":
        fkl, tvd, jsd, data = 0.80 + 2 * e, 0.78 + e, 0.78 + 3 * e, 0.80
        measured, analytic = 3.0 + e, 3.7
        distilled, rewired, base = 0.5 + e, 0.8 + e, 0.9
        steps_dp, steps_ce, valid_dp, valid_base = 3.99 + e, 4.0, 0.85 + e, 0.95
        decog, prompt = 0.70 + e, 0.75
    else:
        data = 0.80
        fkl = data + 0.01 + 0.02 * P[s]
        tvd, jsd = fkl + 0.01 + 0.02 * Q[s], fkl + 0.01 + 0.02 * Q[::-1][s]
        measured, analytic = 3.7 * (1.05 + 0.03 * P[s]), 3.7
        base = 0.9
        distilled, rewired = base * (0.9 + 0.05 * P[s]), base * (0.5 + 0.05 * P[s])
        steps_dp = 1 + 3 / (8.5 + 3 * P[s])
        steps_ce = steps_dp + 0.1 + 0.3 * P[s]
        valid_base = 0.95
        valid_dp = valid_base + 0.02 + 0.03 * P[s]
        prompt = 0.7
        decog = prompt + 0.01 + 0.03 * P[s]
    return dict(alpha_data=data, alpha_fkl_offline=fkl, alpha_tvd_onpolicy=tvd, alpha_jsd_onpolicy=jsd,
                block_measured_tvd_onpolicy=measured, block_analytic_tvd_onpolicy=analytic, kv_agree_base=base,
                kv_agree_rewired=rewired, kv_agree_distilled=distilled, kv_prefill_flops_ratio=0.45,
                dp_steps_base=4.0, dp_steps_ce=steps_ce, dp_steps_dparallel=steps_dp, dp_valid_base=valid_base,
                dp_valid_dparallel=valid_dp, dg_compliance_prompt=0.0, dg_compliance_hard=1.0,
                dg_compliance_decog=1.0, dg_accuracy_decog=decog, dg_accuracy_hard=decog, dg_accuracy_prompt=prompt)


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
    # the worst distilled draft is offline forward KL (0.85 + 2e) against the data draft (0.80 + e)
    assert by_id["distilled-drafts-accept-more"]["measured"]["per_seed"] == pytest.approx(
        [0.05 + 0.001 * (s + 1) for s in SEEDS])
    # dParallel's step ratio is taken over the one-step floor: (4 - 1) / (1.2 + e - 1)
    assert by_id["dparallel-fewer-steps"]["measured"]["per_seed"] == pytest.approx(
        [3 / (0.2 + 0.001 * (s + 1)) for s in SEEDS])
    assert by_id["decog-beats-free-decoding"]["measured"]["per_seed"] == pytest.approx(
        [0.05 + 0.001 * (s + 1) for s in SEEDS])


def test_setup_facts_are_computed_not_claimed(scratch):
    run = _run("reproduced")
    facts = dh.setup_facts(run)
    assert facts["prefill_ratio"] == pytest.approx(0.45) and facts["prefill_ratio_spread"] == 0.0
    assert facts["decog_vs_hard"] == 0.0 and facts["hard_compliance_min"] == 1.0
    assert facts["base_steps_mean"] == 4.0 and facts["base_steps_spread"] == 0.0
    glued = dh.glue_values(run, None)
    assert {k: glued[k] for k in facts} == facts
    assert (glued["kv_k"], glued["kv_layers"], glued["dp_digits"]) == (run.params.kv_k, run.params.kv_layers,
                                                                       run.params.dp_digits)
    # the reason they are prose: as claims, a statistic identical in every seed is refused
    from distillbook.core.claims import Claim
    with pytest.raises(ClaimError, match="in every seed"):
        Claim("half-prefill", 28, "constant", a="prefill FLOPs ratio", statistic="value", region=("<", 0.55),
              margin=0.0, rationale="configuration").evaluate(run.values("kv_prefill_flops_ratio"))


def test_rescaled_step_bar_matches_the_papers_share_of_saved_steps():
    """The dParallel bar: 8.5x on 256-token answers leaves ~30 steps; as an excess over the one-step floor the
    same factor asks 1 + (N - 1) / 8.5 steps of an N-token answer."""
    assert (256 - 1) / (256 / 8.5 - 1) == pytest.approx(8.76, abs=0.01)
    p = dh.Params.for_profile("cpu")
    claim = {c.id: c for c in dh.claims(p)}["dparallel-fewer-steps"]
    assert claim.floor == 1.0 and claim.region == (">", 8.5)
    steps = 1 + (p.dp_digits - 1) / 8.5
    assert (p.dp_digits - claim.floor) / (steps - claim.floor) == pytest.approx(8.5)
