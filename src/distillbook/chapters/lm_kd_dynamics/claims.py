"""The chapter's claims and every text built from its numbers: the teacher-hacking measures (U-depth, proxy
drop), verdicts, health, glued values and the summary."""

from __future__ import annotations

import numpy as np

from distillbook.chapters.lm_kd_dynamics.experiment import LOG2, Bed
from distillbook.chapters.lm_kd_dynamics.params import Params, hacking_arms
from distillbook.core.claims import WINDOW, Claim, curve, derived, relative_change, tail_mean
from distillbook.core.results import Run

TIAPKIN = 43  # On Teacher Hacking in Language Model Distillation
CAPACITY = 76  # Towards the Law of Capacity Gap in Distilling Language Models
ALM = 70  # Cross-Tokenizer Distillation via Approximate Likelihood Matching


def _final(curves, window: int = WINDOW) -> np.ndarray:
    """Per seed: the converged reading of a curve, the mean of its last ``window`` evaluations."""
    return np.array([tail_mean(c, window) for c in curves])


def _minimum_index(curves: np.ndarray, s: int, window: int) -> int:
    """Cross-fitted minimum for seed ``s``: the interior arg-min of the other seeds' mean curve, before the end
    window."""
    others = np.delete(curves, s, axis=0).mean(axis=0)
    return 1 + int(np.argmin(others[1:curves.shape[1] - window]))


def relative_u_depth(curves, window: int = 1) -> np.ndarray:
    """Per seed: how far a curve fell to its minimum and rose after it, relative to the minimum.

    d_s = min(c_s[0] - c_s[k], end_s - c_s[k]) / c_s[k], with end_s the mean of the last ``window`` points and
    k the interior arg-min (before the end window) of the *other* seeds' mean curve, cross-fitted as in
    :func:`distillbook.core.claims.rise_then_fall` so that a seed's noise cannot pick its own minimum. Positive: the
    seed fell to that point and rose after it; 0.05 means the end sits 5% above the minimum. Curves must be
    positive (a KL, bits per character).
    """
    c = np.asarray(curves, dtype=float)
    if c.ndim != 2 or c.shape[0] < 2 or c.shape[1] < window + 2:
        raise ValueError(f"curves must be (seeds >= 2, points >= window + 2 = {window + 2}), got {c.shape}")
    out = np.empty(len(c))
    for s in range(len(c)):
        k = _minimum_index(c, s, window)
        out[s] = min(c[s, 0] - c[s, k], c[s, -window:].mean() - c[s, k]) / c[s, k]
    return out


def proxy_fall_after_golden_minimum(golden_curves, proxy_curves, window: int = 1,
                                    relative: bool = False) -> np.ndarray:
    """Per seed: proxy at the golden curve's minimum minus proxy at the end (> 0: the proxy kept falling).

    The minimum's index is cross-fitted as in :func:`relative_u_depth`; the end is the mean of the last
    ``window`` evaluations. ``relative`` divides the drop by the proxy at the golden minimum.
    """
    g, pr = np.asarray(golden_curves, dtype=float), np.asarray(proxy_curves, dtype=float)
    out = np.empty(len(g))
    for s in range(len(g)):
        k = _minimum_index(g, s, window)
        out[s] = (pr[s, k] - pr[s, -window:].mean()) / (pr[s, k] if relative else 1.0)
    return out


U_MARGIN = 0.05
U_RATIONALE = ("5% of the curve's minimum: the plan's bar for a turn-up (C1: the final golden KL more than 5% above "
               "its own minimum); the end is the mean of the last evaluations, so one noisy evaluation cannot make it. "
               "A shape claim: the curve's movement is the claimed effect, so a curve still moving at the end may reproduce it "
               "but cannot refute it (movement_is_the_claim)")
KL_MARGIN = 0.01
KL_RATIONALE = ("0.01 nats/symbol is a 1% change in per-symbol perplexity (e^0.01), the smallest change in a language "
                "model's fit worth reporting; the golden KL is exact on fixed strings, so no test-sample noise sits "
                "below it. Floor: the teacher's own golden KL, which a distilled student approaches")
BPC_MARGIN = 0.01
BPC_RATIONALE = ("0.01 bits/character is a 0.7% change in per-character perplexity (2^0.01), the size of the golden "
                 "KL's margin; floor: the oracle's entropy rate, which no student can beat")


def claims(p: Params) -> tuple[Claim, ...]:
    small, large = p.offline_sizes[0], p.offline_sizes[-1]
    widest = p.capacity_teacher_dims[-1] / p.capacity_student_dim
    hacking = dict(saturation_tol=KL_MARGIN)
    shape = "a turn-up is the golden curve rising at the end; a still-rising end cannot refute it"
    return (
        Claim("offline-golden-turns-up", TIAPKIN,
              statement="With a small fixed offline set, the golden KL(oracle || student) falls, then rises again",
              a="relative golden U-depth, small offline set", statistic="value", region=(">", 0.0),
              movement_is_the_claim=shape, margin=U_MARGIN, rationale=U_RATIONALE,
              paper_figure="Fig. 1 / §5", paper_value="offline golden metric U-shaped over training",
              explanation=f"The {small}-string student stalls well above its teacher's golden KL: it never fits the "
                          "teacher closely enough for the teacher's errors to be what it learns next, so its golden "
                          "curve flattens instead of turning up.",
              diagnosis=f"hacking_offline{small}_gap_to_teacher"),
        Claim("proxy-falls-while-golden-rises", TIAPKIN,
              statement="...and, in the same seed, the proxy KL(teacher || student) on held-out teacher samples keeps "
                        "falling while the golden KL rises",
              a="min(relative golden U-depth, relative proxy drop after the golden minimum)", statistic="value",
              region=(">", 0.0), movement_is_the_claim=shape, margin=U_MARGIN,
              rationale="5% of each curve's value at the golden minimum, the turn-up's bar applied to both curves",
              paper_figure="Fig. 1 / §5", paper_value="proxy keeps improving while the golden metric degrades",
              explanation="Both halves are needed; without a golden turn-up (previous claim) there is no hacking "
                          "to see.",
              diagnosis="offline-golden-turns-up"),
        Claim("turn-up-is-teacher-hacking", TIAPKIN,
              statement="The turn-up is larger with the imperfect teacher than with the oracle itself as teacher on "
                        "the same number of strings (so it is more than overfitting a finite set)",
              a="relative U-depth, imperfect teacher", b="relative U-depth, oracle as teacher", movement_is_the_claim=shape, margin=U_MARGIN,
              rationale="the turn-up's own bar: a difference below 5% of the minimum is not a turn-up of its own",
              paper_figure="§4 (the oracle → teacher → student setup)",
              paper_value="hacking = exploiting the teacher's imperfections",
              explanation=f"What turns up on {small} strings is finite-set overfitting, sharpest with the oracle's "
                          "exact targets; the imperfect-teacher student stalls above its teacher before any hacking "
                          "could start.",
              diagnosis=f"hacking_offline{small}_gap_to_teacher"),
        Claim("online-turns-up-less", TIAPKIN,
              statement="Fresh teacher samples at every step turn up less than the small offline set "
                        "(relative U-depth)",
              a="relative U-depth, small offline set", b="relative U-depth, online", movement_is_the_claim=shape, margin=U_MARGIN,
              rationale="the turn-up's own bar: online data must remove at least a 5% turn-up",
              paper_figure="§5", paper_value="online generation mitigates teacher hacking",
              explanation="With no turn-up in the small offline arm there is nothing for online data to remove.",
              diagnosis="offline-golden-turns-up"),
        Claim("online-beats-offline", TIAPKIN,
              statement="Fresh teacher samples at every step end with a lower golden KL than the small offline set",
              a="final golden KL, small offline set", b="final golden KL, online", margin=KL_MARGIN,
              rationale=KL_RATIONALE, **hacking,
              paper_figure="§5", paper_value="online generation mitigates teacher hacking",
              explanation="The online student is still descending toward its teacher's golden KL, its floor, at the "
                          "end of the budget: online data bring the student to the teacher, not past it.",
              diagnosis="hacking_online_gap_to_teacher"),
        Claim("on-policy-beats-offline", TIAPKIN,
              statement="The student's own samples end with a lower golden KL than the small offline set",
              a="final golden KL, small offline set", b="final golden KL, on-policy", margin=KL_MARGIN,
              rationale=KL_RATIONALE, **hacking,
              paper_figure="§5", paper_value="on-policy data mitigates teacher hacking",
              explanation="The on-policy student is still descending toward its teacher's golden KL, its floor, at "
                          "the end of the budget.",
              diagnosis="hacking_on_policy_gap_to_teacher"),
        Claim("diverse-offline-helps", TIAPKIN,
              statement="A larger (more diverse) offline set ends with a lower golden KL than the small one",
              a="final golden KL, small offline set", b="final golden KL, largest offline set", margin=KL_MARGIN,
              rationale=KL_RATIONALE, **hacking,
              paper_figure="§5", paper_value="more diverse offline data mitigates teacher hacking",
              explanation=f"The {large}-string student is still descending toward its teacher's golden KL at the end "
                          "of the budget.",
              diagnosis=f"hacking_offline{large}_gap_to_teacher"),
        Claim("capacity-gap-u-shape", CAPACITY,
              statement="The same student distilled from wider and wider teachers: its golden KL falls, then rises",
              a="student's relative golden U-depth over teacher width", statistic="value", region=(">", 0.0),
              margin=U_MARGIN, rationale="the teacher-hacking turn-up's bar (5% of the minimum), over teacher width",
              paper_figure="Fig. 1", paper_value="U-shaped student loss; best teacher ≈ 2.5× the student",
              explanation=f"Up to {widest:g}× its width the student keeps up with every teacher (its golden KL stays "
                          "close to each teacher's), so a wider, better teacher is simply better here.",
              diagnosis="capacity_student_excess"),
        Claim("alm-beats-uld", ALM,
              statement="A character student distilled from a BPE teacher by ALM reaches fewer bits per character "
                        "than by ULD",
              a="bits/char, ULD", b="bits/char, ALM", margin=BPC_MARGIN, rationale=BPC_RATIONALE,
              saturation_tol=BPC_MARGIN,
              paper_figure="Table 1", paper_value="ALM beats prior cross-tokenizer methods (ULD, MinED, DSKD)",
              explanation="ALM has not reached its own target: the teacher's canonical-chunk bits per character "
                          "(the rate ALM matches, health table) lie below where the ALM student ends, and the ALM "
                          "curve is still moving, so the comparison is decided by training length, not by ALM's "
                          "objective (the earlier explanation, a biased canonical-chunk target, is refuted by the "
                          "same number: that target is better than ULD's result).",
              diagnosis="xtok_teacher_bpc"),
        Claim("alm-beats-next-token", ALM,
              statement="...and fewer than next-token training on the same strings",
              a="bits/char, next-token", b="bits/char, ALM", margin=BPC_MARGIN, rationale=BPC_RATIONALE,
              saturation_tol=BPC_MARGIN,
              paper_figure="Table 1", paper_value="distillation transfers the teacher beyond the data",
              explanation="As for ULD: the ALM student ends above the canonical-chunk rate it matches, still moving.",
              diagnosis="xtok_teacher_bpc"),
    )


def evaluate_claims(run: Run) -> list[dict]:
    c = {claim.id: claim for claim in claims(run.params)}
    n_small, n_large = run.params.offline_sizes[0], run.params.offline_sizes[-1]
    small = f"offline{n_small}"

    def g(name):
        return np.asarray(run.values(f"hacking_{name}_golden"), dtype=float)

    def u(name):  # U-depth per seed, moving as much as its golden curve still moves at the end
        return derived(relative_u_depth(g(name), WINDOW), [relative_change(c, WINDOW) for c in g(name)], WINDOW)

    off_g, off_p = g(small), np.asarray(run.values(f"hacking_{small}_proxy"), dtype=float)
    teacher = run.values("teacher_golden")
    oracle_bpc = run.values("oracle_bits_per_char")
    results = [
        c["offline-golden-turns-up"].evaluate(u(small)),
        c["proxy-falls-while-golden-rises"].evaluate(
            derived(np.minimum(u(small).values(), proxy_fall_after_golden_minimum(off_g, off_p, WINDOW, relative=True)),
                    u(small).drift(), WINDOW)),
        c["turn-up-is-teacher-hacking"].evaluate(u(small), u(f"oracle{n_small}")),
        c["online-turns-up-less"].evaluate(u(small), u("online")),
        c["online-beats-offline"].evaluate(curve(off_g), curve(g("online")), floor=teacher),
        c["on-policy-beats-offline"].evaluate(curve(off_g), curve(g("on_policy")), floor=teacher),
    ]
    if n_small != n_large:
        results.append(c["diverse-offline-helps"].evaluate(curve(off_g), curve(g(f"offline{n_large}")),
                                                           floor=teacher))

    def xtok(method):
        return curve(run.values(f"xtok_{method}_bpc_curve"))

    return results + [
        c["capacity-gap-u-shape"].evaluate(relative_u_depth(run.values("capacity_student_golden"))),
        c["alm-beats-uld"].evaluate(xtok("uld"), xtok("alm"), floor=oracle_bpc),
        c["alm-beats-next-token"].evaluate(xtok("ntp"), xtok("alm"), floor=oracle_bpc),
    ]


def record_health(run: Run) -> None:
    """The test-bed health table: every teacher against the exact oracle."""
    run.health("imperfect teacher (§1-2)", "golden KL, nats/symbol", "teacher_golden", lower_is_better=True,
               references={"exact oracle": 0.0},
               note="the floor of the teacher-hacking students' golden KL: a student distils towards it")
    run.health("widest capacity teacher (§3)", "golden KL, nats/symbol", "capacity_widest_teacher_golden",
               lower_is_better=True,
               references={"exact oracle": 0.0, "narrowest teacher": "capacity_narrowest_teacher_golden"},
               note="wider teachers must be better for the capacity-gap sweep to mean anything")
    run.health("BPE teacher (§4)", "bits per character", "xtok_teacher_bpc", lower_is_better=True,
               references={"oracle entropy rate": "oracle_bits_per_char"},
               note="from the teacher's canonical-token probabilities, the targets ALM matches")


def arm_label(arm) -> str:
    name, regime, size, source = arm
    if regime == "offline":
        return f"offline, {size} strings" + (", oracle as teacher" if source == "oracle" else "")
    return {"online": "online (fresh teacher samples)", "on_policy": "on-policy (own samples)"}[regime]


def summary_markdown(run: Run, results: list[dict]) -> str:
    """What this run measured, in sentences built from its numbers and verdicts."""
    p = run.params
    v = {r["id"]: r["verdict"] for r in results}

    def ms(values, digits=3) -> str:
        x = np.asarray(values, dtype=float)
        return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}"

    teacher_g = np.asarray(run.values("capacity_teacher_golden"))
    student_g = np.asarray(run.values("capacity_student_golden"))
    best = p.capacity_teacher_dims[int(np.argmin(student_g.mean(axis=0)))]
    zoo = np.asarray(run.values("zoo_golden")).mean(axis=0)
    valid = np.asarray(run.values("zoo_valid_share")).mean(axis=0)
    entropy_rate = LOG2 * float(np.mean(run.values("oracle_bits_per_char")))  # nats/symbol, the same in every seed
    return "\n".join([
        f"Over {len(run.seeds)} seeds (profile `{run.profile}`); KL in nats per symbol:",
        "",
        f"- the oracle's entropy rate is {entropy_rate:.3f} nats/symbol; the imperfect teacher's golden KL is "
        f"{ms(run.values('teacher_golden'))};",
        f"- divergence zoo: the lowest golden KL comes from `{p.zoo_divergences[int(np.argmin(zoo))]}` "
        f"({zoo.min():.3f}), the most valid samples from `{p.zoo_divergences[int(np.argmax(valid))]}` "
        f"({100 * valid.max():.0f}% valid, teacher {100 * np.mean(run.values('teacher_valid_share')):.0f}%);",
        f"- teacher hacking, final golden KL (mean of the last {WINDOW} evaluations): "
        + ", ".join(f"{arm_label(arm)} {ms(_final(run.values(f'hacking_{arm[0]}_golden')))}"
                    for arm in hacking_arms(p))
        + f"; offline U-shape *{v['offline-golden-turns-up']}*, with the proxy still falling "
        f"*{v['proxy-falls-while-golden-rises']}*;",
        f"- capacity gap: teachers' golden KL from width {p.capacity_teacher_dims[0]} to {p.capacity_teacher_dims[-1]}: "
        + ", ".join(f"{g:.3f}" for g in teacher_g.mean(axis=0))
        + f"; the width-{p.capacity_student_dim} student's: " + ", ".join(f"{g:.3f}" for g in student_g.mean(axis=0))
        + f" (best teacher width {best}, {best / p.capacity_student_dim:g}× the student's; "
        f"U-shape *{v['capacity-gap-u-shape']}*);",
        f"- cross-tokenizer, bits per character at the end (mean of the last {WINDOW} evaluations; oracle {np.mean(run.values('oracle_bits_per_char')):.3f}, BPE teacher "
        f"{ms(run.values('xtok_teacher_bpc'))}): next-token {ms(_final(run.values('xtok_ntp_bpc_curve')))}, ULD "
        f"{ms(_final(run.values('xtok_uld_bpc_curve')))}, ALM {ms(_final(run.values('xtok_alm_bpc_curve')))} (validation picked ALM's tau = "
        + ", ".join(f"{t:g}" for t in run.values("xtok_alm_tau")) + " and ULD's weight = "
        + ", ".join(f"{w:g}" for w in run.values("xtok_uld_weight")) + " across seeds).",
    ])


def glue_values(run: Run, bed: Bed) -> dict[str, float]:
    """The run's numbers that the chapter's prose quotes (glued into the page, never typed)."""
    p = run.params

    def m(name):
        return float(np.mean(run.values(name)))

    small, large = p.offline_sizes[0], p.offline_sizes[-1]
    excess = np.asarray(run.values("capacity_student_excess"), dtype=float).mean(axis=0)
    gains = -np.diff(np.asarray(run.values("capacity_teacher_golden"), dtype=float).mean(axis=0))
    return {
        "entropy_rate": bed.entropy_rate,
        "teacher_golden": m("teacher_golden"),
        "gap_offline_small": m(f"hacking_offline{small}_gap_to_teacher"),
        "gap_offline_large": m(f"hacking_offline{large}_gap_to_teacher"),
        "gap_oracle_control": m(f"hacking_oracle{small}_gap_to_teacher"),
        "gap_online": m("hacking_online_gap_to_teacher"),
        "gap_on_policy": m("hacking_on_policy_gap_to_teacher"),
        "capacity_excess_narrowest": float(excess[0]),
        "capacity_excess_widest": float(excess[-1]),
        "capacity_largest_teacher_gain": float(gains.max()),
        "capacity_smallest_teacher_gain": float(gains.min()),
        "xtok_teacher_bpc": m("xtok_teacher_bpc"),
        "oracle_bpc": m("oracle_bits_per_char"),
        "alm_minus_ntp_bpc": float(np.mean(_final(run.values("xtok_alm_bpc_curve"))
                                           - _final(run.values("xtok_ntp_bpc_curve")))),
    }
