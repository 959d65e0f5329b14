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
XTOK_BUDGET = ("every method trains the same pre-trained student for the same number of steps on the same transfer set, "
               "as the paper compares methods at a fixed training budget; the curves still fall by about a margin "
               "between the last two windows of evaluations")


def claims(p: Params) -> tuple[Claim, ...]:
    small, large = p.offline_sizes[0], p.offline_sizes[-1]
    shape = "a turn-up is the golden curve rising at the end; a still-rising end cannot refute it"
    regimes = ("equal distillation steps: the paper compares the regimes' curves over the same training run, "
               "and the online student is still approaching its teacher at the end")
    mitigation = dict(movement_is_the_claim=shape, margin=U_MARGIN,
                      rationale="the turn-up's own bar: a mitigation must remove at least a 5% turn-up",
                      paper_figure="§5")
    return (
        Claim("offline-golden-turns-up", TIAPKIN,
              statement=f"With a small fixed offline set ({small} teacher samples), the golden KL(oracle || student) "
                        "falls, then rises again",
              a="relative golden U-depth, small offline set", statistic="value", region=(">", 0.0),
              movement_is_the_claim=shape, margin=U_MARGIN, rationale=U_RATIONALE,
              paper_figure="Fig. 1 / §5", paper_value="offline golden metric U-shaped over training",
              explanation="Where a seed's golden KL does not fall first, the student copies the teacher's errors "
                          "faster than it learns the rest: the golden KL at the positions the teacher gets wrong jumps "
                          "by the first evaluation (split figure), so there is no fall for a U to rise from.",
              diagnosis=f"hacking_offline{small}_wrong_rise_first"),
        Claim("proxy-falls-while-golden-rises", TIAPKIN,
              statement="...and, in the same seed, the proxy KL(teacher || student) on held-out teacher samples keeps "
                        "falling while the golden KL rises",
              a="min(relative golden U-depth, relative proxy drop after the golden minimum)", statistic="value",
              region=(">", 0.0), movement_is_the_claim=shape, margin=U_MARGIN,
              rationale="5% of each curve's value at the golden minimum, the turn-up's bar applied to both curves",
              paper_figure="Fig. 1 / §5", paper_value="proxy keeps improving while the golden metric degrades",
              explanation="Without a golden turn-up (previous claim) there is no hacking to see; with one, a proxy "
                          "that rises too means the student is overfitting its offline set, not nearing its teacher.",
              diagnosis="offline-golden-turns-up"),
        Claim("turn-up-is-teacher-hacking", TIAPKIN,
              statement="The turn-up is larger with the confidently wrong teacher than with the oracle as teacher on "
                        "as many strings, equally sharp (so it is more than overfitting a finite set)",
              a="relative U-depth, teacher", b="turn-up (U-depth, 0 if still falling), oracle as teacher",
              margin=U_MARGIN,
              movement_is_the_claim=shape,
              rationale="the turn-up's own bar: a difference below 5% of the minimum is not a turn-up of its own",
              paper_figure="§4 (the oracle → teacher → student setup)",
              paper_value="hacking = exploiting the teacher's imperfections",
              explanation="Where the teacher's errors are copied by the first evaluation, the teacher arm has no fall "
                          "to rise from and its U-depth is negative whatever it copies later; the wrong positions' "
                          "rise after the first evaluation measures the copying that a U-depth can see.",
              diagnosis=f"hacking_offline{small}_wrong_rise_after"),
        Claim("online-turns-up-less", TIAPKIN,
              statement="Fresh teacher samples at every step turn up less than the small offline set",
              a="relative U-depth, small offline set", b="turn-up (U-depth, 0 if still falling), online",
              paper_value="online generation mitigates teacher hacking", **mitigation,
              explanation="With no turn-up in the small offline arm there is nothing for online data to remove.",
              diagnosis="offline-golden-turns-up"),
        Claim("on-policy-turns-up-less", TIAPKIN,
              statement="The student's own samples at every step turn up less than the small offline set",
              a="relative U-depth, small offline set", b="turn-up (U-depth, 0 if still falling), on-policy",
              paper_value="on-policy generation mitigates teacher hacking", **mitigation,
              explanation="With no turn-up in the small offline arm there is nothing for on-policy data to remove.",
              diagnosis="offline-golden-turns-up"),
        Claim("diverse-offline-turns-up-less", TIAPKIN,
              statement=f"A larger, more diverse offline set ({large} strings) turns up less than the small one",
              a="relative U-depth, small offline set", b="turn-up (U-depth, 0 if still falling), largest offline set",
              paper_value="more diverse offline data mitigates teacher hacking", **mitigation,
              explanation="With no turn-up in the small offline arm there is nothing for more data to remove.",
              diagnosis="offline-golden-turns-up"),
        Claim("online-beats-offline", TIAPKIN,
              statement="Fresh teacher samples at every step end with a lower golden KL than the small offline set",
              a="final golden KL, small offline set", b="final golden KL, online", margin=KL_MARGIN,
              rationale=KL_RATIONALE, budget_matched=regimes,
              paper_figure="§5", paper_value="online generation: golden metric keeps improving",
              explanation="The online student has not yet overtaken the offline one at the end of the budget.",
              diagnosis="hacking_online_gap_to_teacher"),
        Claim("on-policy-beats-offline", TIAPKIN,
              statement="The student's own samples end with a lower golden KL than the small offline set",
              a="final golden KL, small offline set", b="final golden KL, on-policy", margin=KL_MARGIN,
              rationale=KL_RATIONALE, budget_matched=regimes,
              paper_figure="§5", paper_value="on-policy generation: golden metric keeps improving",
              explanation="The on-policy student has not yet overtaken the offline one at the end of the budget.",
              diagnosis="hacking_on_policy_gap_to_teacher"),
        Claim("capacity-gap-u-shape", CAPACITY,
              statement="For each student size, the student's golden KL falls and then rises as its teacher grows "
                        "(an interior best teacher)",
              a="student's relative golden U-depth over teacher size", statistic="value", region=(">", 0.0),
              margin=U_MARGIN, rationale="the teacher-hacking turn-up's bar (5% of the minimum), over teacher size",
              budget_matched="the paper's law is for a fixed distillation budget: every student trains the same "
                             "number of steps on the same pool of strings, whichever its teacher",
              paper_figure="Fig. 1", paper_value="U-shaped student loss; best teacher ≈ 2.5× the student",
              explanation="Past the best teacher the student's golden KL rises by less than the bar, or not at all: "
                          "its distillation loss and the golden metric are the same divergence on the same strings, "
                          "so a larger teacher's sharper targets cost it little. Distilling from the oracle itself, "
                          "the limit of an unbounded teacher, measures that cost: its gain over the widest teacher is "
                          "negative where sharper targets hurt.",
              diagnosis=f"capacity_s{p.capacity_student_dims[-1]}_oracle_gain"),
        Claim("alm-beats-uld", ALM,
              statement="A pre-trained character student distilled from a BPE teacher by ALM plus next-token loss "
                        "reaches fewer bits per character than by ULD (plus next-token loss)",
              a="bits/char, ULD", b="bits/char, ALM + next-token", margin=BPC_MARGIN, rationale=BPC_RATIONALE,
              saturation_tol=BPC_MARGIN, budget_matched=XTOK_BUDGET,
              paper_figure="Table 1", paper_value="ALM beats prior cross-tokenizer methods (ULD, MinED, DSKD)",
              explanation="Next to the next-token term, ALM's chunk targets add little the transfer set's characters "
                          "do not carry; ALM alone on canonical and on debiased chunks (next claim) separates the "
                          "targets' bias from the term itself.",
              diagnosis="alm-alone-beats-next-token"),
        Claim("alm-beats-next-token", ALM,
              statement="...and fewer than next-token training alone on the same strings",
              a="bits/char, next-token", b="bits/char, ALM + next-token", margin=BPC_MARGIN,
              rationale=BPC_RATIONALE, saturation_tol=BPC_MARGIN, budget_matched=XTOK_BUDGET,
              paper_figure="Table 1", paper_value="distillation transfers the teacher beyond the data",
              explanation="As for ULD: the ALM term adds nothing the characters do not already carry.",
              diagnosis="alm-alone-beats-next-token"),
        Claim("alm-alone-beats-next-token", ALM,
              statement="ALM alone (pure distillation) reaches fewer bits per character than next-token training, "
                        "with the teacher's canonical chunk probabilities and with debiased ones",
              a="bits/char, next-token", b="bits/char, ALM alone", margin=BPC_MARGIN,
              rationale=BPC_RATIONALE, saturation_tol=BPC_MARGIN, budget_matched=XTOK_BUDGET,
              paper_figure="§3 (ALM as pure distillation)", paper_value="ALM needs no next-token term",
              explanation="Canonical chunk probabilities are biased low (they leave out longer tokens with the same "
                          "characters), so matching them pulls the student's character probabilities down; the "
                          "debiased group measures what removing that bias recovers.",
              diagnosis="xtok_debias_shift"),
    )


def evaluate_claims(run: Run) -> list[dict]:
    p = run.params
    c = {claim.id: claim for claim in claims(p)}
    n_small, n_large = p.offline_sizes[0], p.offline_sizes[-1]
    small = f"offline{n_small}"

    def g(name):
        return np.asarray(run.values(f"hacking_{name}_golden"), dtype=float)

    def u(name):  # U-depth per seed, moving as much as its golden curve still moves at the end
        return derived(relative_u_depth(g(name), WINDOW), [relative_change(c, WINDOW) for c in g(name)], WINDOW)

    def turn_up(name):  # the U-depth as a turn-up: a curve still falling at the end has none, not a negative one
        return derived(np.maximum(u(name).values(), 0.0), u(name).drift(), WINDOW)

    off_g, off_p = g(small), np.asarray(run.values(f"hacking_{small}_proxy"), dtype=float)
    oracle_bpc = run.values("oracle_bits_per_char")
    results = [
        c["offline-golden-turns-up"].evaluate(u(small)),
        c["proxy-falls-while-golden-rises"].evaluate(
            derived(np.minimum(u(small).values(), proxy_fall_after_golden_minimum(off_g, off_p, WINDOW, relative=True)),
                    u(small).drift(), WINDOW)),
        c["turn-up-is-teacher-hacking"].evaluate(u(small), turn_up(f"oracle{n_small}")),
        c["online-turns-up-less"].evaluate(u(small), turn_up("online")),
        c["on-policy-turns-up-less"].evaluate(u(small), turn_up("on_policy")),
    ]
    if n_small != n_large:
        results.append(c["diverse-offline-turns-up-less"].evaluate(u(small), turn_up(f"offline{n_large}")))
    results += [
        c["online-beats-offline"].evaluate(curve(off_g), curve(g("online"))),
        c["on-policy-beats-offline"].evaluate(curve(off_g), curve(g("on_policy"))),
        c["capacity-gap-u-shape"].evaluate({f"student width {d}": derived(relative_u_depth(run.values(f"capacity_s{d}_golden")),
                                                                          run.values(f"capacity_s{d}_drift"), WINDOW)
                                            for d in p.capacity_student_dims}),
    ]

    def xtok(method):
        return curve(run.values(f"xtok_{method}_bpc_curve"))

    return results + [
        c["alm-beats-uld"].evaluate(xtok("uld"), xtok("alm_ntp"), floor=oracle_bpc),
        c["alm-beats-next-token"].evaluate(xtok("ntp"), xtok("alm_ntp"), floor=oracle_bpc),
        c["alm-alone-beats-next-token"].evaluate({"canonical chunks": xtok("ntp"), "debiased chunks": xtok("ntp")},
                                                 {"canonical chunks": xtok("alm"),
                                                  "debiased chunks": xtok("alm_debiased")}, floor=oracle_bpc),
    ]


def record_health(run: Run) -> None:
    """The test-bed health table: every teacher against the exact oracle and the student it teaches."""
    run.health("confidently wrong teacher (§1-2)", "golden KL, nats/symbol", "teacher_golden", lower_is_better=True,
               references={"exact oracle": 0.0, "pre-trained student": "pretrained_student_golden"},
               note="exact: the oracle with a few states' emissions reversed; it must beat the student it teaches, "
                    "or distilling it is no help to undo")
    run.health("teacher at its wrong positions (§2)", "golden KL, nats/symbol", "teacher_golden_wrong",
               lower_is_better=True, references={"pre-trained student there": "pretrained_student_golden_wrong",
                                                 "teacher elsewhere": "teacher_golden_right",
                                                 "pre-trained student elsewhere": "pretrained_student_golden_right"},
               note="weighted by the oracle's belief that a reversed state emits next: the student must start better "
                    "than the teacher here, and worse elsewhere, for copying the teacher to cost it anything")
    run.health("widest capacity teacher (§3)", "golden KL, nats/symbol", "capacity_widest_teacher_golden",
               lower_is_better=True,
               references={"exact oracle": 0.0, "narrowest teacher": "capacity_narrowest_teacher_golden"},
               note="wider teachers must be better for the sweep to mean anything; each ends a cosine schedule (its "
                    "golden curve's last relative change is in the diagnosis list)")
    run.health("BPE teacher (§4)", "bits per character", "xtok_teacher_bpc", lower_is_better=True,
               references={"oracle entropy rate": "oracle_bits_per_char",
                           "pre-trained character student": "xtok_pretrained_bpc"},
               note="from the teacher's canonical-token probabilities, the targets ALM matches")


def arm_label(arm) -> str:
    name, regime, size, source = arm
    if regime == "offline":
        return f"offline, {size} strings" + (", oracle as teacher" if source == "oracle" else "")
    return {"online": "online (fresh teacher samples)", "on_policy": "on-policy (own samples)"}[regime]


def u_depth_by_size(run: Run) -> dict[str, list[float]]:
    """The offline-set size sweep: mean relative U-depth over seeds of every offline arm, teacher and control."""
    p = run.params
    return {source: [float(relative_u_depth(run.values(f"hacking_{source}{n}_golden"), WINDOW).mean())
                     for n in p.offline_sizes] for source in ("offline", "oracle")}


def best_teacher_ratios(run: Run, student_dim: int) -> np.ndarray:
    """Per seed: the best teacher's parameter count over the student's (the arg-min of the student's golden KL)."""
    goldens = np.asarray(run.values(f"capacity_s{student_dim}_golden"), dtype=float)
    params = np.asarray(run.values("capacity_teacher_parameters"), dtype=float)
    student = np.asarray(run.values(f"capacity_s{student_dim}_parameters"), dtype=float)
    return params[np.arange(len(goldens)), goldens.argmin(axis=1)] / student


def summary_markdown(run: Run, results: list[dict]) -> str:
    """What this run measured, in sentences built from its numbers and verdicts."""
    p = run.params
    v = {r["id"]: r["verdict"] for r in results}

    def ms(values, digits=3) -> str:
        x = np.asarray(values, dtype=float)
        return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}"

    zoo = np.asarray(run.values("zoo_golden")).mean(axis=0)
    valid = np.asarray(run.values("zoo_valid_share")).mean(axis=0)
    entropy_rate = LOG2 * float(np.mean(run.values("oracle_bits_per_char")))  # nats/symbol, the same in every seed
    sweep = u_depth_by_size(run)
    teacher_params = np.asarray(run.values("capacity_teacher_parameters"), dtype=float).mean(axis=0)
    capacity = []
    for d in p.capacity_student_dims:
        student_g = np.asarray(run.values(f"capacity_s{d}_golden")).mean(axis=0)
        ratios = best_teacher_ratios(run, d)
        capacity.append(f"width-{d} student ({run.values(f'capacity_s{d}_parameters')[0]:,} parameters): "
                        + ", ".join(f"{g:.3f}" for g in student_g)
                        + f", from the oracle {ms(run.values(f'capacity_s{d}_from_oracle_golden'))}; best teacher "
                        + ", ".join(f"{r:.3g}×" for r in ratios) + " its parameters across seeds")
    interior = all(0 < np.argmin(np.asarray(run.values(f"capacity_s{d}_golden"))[s]) < len(p.capacity_teacher_dims) - 1
                   for d in p.capacity_student_dims for s in range(len(run.seeds)))
    return "\n".join([
        f"Over {len(run.seeds)} seeds (profile `{run.profile}`); KL in nats per symbol:",
        "",
        f"- the oracle's entropy rate is {entropy_rate:.3f} nats/symbol; the confidently wrong teacher's golden KL is "
        f"{ms(run.values('teacher_golden'))}, the pre-trained student's {ms(run.values('pretrained_student_golden'))};",
        f"- divergence zoo: the lowest golden KL comes from `{p.zoo_divergences[int(np.argmin(zoo))]}` "
        f"({zoo.min():.3f}), the most valid samples from `{p.zoo_divergences[int(np.argmax(valid))]}` "
        f"({100 * valid.max():.0f}% valid);",
        f"- teacher hacking, final golden KL (mean of the last {WINDOW} evaluations): "
        + ", ".join(f"{arm_label(arm)} {ms(_final(run.values(f'hacking_{arm[0]}_golden')))}"
                    for arm in hacking_arms(p))
        + f"; offline U-shape *{v['offline-golden-turns-up']}*, with the proxy still falling "
        f"*{v['proxy-falls-while-golden-rises']}*;",
        f"- when the teacher's errors are copied (offline, {p.offline_sizes[0]} strings), the golden KL at its wrong "
        f"positions rises by the first evaluation by "
        + ", ".join(f"{x:.3f}" for x in run.values(f"hacking_offline{p.offline_sizes[0]}_wrong_rise_first"))
        + " and after it by " + ", ".join(f"{x:.3f}" for x in run.values(f"hacking_offline{p.offline_sizes[0]}_wrong_rise_after"))
        + " (per seed);",
        "- the offline-set size sweep, mean relative U-depth (teacher / oracle control): "
        + ", ".join(f"{n} strings {a:.3f} / {b:.3f}" for n, a, b in zip(p.offline_sizes, sweep["offline"],
                                                                          sweep["oracle"])) + ";",
        f"- capacity gap (teachers of {', '.join(f'{n:,.0f}' for n in teacher_params)} parameters, golden KL "
        + ", ".join(f"{g:.3f}" for g in np.asarray(run.values("capacity_teacher_golden")).mean(axis=0))
        + "): " + "; ".join(capacity) + f". U-shape *{v['capacity-gap-u-shape']}*; "
        + ("every best teacher is interior, so the ratios above test the constant-multiple half"
           if interior else "a best teacher at the end of the ladder is no optimum, so the constant-multiple half "
                            "is not tested") + ";",
        f"- cross-tokenizer, bits per character at the end (mean of the last {WINDOW} evaluations; oracle "
        f"{np.mean(run.values('oracle_bits_per_char')):.3f}, BPE teacher {ms(run.values('xtok_teacher_bpc'))}, "
        f"pre-trained start {ms(run.values('xtok_pretrained_bpc'))}): "
        + ", ".join(f"{label} {ms(_final(run.values(f'xtok_{m}_bpc_curve')))}" for m, label in XTOK_LABELS.items())
        + " (validation picked, across seeds, tau = " + ", ".join(f"{t:g}" for t in run.values("xtok_alm_tau"))
        + " for ALM alone, " + ", ".join(f"{t:g}" for t in run.values("xtok_alm_ntp_tau")) + " for ALM + next-token, "
        + ", ".join(f"{t:g}" for t in run.values("xtok_alm_debiased_tau")) + " for debiased ALM, and ULD's weight = "
        + ", ".join(f"{w:g}" for w in run.values("xtok_uld_weight")) + ").",
    ])


XTOK_LABELS = {"ntp": "next-token", "uld": "ULD", "alm": "ALM alone", "alm_ntp": "ALM + next-token",
               "alm_debiased": "ALM alone, debiased chunks"}


def glue_values(run: Run, bed: Bed) -> dict[str, float]:
    """The run's numbers that the chapter's prose quotes (glued into the page, never typed)."""
    p = run.params

    def m(name):
        return float(np.mean(run.values(name)))

    small, large = p.offline_sizes[0], p.offline_sizes[-1]
    sweep = u_depth_by_size(run)
    first, last = p.capacity_student_dims[0], p.capacity_student_dims[-1]
    return {
        "entropy_rate": bed.entropy_rate,
        "teacher_golden": m("teacher_golden"),
        "pretrained_student_golden": m("pretrained_student_golden"),
        "gap_offline_small": m(f"hacking_offline{small}_gap_to_teacher"),
        "gap_offline_large": m(f"hacking_offline{large}_gap_to_teacher"),
        "gap_oracle_control": m(f"hacking_oracle{small}_gap_to_teacher"),
        "gap_online": m("hacking_online_gap_to_teacher"),
        "gap_on_policy": m("hacking_on_policy_gap_to_teacher"),
        "wrong_rise_first": m(f"hacking_offline{small}_wrong_rise_first"),
        "wrong_rise_after": m(f"hacking_offline{small}_wrong_rise_after"),
        "control_wrong_rise_first": m(f"hacking_oracle{small}_wrong_rise_first"),
        "eval_every": p.eval_every,
        "u_teacher_small": sweep["offline"][0], "u_oracle_small": sweep["oracle"][0],
        "u_teacher_large": sweep["offline"][-1], "u_oracle_large": sweep["oracle"][-1],
        "capacity_widest_ratio_first": float(np.mean(run.values("capacity_teacher_parameters"), axis=0)[-1]
                                             / m(f"capacity_s{first}_parameters")),
        "capacity_widest_ratio_last": float(np.mean(run.values("capacity_teacher_parameters"), axis=0)[-1]
                                            / m(f"capacity_s{last}_parameters")),
        "capacity_oracle_gain_first": m(f"capacity_s{first}_oracle_gain"),
        "capacity_oracle_gain_last": m(f"capacity_s{last}_oracle_gain"),
        "capacity_teacher_drift": float(np.max(run.values("capacity_teacher_drift"))),
        "capacity_ladder_seconds": m("capacity_ladder_seconds"),
        "xtok_teacher_bpc": m("xtok_teacher_bpc"),
        "oracle_bpc": m("oracle_bits_per_char"),
        "xtok_debias_shift": m("xtok_debias_shift"),
        "alm_ntp_minus_ntp_bpc": float(np.mean(_final(run.values("xtok_alm_ntp_bpc_curve"))
                                               - _final(run.values("xtok_ntp_bpc_curve")))),
        "alm_minus_ntp_bpc": float(np.mean(_final(run.values("xtok_alm_bpc_curve"))
                                           - _final(run.values("xtok_ntp_bpc_curve")))),
    }
