"""Each chapter's claims are wired to the right measurements: made-up per-seed numbers give known verdicts."""

import numpy as np
import pytest

from distillbook.chapters import foundations, lm_kd_dynamics
from distillbook.results import Run

SEEDS = [0, 1, 2, 3]


def _noise(seed: int) -> float:
    return 0.001 * ((seed * 7919) % 5)  # small, seed-dependent, deterministic


def test_foundations_claims_read_the_right_arms(scratch):
    params = foundations.Params.for_profile("smoke", seeds=SEEDS)  # temperatures [1, 4, 20]
    run = Run("foundations", params)
    for s in SEEDS:
        e = _noise(s)
        run.record(s, label_only_test_acc=0.80 + e, pseudo_label_test_acc=0.99 + e,
                   soft_all_test_acc=[0.96 + e, 0.90 + e, 0.95 + e],  # T = 1, 4, 20: softening hurts here
                   soft_labelled_test_acc=[0.70 + e, 0.85 + e, 0.60 + e],
                   omit_class_adjusted_acc=[0.05 + e, 0.10 + e, 0.40 + e])
    verdicts = {r["id"]: r["verdict"] for r in foundations.evaluate_claims(run)}
    assert verdicts == {
        "distilled-beats-labels": "reproduced",  # 0.95 (T = 20) vs 0.80
        "soft-beats-pseudo-labels": "not reproduced",  # 0.95 vs 0.99
        "temperature-above-1-helps": "not reproduced",  # T = 4: 0.90 vs T = 1: 0.96
        "temperature-above-1-helps-small-transfer": "reproduced",  # 0.85 vs 0.70
        "soft-targets-regularise": "reproduced",  # 0.85 (T = 4) vs 0.80
        "omitted-class-recognised": "not reproduced",  # 0.40 at T = 20, claimed > 0.5
    }


def _curve(values, seed):
    return (np.asarray(values, dtype=float) + _noise(seed)).tolist()


def test_lm_kd_claims_read_the_right_arms(scratch):
    params = lm_kd_dynamics.Params.for_profile("smoke", seeds=SEEDS)  # offline sizes [4, 16]
    run = Run("lm-kd-dynamics", params)
    u_shape, falling = [0.6, 0.3, 0.35, 0.4], [0.6, 0.4, 0.3, 0.25]
    for s in SEEDS:
        run.record(s, **{
            "hacking_offline4_golden": _curve(u_shape, s), "hacking_offline4_proxy": _curve(falling, s),
            "hacking_offline16_golden": _curve([0.6, 0.35, 0.3, 0.28], s), "hacking_offline16_proxy": _curve(falling, s),
            "hacking_oracle4_golden": _curve([0.6, 0.3, 0.32, 0.33], s), "hacking_oracle4_proxy": _curve(falling, s),
            "hacking_online_golden": _curve(falling, s), "hacking_online_proxy": _curve(falling, s),
            "hacking_on_policy_golden": _curve([0.6, 0.4, 0.35, 0.45], s), "hacking_on_policy_proxy": _curve(falling, s),
            "capacity_student_golden": _curve([0.3, 0.2, 0.25], s),
            "xtok_ntp_bpc": 2.5 + _noise(s), "xtok_uld_bpc": 2.1 + _noise(s), "xtok_alm_bpc": 2.3 + _noise(s),
        })
    verdicts = {r["id"]: r["verdict"] for r in lm_kd_dynamics.evaluate_claims(run)}
    assert verdicts == {
        "offline-golden-turns-up": "reproduced",
        "proxy-falls-while-golden-rises": "reproduced",
        "turn-up-is-teacher-hacking": "reproduced",  # U-depth 0.10 vs the oracle control's 0.03
        "online-turns-up-less": "reproduced",
        "online-beats-offline": "reproduced",  # 0.40 vs 0.25
        "on-policy-beats-offline": "not reproduced",  # 0.40 vs 0.45
        "diverse-offline-helps": "reproduced",  # 0.40 vs 0.28
        "capacity-gap-u-shape": "reproduced",
        "alm-beats-uld": "not reproduced",  # ULD 2.1 < ALM 2.3
        "alm-beats-next-token": "reproduced",  # next-token 2.5 > ALM 2.3
    }


def test_run_settings_are_not_overrides():
    params = foundations.Params.for_profile("cpu", device="cpu", threads=2, tracking="offline")
    assert params.overrides_from_preset() == {}
    assert foundations.Params.for_profile("cpu", alpha=0.3).overrides_from_preset() == {"alpha": 0.3}


@pytest.mark.parametrize("field", ["student_dim", "teacher_dim", "xtok_student_dim", "capacity_student_dim"])
def test_lm_kd_widths_must_suit_two_heads(field):
    from distillbook.params import ParameterError

    with pytest.raises(ParameterError, match="even and >= 4"):
        lm_kd_dynamics.Params.for_profile("smoke", **{field: 15})
    with pytest.raises(ParameterError, match="even and >= 4"):
        lm_kd_dynamics.Params.for_profile("smoke", capacity_teacher_dims=[0, 2, 4])
