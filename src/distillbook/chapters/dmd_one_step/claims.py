"""The chapter's claims and every text built from its numbers: verdicts, health, glued values, summaries."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from distillbook.chapters.dmd_one_step.params import (DIGIT_ARMS, DIGIT_LABELS, DMD2, GRID_ARMS, RING_ARMS, SID, SIM,
                                                      SWIFTBRUSH, TEACHER_LABEL_DROPOUT, TWO_D_LABELS, Params)
from distillbook.core import claims as claims_lib
from distillbook.core.claims import WINDOW, Claim, mean_std_text
from distillbook.core.results import Run

if TYPE_CHECKING:
    from distillbook.chapters.dmd_one_step.experiment import Bed

SW_MARGIN = 0.01      # SW units: a tenth of a ring mode's std (0.1)
CFID_MARGIN = 0.5     # cFID units: about the seed-to-seed spread of a perfect sampler's cFID (digits_cfid_data)
RECALL_MARGIN = 0.01  # one point of recall: 18 of the 1,797 reference digits
ROUGHNESS_MARGIN = 0.02  # a 2% mean change of SW from one evaluation to the next
SW_RATIONALE = ("a tenth of a ring mode's std (0.1): a smaller SW difference moves no sample visibly (the SW is taken "
                "against a stratified reference, so its remaining evaluation noise is the sampler's own, recorded as "
                "the bed's sw_data floor)")
CFID_RATIONALE = ("the resolution of cFID at the evaluation size: a bootstrap resample of the real digits (a perfect "
                  "sampler of the reference set, recorded per seed as digits_cfid_data) varies by about this much "
                  "between seeds")
SOLVERS = {"ddim": "DDIM", "euler": "Euler", "ddpm": "DDPM", "dpm": "DPM-Solver++"}
LOG_MARGIN = 0.1  # log units: a 10% larger rise of SW
TTUR_MOVEMENT = ("DMD2 (Section 4.1): without TTUR, training is unstable; DMD's curve not settling is the claimed "
                 "effect")
SIM_MOVEMENT = "SIM (Section 5): the other methods' degradation at high learning rates is the claimed effect"


def roughness(curves) -> list[float]:
    """Per seed: how much log SW jumps between consecutive evaluations over the second half of training, its steady
    trend taken out: mean_k |d_k - mean(d)|, d_k = log(SW_{k+1} / SW_k). A settled curve and one still falling at a
    steady rate score near 0; one that jumps scores its jumps."""
    out = []
    for c in curves:
        c = np.log(np.asarray(c, dtype=float))
        d = np.diff(c[len(c) // 2:])
        out.append(float(np.abs(d - d.mean()).mean()))
    return out


def claims(p: Params) -> tuple[Claim, ...]:
    top, w = max(p.teacher_nfes), p.guidance_scale
    few, fss = few_steps(p), SOLVERS[p.few_step_sampler]
    fast = f"{p.lr_multiplier:g}x"
    recall_2d_margin = round(2 * math.sqrt(0.25 / p.pr_samples), 3)
    return (
        Claim("dmd2-near-teacher", DMD2, statement=f"On grid2d, the one-step DMD2 student is within 1.5x of the "
              f"{top}-step teacher's distance to data, distances taken above the data-vs-data floor",
              a="SW², DMD2 one step", b=f"SW², teacher {top} steps", statistic="ratio", region=("<", 2.25),
              margin=0.0, convergence_tol=0.04,
              rationale="1.5x in SW is 2.25x in SW², and SW² because the finite-sample floor adds in squares "
                        "(SW² = true SW² + floor²); the 1.5x already is the toy's allowance for 'matches the "
                        "teacher', so no further margin. Convergence tolerance 0.04 on SW² is the default 0.02 on SW",
              paper_figure="Table 1 (ImageNet-64 FID 1.28 vs teacher 2.32)",
              paper_value="one step matches or beats the multi-step teacher",
              explanation="DMD2's SW is still falling slowly at the end of training, by a few percent per window "
                          "in SW (twice that in SW²); the budget stops before the plateau the convergence rule asks "
                          "for. Its evaluation curve shows the trend.",
              diagnosis="grid_sw_curve_dmd2"),
        Claim("dmd2-beats-few-step-teacher", DMD2, statement=f"On grid2d, the one-step DMD2 student is closer to the "
              f"data than the teacher sampled with {few} steps of {fss}, the strongest few-step solver here",
              a="SW, DMD2 one step", b=f"SW, teacher {few} steps ({fss})",
              region=("<", 0.0), margin=SW_MARGIN, rationale=SW_RATIONALE,
              paper_figure="Table 1 / Figure 1 (one step against the teacher's few-step samplers)",
              paper_value="one step beats the teacher's few-step samples",
              explanation="as for dmd2-near-teacher: the student's SW is still falling when training stops.",
              diagnosis="grid_sw_curve_dmd2"),
        Claim("ttur-stabilises", DMD2, statement=f"Two time-scale updates ({p.ttur_ratio} fake updates per generator "
              "update) make grid2d training steadier: SW jumps less between evaluations in the second half of "
              "training than with 1 update", a="SW roughness, DMD2 (TTUR)", b="SW roughness, DMD",
              region=("<", 0.0), margin=ROUGHNESS_MARGIN,
              rationale="roughness is the mean jump of log SW between evaluations (steady trend removed); 2% per "
                        "evaluation is the book's default convergence tolerance, so a smaller difference separates "
                        "two curves that would both pass as settled",
              paper_figure="Section 4.1, ablation of TTUR", paper_value="without TTUR training is unstable",
              explanation="with one fake update per generator update at the same rate, the fake score would have to "
                          "track the generator closely enough that there is no lag for TTUR to remove; DMD's curve "
                          "shows whether it does.", diagnosis="grid_sw_curve_dmd"),
        Claim("ttur-covers-rare-modes", DMD2, statement="...and cover more of grid2d's 4 rare corner modes (a tenth "
              "of the weight of the others)", a="rare modes, DMD2 (TTUR)", b="rare modes, DMD", margin=0.5,
              floor=0.0, ceiling=4.0, saturation_tol=0.5, movement_is_the_claim=TTUR_MOVEMENT,
              rationale="a mode is the unit: half a mode on average (one mode in every other seed) is the smallest "
                        "effect worth reporting; saturated when both arms round to 4 of 4",
              paper_figure="Section 4.1", paper_value="TTUR keeps mode coverage",
              explanation="the rare corners are the modes farthest from the generator's start (the teacher's blurry "
                          "one-step estimate); DMD without TTUR reaches them too when its fake score keeps up.",
              diagnosis="grid_rare_curve_dmd"),
        Claim("ttur-more-recall", DMD2, statement="...and raise recall (the share of data points whose neighbourhood "
              "the samples reach)", a="recall, DMD2 (TTUR)", b="recall, DMD", margin=recall_2d_margin, floor=0.0,
              ceiling=1.0, saturation_tol=0.01, movement_is_the_claim=TTUR_MOVEMENT,
              rationale=f"two binomial standard errors of a share near 0.5 on the {p.pr_samples:,} points that "
                        "precision and recall use, 2·√(0.25/n); the ceiling is fresh data's own recall (grid_recall_data)",
              paper_figure="Section 4.1", paper_value="TTUR keeps mode coverage",
              explanation="as for ttur-covers-rare-modes.", diagnosis="grid_recall_curve_dmd"),
        Claim("gan-beats-teacher", DMD2, statement=f"With the GAN term (real data), the student of an under-trained "
              f"ring2d teacher beats that teacher's {top}-step samples", a="SW, DMD2 + GAN (under-trained teacher)",
              b=f"SW, under-trained teacher, {top} steps", region=("<", 0.0), margin=SW_MARGIN,
              rationale=SW_RATIONALE, paper_figure="Table 1 / Section 4.3",
              paper_value="FID 1.28 vs teacher 2.32 (ImageNet-64)",
              explanation=f"the one-step student lands above its teacher's {top}-step SW with or without the GAN "
                          "term, so the distillation adds error of its own; the GAN term (weight "
                          f"{p.gan_weight:g}) would have to remove that error as well as the teacher's. Its own "
                          "effect is measured against DMD2 without it.",
              diagnosis="gan-improves-on-dmd2"),
        Claim("gan-improves-on-dmd2", DMD2, statement="Adding the GAN term lowers the SW to data of DMD2 distilled "
              "from the under-trained ring2d teacher", a="SW, DMD2 + GAN (under-trained teacher)",
              b="SW, DMD2 (under-trained teacher)", region=("<", 0.0), margin=SW_MARGIN, rationale=SW_RATIONALE,
              paper_figure="DMD2 ablations (ImageNet-64, SDXL)", paper_value="removing the GAN loss worsens FID",
              explanation=f"at GAN weight {p.gan_weight:g} and {p.ring_steps} generator updates the discriminator's "
                          "signal is too weak to move the student off the teacher's errors (untested: no run varies "
                          "the weight)."),
        Claim("sim-robust-vs-sid", SIM, statement=f"At {fast} the learning rates, SIM's SW on ring2d degrades less "
              "than SiD's (per seed: the log of SW at the high rates over SW at the default ones)",
              a="log SW rise, SIM", b="log SW rise, SiD", region=("<", 0.0), margin=LOG_MARGIN,
              rationale="a 10% larger rise of SW (0.1 in log units) is the smallest difference worth reporting; the "
                        "log keeps a student that blows up from deciding the mean alone",
              movement_is_the_claim=SIM_MOVEMENT, paper_figure="SIM Section 5 (robustness)", paper_value="robust to hyper-parameters",
              explanation="with c far below the denoisers' disagreement, SIM's per-sample direction is the unit "
                          "vector of that disagreement, so samples where the two denoisers barely disagree push as "
                          "hard as the rest (untested: no run varies c)."),
        Claim("swiftbrush-near-teacher", SWIFTBRUSH, statement=f"The image-free SwiftBrush student's cFID is at most "
              f"1.5x the {top}-step guided teacher's (digits), both above the data floor", a="cFID, SwiftBrush",
              b=f"cFID, teacher {top} steps", statistic="ratio", region=("<", 1.5), margin=0.0,
              rationale="the 1.5x is the toy's allowance for 'competitive with the multi-step teacher', so no "
                        "further margin; cFID is a squared distance, so its finite-sample floor (digits_cfid_data) "
                        "is subtracted as it stands",
              paper_figure="Table 1 (COCO-30K FID 16.67)",
              paper_value="competitive with multi-step SD 2.1 without training images",
              explanation="the one-step student collapses onto fewer digit styles than its guided teacher draws: its "
                          "recall falls along training, after its best cFID, and cFID counts the missing styles.",
              diagnosis="digits_recall_curve_vsd"),
        Claim("sds-ablation-less-recall", SWIFTBRUSH, statement="Replacing the LoRA fake score by the injected noise "
              "(SDS) lowers recall: SDS is mode-seeking", a="recall, SDS", b="recall, SwiftBrush", region=("<", 0.0),
              margin=RECALL_MARGIN, floor=0.0, ceiling=1.0,
              rationale="one point of recall (18 of the 1,797 reference digits) is the smallest change worth "
                        "reporting; a bootstrap resample of the data (digits_recall_data) moves by about that much",
              paper_figure="SwiftBrush Section 3 (SDS gives over-saturated, collapsed samples)",
              paper_value="qualitative", explanation="both one-step students collapse towards prototypical digits; "
              "the LoRA fake score does not keep SwiftBrush's diversity above SDS's at this scale.",
              diagnosis="digits_recall_curve_sds"),
        Claim("zero-cfg-more-recall", SID, statement="Zero-CFG raises recall over CFG", a="recall, SiD Zero-CFG",
              b="recall, SiD CFG", margin=RECALL_MARGIN, floor=0.0, ceiling=1.0,
              rationale="one point of recall (18 of the 1,797 reference digits) is the smallest change worth "
                        "reporting; a bootstrap resample of the data (digits_recall_data) moves by about that much",
              paper_figure="SiD few-step, Zero-/Anti-CFG ablation",
              paper_value="more diversity at equal text alignment",
              explanation="an unconditional fake score still learns the generator's class-conditional samples as a "
                          "mixture, and the unguided teacher keeps the generator near the classes' modes; recall "
                          "along training shows where both arms settle.", diagnosis="digits_recall_curve_sid_zero"),
        Claim("anti-cfg-more-recall", SID, statement="Anti-CFG raises recall over CFG", a="recall, SiD Anti-CFG",
              b="recall, SiD CFG", margin=RECALL_MARGIN, floor=0.0, ceiling=1.0,
              rationale="one point of recall (18 of the 1,797 reference digits) is the smallest change worth "
                        "reporting; a bootstrap resample of the data (digits_recall_data) moves by about that much",
              paper_figure="SiD few-step", paper_value="more diversity",
              explanation=f"with the fake score guided at {p.anti_cfg_scale:g}, the generator's update gains "
                          f"{-p.anti_cfg_scale:g} times the fake score's own class direction, a push that grows as the "
                          "fake score learns the generator's classes and has no fixed point: the samples leave the "
                          "digits (their class accuracy falls along training). The diagnosis trains the same student "
                          f"at a quarter of the scale ({p.anti_cfg_scale / 4:g}): if the push is the cause, its "
                          "accuracy falls less; its recall (digits_recall_sid_anti_mild) shows whether removing the "
                          "divergence buys any diversity over CFG.",
              diagnosis="digits_accuracy_curve_sid_anti_mild"),
    )


def uniform_share(p: Params) -> float:
    """The share of samples within 3 std of a grid mode for a uniform fill of the grid's cells (modes 1 apart)."""
    return math.pi * (3 * p.grid_std) ** 2


def few_steps(p: Params) -> int:
    """The teacher's few-step sampler the students must beat: the largest step count below the top one."""
    below = [n for n in p.teacher_nfes if n < max(p.teacher_nfes)]
    return max(below) if below else max(p.teacher_nfes)


def evaluate_claims(run: Run) -> list[dict]:
    p = run.params
    top, w, few = max(p.teacher_nfes), p.guidance_scale, few_steps(p)
    c = {claim.id: claim for claim in claims(p)}

    def v(name):
        return np.asarray(run.values(name), dtype=float)

    def cv(name):
        return claims_lib.curve(run.values(name))

    teacher = f"teacher{top}_w{w:g}"
    sw2_dmd2 = claims_lib.curve((np.asarray(run.values("grid_sw_curve_dmd2"), dtype=float) ** 2).tolist())

    def rise(arm):
        """Per seed: tail log SW at the high learning rates minus tail log SW at the default ones; each seed's drift
        is the larger relative change of the two SW curves (a log curve's own relative change depends on SW's units
        and blows up near SW = 1)."""
        fast, slow = (run.values(f"ring_sw_curve_{arm}{suffix}") for suffix in ("_fast", ""))
        values = [claims_lib.tail_mean(np.log(f)) - claims_lib.tail_mean(np.log(s)) for f, s in zip(fast, slow)]
        drifts = [max(claims_lib.relative_change(f), claims_lib.relative_change(s)) for f, s in zip(fast, slow)]
        return claims_lib.derived(values, drifts)

    return [
        c["dmd2-near-teacher"].evaluate(sw2_dmd2, v(f"grid_sw_teacher{top}") ** 2, floor=v("grid_sw_data") ** 2),
        c["dmd2-beats-few-step-teacher"].evaluate(cv("grid_sw_curve_dmd2"),
                                                  v(f"grid_sw_teacher{few}_{p.few_step_sampler}")),
        c["ttur-stabilises"].evaluate(roughness(run.values("grid_sw_curve_dmd2")),
                                      roughness(run.values("grid_sw_curve_dmd"))),
        c["ttur-covers-rare-modes"].evaluate(cv("grid_rare_curve_dmd2"), cv("grid_rare_curve_dmd")),
        c["ttur-more-recall"].evaluate(cv("grid_recall_curve_dmd2"), cv("grid_recall_curve_dmd"),
                                       ceiling=v("grid_recall_data")),
        c["gan-beats-teacher"].evaluate(cv("ring_sw_curve_weak_dmd2_gan"), v(f"ring_sw_weak_teacher{top}")),
        c["gan-improves-on-dmd2"].evaluate(cv("ring_sw_curve_weak_dmd2_gan"), cv("ring_sw_curve_weak_dmd2")),
        c["sim-robust-vs-sid"].evaluate(rise("sim"), rise("sid")),
        c["swiftbrush-near-teacher"].evaluate(cv("digits_cfid_curve_vsd"), v(f"digits_cfid_{teacher}"),
                                              floor=v("digits_cfid_data")),
        c["sds-ablation-less-recall"].evaluate(cv("digits_recall_curve_sds"), cv("digits_recall_curve_vsd")),
        c["zero-cfg-more-recall"].evaluate(cv("digits_recall_curve_sid_zero"), cv("digits_recall_curve_sid_cfg")),
        c["anti-cfg-more-recall"].evaluate(cv("digits_recall_curve_sid_anti"), cv("digits_recall_curve_sid_cfg")),
    ]


def record_health(run: Run) -> None:
    """The test-bed health rows: each teacher and the measuring classifier against its oracle, floor or ceiling."""
    p = run.params
    top, w, few = max(p.teacher_nfes), p.guidance_scale, few_steps(p)
    floor = "data floor (fresh data)"
    for bed, note in (("ring", "the SIM claims' teacher, near its oracle in SW"),
                      ("grid", "the DMD2 and TTUR claims' teacher, above its oracle: see the text")):
        run.health(f"{bed}2d teacher, {top} steps", "SW to data", f"{bed}_sw_teacher{top}", lower_is_better=True,
                   references={f"exact-score oracle, {top} steps": f"{bed}_sw_oracle{top}", floor: f"{bed}_sw_data"},
                   note=f"cosine-annealed rate; {note}")
        fss = p.few_step_sampler
        run.health(f"{bed}2d teacher, {few} steps of {SOLVERS[fss]}", "SW to data", f"{bed}_sw_teacher{few}_{fss}",
                   lower_is_better=True, references={f"exact-score oracle, {few} steps of {SOLVERS[fss]}":
                                                     f"{bed}_sw_oracle{few}_{fss}", floor: f"{bed}_sw_data"},
                   note="the few-step sampler a one-step student should beat")
    run.health(f"ring2d under-trained teacher, {top} steps", "SW to data", f"ring_sw_weak_teacher{top}",
               lower_is_better=True, references={f"exact-score oracle, {top} steps": f"ring_sw_oracle{top}",
                                                 floor: "ring_sw_data"},
               note=f"under-trained on purpose ({p.weak_teacher_steps} steps): the GAN claims' teacher only")
    run.health(f"grid2d teacher, {top} steps", "share near a mode (within 3 std)", f"grid_quality_teacher{top}",
               lower_is_better=False, references={"exact-score oracle": f"grid_quality_oracle{top}",
                                                  "data": "grid_quality_data"},
               note=f"a uniform fill of the grid scores π(3 std)² ≈ {uniform_share(p):.2f} (modes 1 apart)")
    run.health(f"grid2d teacher, {top} steps", "rare modes covered (of 4)", f"grid_rare_teacher{top}",
               lower_is_better=False, references={"exact-score oracle": f"grid_rare_oracle{top}", "data": "grid_rare_data"},
               note="")
    run.health(f"grid2d teacher, {top} steps", "recall", f"grid_recall_teacher{top}", lower_is_better=False,
               references={"exact-score oracle": f"grid_recall_oracle{top}", "data": "grid_recall_data"},
               note="a sampler spread between modes widens the k-NN balls, so recall can exceed the data's own")
    run.health(f"digits teacher, {top} steps, unguided", "cFID", f"digits_cfid_teacher{top}_w1", lower_is_better=True,
               references={"data floor (bootstrap resample)": "digits_cfid_data"},
               note="the guided teacher (the students' target) trades cFID for precision")
    run.health(f"digits teacher, {top} steps, unguided", "recall", f"digits_recall_teacher{top}_w1",
               lower_is_better=False, references={"data (bootstrap resample)": "digits_recall_data", "ceiling": 1.0},
               note="")
    run.health(f"digits teacher, {top} steps, guidance {w:g}", "class accuracy", f"digits_accuracy_teacher{top}_w{w:g}",
               lower_is_better=False, references={"ceiling": 1.0},
               note="at its ceiling, as are most students: accuracy cannot separate the guidance variants")
    run.health("digit classifier (the instrument)", "test accuracy (held-out split)", "digits_classifier_test_accuracy",
               lower_is_better=False, references={"ceiling": 1.0}, note="trained on the first seed's training split")


def glue_values(run: Run, bed: Bed) -> dict[str, float]:
    """Every number the notebook's prose quotes (glued with myst-nb)."""
    p = run.params
    top, low, w, few = max(p.teacher_nfes), min(p.teacher_nfes), p.guidance_scale, few_steps(p)

    def mean(name):
        return float(np.mean(run.values(name)))

    def tail(name):  # the mean of a curve's last window, averaged over seeds
        return float(claims_lib.curve(run.values(name)).values().mean())

    sw_dmd2 = claims_lib.curve(run.values("grid_sw_curve_dmd2")).values()
    def v(name):
        return np.asarray(run.values(name), dtype=float)

    grid_floor2, grid_oracle2 = np.mean(v("grid_sw_data") ** 2), np.mean(v(f"grid_sw_oracle{top}") ** 2)
    v_cfid_data = np.asarray(run.values("digits_cfid_data"), dtype=float)
    v_cfid_teacher = np.asarray(run.values(f"digits_cfid_teacher{top}_w{w:g}"), dtype=float)
    return {
        "teacher_label_dropout_pct": 100 * TEACHER_LABEL_DROPOUT, "window": WINDOW, "n_seeds": len(run.seeds),
        "few_steps": few, "top_steps": top, "weak_teacher_steps": p.weak_teacher_steps,
        "grid_teacher1_sw": mean(f"grid_sw_teacher{low}"), "grid_teacher1_modes": mean(f"grid_modes_teacher{low}"),
        "grid_dmd2_sw": float(sw_dmd2.mean()),
        "dmd2_over_teacher1": float(np.mean(sw_dmd2 / np.asarray(run.values(f"grid_sw_teacher{low}")))),
        "ring_teacher_sw": mean(f"ring_sw_teacher{top}"), "ring_oracle_sw": mean(f"ring_sw_oracle{top}"),
        "ring_data_sw": mean("ring_sw_data"), "ring_weak_sw": mean(f"ring_sw_weak_teacher{top}"),
        "grid_teacher_sw": mean(f"grid_sw_teacher{top}"), "grid_oracle_sw": mean(f"grid_sw_oracle{top}"),
        "grid_data_sw": mean("grid_sw_data"), "grid_teacher_few_sw": mean(f"grid_sw_teacher{few}"),
        "grid_oracle_few_sw": mean(f"grid_sw_oracle{few}"),
        "grid_teacher_few_fss_sw": mean(f"grid_sw_teacher{few}_{p.few_step_sampler}"),
        "grid_teacher_quality": mean(f"grid_quality_teacher{top}"), "uniform_quality": uniform_share(p),
        "grid_oracle_quality": mean(f"grid_quality_oracle{top}"),
        "anti_mild_recall_tail": tail("digits_recall_curve_sid_anti_mild"),
        "cfg_recall_tail": tail("digits_recall_curve_sid_cfg"),
        "grid_dmd2_precision": tail("grid_precision_curve_dmd2"), "grid_teacher_precision": mean(f"grid_precision_teacher{top}"),
        "grid_oracle_precision": mean(f"grid_precision_oracle{top}"), "grid_dmd_few_sw": tail("grid_sw_curve_dmd"),
        "roughness_dmd": float(np.mean(roughness(run.values("grid_sw_curve_dmd")))),
        "roughness_dmd2": float(np.mean(roughness(run.values("grid_sw_curve_dmd2")))),
        "cfid_data": mean("digits_cfid_data"), "cfid_teacher_unguided": mean(f"digits_cfid_teacher{top}_w1"),
        "cfid_teacher_guided": mean(f"digits_cfid_teacher{top}_w{w:g}"),
        "recall_teacher_guided": mean(f"digits_recall_teacher{top}_w{w:g}"),
        "recall_teacher_unguided": mean(f"digits_recall_teacher{top}_w1"),
        "recall_students_max": max(tail(f"digits_recall_curve_{a}") for a in DIGIT_ARMS),
        "recall_students_peak": max(float(np.mean([max(c) for c in run.values(f"digits_recall_curve_{a}")]))
                                    for a in DIGIT_ARMS),
        "anti_accuracy_tail": tail("digits_accuracy_curve_sid_anti"),
        "accuracy_students_min": min(tail(f"digits_accuracy_curve_{a}") for a in DIGIT_ARMS if "anti" not in a),
        "anti_mild_accuracy_tail": tail("digits_accuracy_curve_sid_anti_mild"),
        # SW² above the data floor, against the exact-score oracle's, pooled over seeds (the oracle sits so near the
        # floor that a single seed's excess can be negative)
        "dmd2_excess_over_oracle": float((np.mean(sw_dmd2 ** 2) - grid_floor2) / (grid_oracle2 - grid_floor2)),
        "teacher_excess_over_oracle": float((np.mean(v(f"grid_sw_teacher{top}") ** 2) - grid_floor2)
                                            / (grid_oracle2 - grid_floor2)),
        # SwiftBrush against its teacher above the floor, at each seed's best evaluation (chosen on the measure
        # itself, so optimistic) and at the tail the claim reads
        "swiftbrush_ratio_best": float(np.mean(
            (np.min(run.values("digits_cfid_curve_vsd"), axis=1) - v_cfid_data) / (v_cfid_teacher - v_cfid_data))),
        "swiftbrush_ratio_tail": float(np.mean(
            (claims_lib.curve(run.values("digits_cfid_curve_vsd")).values() - v_cfid_data) / (v_cfid_teacher - v_cfid_data))),
    }


def _beats(run: Run, bed: str, arms, teacher: str) -> tuple[list[str], list[str]]:
    """Which students' last-window SW is below (in every seed) or above (in every seed) a teacher's."""
    ref = np.asarray(run.values(f"{bed}_sw_{teacher}"), dtype=float)
    below, above = [], []
    for arm in arms:
        tail = claims_lib.curve(run.values(f"{bed}_sw_curve_{arm}")).values()
        if np.all(tail < ref):
            below.append(TWO_D_LABELS.get(arm.removesuffix("_fast"), arm) + (" (fast)" if arm.endswith("_fast") else ""))
        elif np.all(tail > ref):
            above.append(TWO_D_LABELS.get(arm.removesuffix("_fast"), arm) + (" (fast)" if arm.endswith("_fast") else ""))
    return below, above


def summary_markdown(run: Run, results: list[dict]) -> str:
    """What the verdicts say (the 'Reading the verdicts' paragraphs), generated from the run's verdicts and numbers."""
    p = run.params
    top, few = max(p.teacher_nfes), few_steps(p)
    by_id = {r["id"]: r for r in results}
    counts = claims_lib.count_verdicts(results)
    lines = [f"Of {len(results)} claims, {counts['reproduced']} reproduced, {counts['not reproduced']} did not, and "
             f"{counts['inconclusive']} are inconclusive."]
    saturated = [r for r in results if r["reason"] == claims_lib.SATURATED]
    if saturated:
        lines.append("- **Saturated.** " + " ".join(f"`{r['id']}`: {r['saturation']['why']}." for r in saturated))
    unsettled = [r for r in results if r["reason"] == claims_lib.NOT_CONVERGED]
    if unsettled:
        parts = []
        for r in unsettled:
            drifts = [x for x in (r["convergence"]["drift_a"], r["convergence"]["drift_b"]) if x]
            worst = max(max(d) for d in drifts)
            where = {claims_lib.INSIDE: "in the claimed region", claims_lib.OUTSIDE: "against the claim",
                     claims_lib.ACROSS: "across the decision line"}[claims_lib.side(
                         r["measured"]["ci95"], (r["region_kind"], r["region_bound"]), r["margin"])]
            parts.append(f"`{r['id']}` (largest drift {worst:.1%} against a tolerance of {r['convergence']['tol']:.1%}; "
                         f"the interval lies {where})")
        lines.append("- **Not settled.** The last window of evaluations still moves for " + ", ".join(parts)
                     + ". Where the interval lies is what the numbers say so far; the rule does not turn it into a "
                     "verdict.")
    decided = [r for r in results if r["verdict"] != claims_lib.INCONCLUSIVE]
    if decided:
        lines.append("- **Decided.** " + "; ".join(f"`{r['id']}` {r['verdict']}" for r in decided) + ".")
    r = by_id.get("dmd2-near-teacher")
    if r:
        lines.append(f"- **Against the teacher.** Above the data floor, DMD2's SW² on grid2d is {r['measured']['mean']:.2f} "
                     f"times the {top}-step teacher's (claimed below 2.25, i.e. 1.5x in SW): {claims_lib.verdict_text(r)}.")
    for bed, arms, teacher, label in (("grid", GRID_ARMS, f"teacher{top}", f"its {top}-step teacher"),
                                      ("grid", GRID_ARMS, f"teacher{few}_{p.few_step_sampler}",
                                       f"its {few}-step teacher ({SOLVERS[p.few_step_sampler]})"),
                                      ("ring", [a for a in RING_ARMS if not a.startswith("weak_")], f"teacher{top}",
                                       f"its {top}-step teacher"),
                                      ("ring", [a for a in RING_ARMS if a.startswith("weak_")], f"weak_teacher{top}",
                                       f"its under-trained teacher's {top}-step samples")):
        below, above = _beats(run, bed, arms, teacher)
        text = (", ".join(below) if below else "no student") + (" end" if len(below) > 1 else " ends") + \
            f" below {label} in every seed"
        if above:
            text += "; " + ", ".join(above) + " above it in every seed"
        lines.append(f"- **{bed}2d against {label}.** On SW, {text}.")
    return "\n".join(lines)


def measurements_markdown(run: Run) -> str:
    """Every measured sampler of every test bed, as tables (mean ± std over seeds)."""
    p = run.params
    v = run.values
    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), mean ± std; 2-D students at their final EMA "
             "generator.", ""]
    for bed, arms in (("grid", GRID_ARMS), ("ring", RING_ARMS)):
        rare = bed == "grid"
        lines += [f"**{bed}2d**:", "", "| sampler | SW | modes covered | " + ("rare modes (of 4) | " if rare else "")
                  + "share near a mode | precision | recall |", "|---|---|---|" + ("---|" if rare else "") + "---|---|---|"]
        rows = [("data", "fresh data (the floor)")]
        rows += [(f"oracle{n}", f"exact-score oracle, {n} step(s)") for n in p.teacher_nfes]
        rows += [(f"teacher{n}", f"teacher, {n} step(s)") for n in p.teacher_nfes]
        fss = p.few_step_sampler
        rows += [(f"{who}{n}_{fss}", f"{label}, {n} step(s) of {SOLVERS[fss]}") for who, label in
                 (("oracle", "exact-score oracle"), ("teacher", "teacher")) for n in p.teacher_nfes
                 if n < max(p.teacher_nfes)]
        if bed == "ring":
            rows += [(f"weak_teacher{n}", f"under-trained teacher, {n} step(s)") for n in p.teacher_nfes]
        for arm in arms:
            label = TWO_D_LABELS.get(arm.removesuffix("_fast"), arm)
            rows.append((arm, label + (f", {p.lr_multiplier:g}x learning rates" if arm.endswith("_fast") else "")))
        for key, label in rows:
            cells = [mean_std_text(v(f"{bed}_{m}_{key}")) for m in ("sw", "modes") + (("rare",) if rare else ())
                     + ("quality", "precision", "recall")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"**digits** (classifier features; guidance {p.guidance_scale:g} unless marked):", "",
              "| sampler | cFID | class accuracy | precision | recall |", "|---|---|---|---|---|"]
    names = [f"teacher{n}_w{p.guidance_scale:g}" for n in p.teacher_nfes] + [f"teacher{max(p.teacher_nfes)}_w1"]
    for name in ["data"] + names + list(DIGIT_ARMS):
        label = "bootstrap resample of the data (the floor)" if name == "data" else (
            DIGIT_LABELS.get(name) or (f"teacher, {name.split('_w')[0].removeprefix('teacher')} step(s), "
                                       f"guidance {name.split('_w')[1]}"))
        lines.append(f"| {label} | {mean_std_text(v(f'digits_cfid_{name}'))} | {mean_std_text(v(f'digits_accuracy_{name}'))} | "
                     f"{mean_std_text(v(f'digits_precision_{name}'))} | {mean_std_text(v(f'digits_recall_{name}'))} |")
    return "\n".join(lines)
