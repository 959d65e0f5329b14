"""The chapter's claims and every text built from its numbers: verdicts, health, glued values, summaries."""

from __future__ import annotations

import numpy as np

from distillbook.chapters.foundations.experiment import Bed, omit_arms, soft_name
from distillbook.chapters.foundations.params import Params
from distillbook.core import claims as claims_lib
from distillbook.core.claims import Claim
from distillbook.core.results import Run
from distillbook.testbeds import digits

HINTON = "Hinton et al. (2015)"

TEST_IMAGES = digits.TEST_SIZE
ACC_MARGIN = 0.005  # half a point of test accuracy
ACC_CONVERGENCE_TOL = 0.005  # the margin (relative, at accuracies near 1: about half a point)
ACC_RATIONALE = (f"half a point: 2.5 of each seed's {TEST_IMAGES} test images (resolution {100 / TEST_IMAGES:.1f} "
                 "points an image), below the paper's headline gain (MNIST 146 → 74 errors of 10,000 = 0.72 points); "
                 "every seed redraws its test split, so the interval covers which images were tested; arms are tail "
                 f"means of the last {claims_lib.WINDOW} evaluations; a tail that moved by more than "
                 f"{ACC_CONVERGENCE_TOL:g} relative (about half a point, the margin) against the window before is not "
                 "converged: a tail still moving by more than the smallest effect worth reporting cannot decide one")
ACC_BOUNDS = dict(ceiling=1.0, saturation_tol=1 / TEST_IMAGES, convergence_tol=ACC_CONVERGENCE_TOL,
                  margin=ACC_MARGIN, rationale=ACC_RATIONALE)
PAPER_GAIN = (146 - 74) / 10_000  # the paper's headline gain in accuracy: 146 → 74 MNIST test errors of 10,000
OMIT_TEST_IMAGES = TEST_IMAGES // digits.N_CLASSES  # the stratified test set holds about 50 of each digit


def claims(p: Params) -> tuple[Claim, ...]:
    """The chapter's claims, at the temperatures fixed in advance by ``p``."""
    big, alike, small = (f"T = {p.mnist_temperature:g}", f"T = {p.wide_alike_temperature:g}",
                         f"T = {p.small_net_temperature:g}")
    wide, tiny = "×".join(map(str, p.wide_hidden)), "×".join(map(str, p.small_hidden))
    n_few = p.labelled_per_class * digits.N_CLASSES
    return (
        Claim("soft-targets-beat-hard-labels", None, reference=HINTON,
              statement=f"The same unregularised {wide} net trained on every training label does better with the "
                        f"teacher's soft targets ({big}) added than with the labels alone (test accuracy)",
              a=f"{wide} student, labels + soft targets, {big}", b=f"{wide} student, labels only", **ACC_BOUNDS,
              paper_figure="§3, MNIST", paper_value="2×800 net: 146 test errors → 74 with soft targets (T = 20); "
                                                    "the teacher (dropout, jittered inputs) makes 67",
              explanation="the paper found a considerably lower weight on the labels than on the soft targets "
                          f"best, and this claim weights them equally: the same student with α = "
                          f"{p.diagnosis_alpha:g} in this run tests whether the weight holds the gain back (the "
                          "resolution paragraph computes the smallest gain this run could call reproduced).",
              diagnosis=f"wide_{soft_name(p.mnist_temperature)}_alpha{p.diagnosis_alpha:g}_curve"),
        Claim("high-temperatures-alike", None, reference=HINTON,
              statement=f"For the {wide} student, soft targets at {alike} and {big} give about the same accuracy "
                        f"(difference within ±{100 * ACC_MARGIN:g} points)",
              a=f"{wide} student, {alike}", b=f"{wide} student, {big}", region=("within", (-ACC_MARGIN, ACC_MARGIN)),
              margin=0.0, ceiling=1.0, saturation_tol=1 / TEST_IMAGES, convergence_tol=ACC_CONVERGENCE_TOL,
              rationale=f"'fairly similar' read as within the chapter's accuracy margin, ±{100 * ACC_MARGIN:g} points "
                        f"(2.5 of {TEST_IMAGES} test images an arm); 'alike' needs the whole interval inside",
              paper_figure="§3", paper_value="300+ units per layer: all temperatures above 8 gave fairly similar results",
              explanation="an interval wider than the band cannot show equivalence however close the means are; "
                          "the per-seed differences in the forest plot show the spread.",
              diagnosis=f"wide_{soft_name(p.wide_alike_temperature)}_curve"),
        Claim("small-net-moderate-temperature-beats-high", None, reference=HINTON,
              statement=f"For the small {tiny} student on every training label, soft targets at {small} beat "
                        f"{big} (test accuracy)",
              a=f"{tiny} student, {small}", b=f"{tiny} student, {big}", **ACC_BOUNDS,
              paper_figure="§3", paper_value="30 units per layer: T in 2.5–4 significantly better than higher or "
                                             "lower temperatures",
              explanation="the paper's reason is the net's size: a net this small cannot also fit the smallest "
                          "logits that high temperatures make it match. The wide student trained at the same two "
                          "temperatures in this run shows whether the preference belongs to the small net.",
              diagnosis=f"wide_{soft_name(p.small_net_temperature)}_curve"),
        Claim("small-net-moderate-temperature-beats-1", None, reference=HINTON,
              statement=f"For the small {tiny} student on every training label, soft targets at {small} beat T = 1 "
                        "(test accuracy)",
              a=f"{tiny} student, {small}", b=f"{tiny} student, T = 1", **ACC_BOUNDS,
              paper_figure="§3", paper_value="30 units per layer: T in 2.5–4 significantly better than higher or "
                                             "lower temperatures",
              explanation="a student this small may spend its few units on the teacher's small probabilities "
                          "rather than gain from them; the same student on the labels alone, beside the whole "
                          "temperature sweep, shows whether any temperature helps it.",
              diagnosis="small_hard_curve"),
        Claim("soft-targets-regularise", None, reference=HINTON,
              statement=f"On a small labelled set alone ({n_few} images), the {tiny} student does better with the "
                        f"teacher's soft targets ({small}) on those images than with their labels alone",
              a=f"{n_few} images, labels + soft targets, {small}", b=f"{n_few} images, labels only", **ACC_BOUNDS,
              paper_figure="Table 5 (speech, 3% of the data)", paper_value="44.5% → 57.0% test frame accuracy "
                                                                           "(the teacher trained on all the data)",
              explanation="soft targets on the labelled images help only through the teacher's small probabilities "
                          "for the other classes.",
              diagnosis="small_few_soft_curve"),
        Claim("semi-supervised-transfer", None, reference="this chapter (a use of the paper's transfer set)",
              statement=f"With {n_few} labels plus the teacher's soft targets ({small}) on every training image, the "
                        f"{tiny} student beats the same student on its {n_few} labels alone. The teacher saw every "
                        "label, so this gain includes labels the student never saw: it measures semi-supervised "
                        "transfer, not what soft targets add",
              a=f"{n_few} labels + soft targets on all images", b=f"{n_few} labels only", **ACC_BOUNDS,
              paper_figure="§2 (transfer set)", paper_value="the transfer set may hold unlabelled data",
              explanation="the teacher's outputs on unlabelled images act first of all as labels.",
              diagnosis="teacher_transfer_acc"),
        Claim("soft-beats-pseudo-labels", None, reference=HINTON,
              statement=f"With {n_few} labels and the other training images unlabelled, the teacher's soft targets "
                        f"({small}) on them beat its arg-max labels (test accuracy)",
              a=f"soft targets, {small}", b="the teacher's arg-max labels", **ACC_BOUNDS,
              paper_figure="§2", paper_value="soft targets carry much more information per training case than hard "
                                             "targets",
              explanation="the teacher's arg-max label is right on nearly every transfer image (see the health "
                          "table), so soft targets can add only what their small probabilities carry.",
              diagnosis="teacher_transfer_acc"),
        Claim("omitted-class-recognised", None, reference=HINTON,
              statement=f"The {wide} student trained on every training image of the other nine digits (labels and "
                        f"soft targets, {big}), never seeing one digit, recognises most test images of it after a "
                        "bias shift",
              a=f"omitted-digit accuracy, {big}", statistic="value", region=(">", 0.5),
              margin=1 / OMIT_TEST_IMAGES, floor=0.0, ceiling=1.0,
              rationale=f"one of the about {OMIT_TEST_IMAGES} test images of that digit ({TEST_IMAGES} stratified test "
                        "images over 10 digits): 'most' must be more than half by at least one image; the student's "
                        "final weights plus the bias chosen on validation, not a curve",
              paper_figure="§3, MNIST without 3s", paper_value="98.6% of test 3s after raising the 3-bias by 3.5 "
                                                               "(the student had every other label)",
              explanation="everything the student knows of the digit comes from the teacher's outputs on other "
                          "digits: the same student without a teacher, and with soft targets at T = 1, measured "
                          "in this run, show how much comes from the teacher and how much from the temperature.",
              diagnosis="omit_class_adjusted_acc"),
    )


def curves(run: Run, name: str) -> claims_lib.Curves:
    """Per-seed learning curves of an arm (a recorded ``*_curve`` metric), as a claim arm."""
    return claims_lib.curve(run.values(name))


def tail(run: Run, name: str) -> np.ndarray:
    """Per-seed tail means (the value the claims read) of an arm's learning curves."""
    return curves(run, name).values()


def omitted(run: Run, name: str, arm: str) -> list[float]:
    """Per-seed value of an omitted-digit metric (one entry per :func:`omit_arms` student) for ``arm``."""
    i = omit_arms(run.params).index(arm)
    return [v[i] for v in run.values(name)]


def evaluate_claims(run: Run) -> list[dict]:
    p = run.params
    c = {claim.id: claim for claim in claims(p)}
    big, alike, small = (soft_name(p.mnist_temperature), soft_name(p.wide_alike_temperature),
                         soft_name(p.small_net_temperature))
    return [
        c["soft-targets-beat-hard-labels"].evaluate(curves(run, f"wide_{big}_curve"), curves(run, "wide_hard_curve")),
        c["high-temperatures-alike"].evaluate(curves(run, f"wide_{alike}_curve"), curves(run, f"wide_{big}_curve")),
        c["small-net-moderate-temperature-beats-high"].evaluate(curves(run, f"small_{small}_curve"),
                                                                curves(run, f"small_{big}_curve")),
        c["small-net-moderate-temperature-beats-1"].evaluate(curves(run, f"small_{small}_curve"),
                                                             curves(run, f"small_{soft_name(1.0)}_curve")),
        c["soft-targets-regularise"].evaluate(curves(run, "small_few_soft_curve"), curves(run, "small_few_curve")),
        c["semi-supervised-transfer"].evaluate(curves(run, "small_few_unlabelled_soft_curve"),
                                               curves(run, "small_few_curve")),
        c["soft-beats-pseudo-labels"].evaluate(curves(run, "small_few_unlabelled_soft_curve"),
                                               curves(run, "small_few_unlabelled_argmax_curve")),
        c["omitted-class-recognised"].evaluate(omitted(run, "omit_class_adjusted_acc", f"omit_T{p.mnist_temperature:g}")),
    ]


def record_health(run: Run) -> None:
    """The test-bed health rows: the teacher against the students it should improve on and perfect accuracy."""
    run.health("teacher (ConvNet, all labels, jittered inputs)", "test accuracy", "teacher_test_acc", lower_is_better=False,
               references={"perfect accuracy": 1.0,
                           "wide student, labels only": "wide_hard_test_acc",
                           "small student, labels only": "small_hard_test_acc"},
               note="soft targets can only add what the teacher knows beyond the labels: it must sit clearly above "
                    "the students on their labels alone, and below the ceiling")
    run.health("teacher's arg-max labels on the transfer set", "agreement with the true labels",
               "teacher_transfer_acc", lower_is_better=False, references={"perfect accuracy": 1.0},
               note="measured on the transfer set, which is the teacher's own training set; near 1, arg-max "
                    "pseudo-labels are nearly the true labels: soft targets can then add only their small "
                    "probabilities")


def glue_values(run: Run, bed: Bed) -> dict[str, float]:
    """The run's numbers that the chapter's prose quotes (glued into the page, never typed): percentages, and
    errors as counts of a seed's test images."""
    p = run.params

    def pct(values) -> float:
        return 100 * float(np.mean(values))

    big = soft_name(p.mnist_temperature)
    errors = {name: TEST_IMAGES * (1 - tail(run, f"wide_{name}_curve")) for name in ("hard", big)}
    return {"teacher_transfer_acc": pct(run.values("teacher_transfer_acc")),
            "teacher_test_acc": pct(run.values("teacher_test_acc")),
            "teacher_errors": TEST_IMAGES * (1 - float(np.mean(run.values("teacher_test_acc")))),
            "wide_hard_errors": float(np.mean(errors["hard"])),
            "wide_soft_errors": float(np.mean(errors[big])),
            "error_reduction": 100 * float(1 - np.mean(errors[big]) / np.mean(errors["hard"])),
            "image_points": 100 / TEST_IMAGES,
            "paper_gain_images": PAPER_GAIN * TEST_IMAGES}


def resolution_markdown(run: Run, results: list[dict]) -> str:
    """How large a headline gain this run could call reproduced, against the paper's gain and the teacher's lead."""
    p = run.params
    r = {x["id"]: x for x in results}["soft-targets-beat-hard-labels"]
    gain = tail(run, f"wide_{soft_name(p.mnist_temperature)}_curve") - tail(run, "wide_hard_curve")
    lo, hi = claims_lib.t_interval(gain)
    bar = ACC_MARGIN + (hi - lo) / 2
    lead = np.asarray(run.values("teacher_test_acc")) - np.asarray(run.values("wide_hard_test_acc"))
    diagnosis = (tail(run, f"wide_{soft_name(p.mnist_temperature)}_alpha{p.diagnosis_alpha:g}_curve")
                 - tail(run, "wide_hard_curve"))

    def clears(x: float) -> str:
        return "would clear it" if x > bar else "would not clear it"

    return (f"**Resolution.** With {len(gain)} seeds the 95% interval of the headline gain has a half-width of "
            f"{100 * (hi - lo) / 2:.2f} points, so only a mean gain above {100 * bar:.2f} points (the margin plus "
            f"that half-width) could be called reproduced. The paper's own gain, {100 * PAPER_GAIN:.2f} points, "
            f"{clears(PAPER_GAIN)}. The teacher leads the wide student on its labels alone by "
            f"{100 * lead.mean():.2f} points on average ({100 * lead.min():.2f} to {100 * lead.max():.2f} per seed): "
            f"a student that closed the whole gap {clears(lead.mean())}. This run measured "
            f"{100 * gain.mean():.2f} points, {100 * gain.mean() / lead.mean():.0f}% of the teacher's lead (the paper's "
            f"student closed {100 * (146 - 74) / (146 - 67):.0f}% of its teacher's); the verdict is "
            f"*{claims_lib.verdict_text(r)}*. With α = {p.diagnosis_alpha:g} (a lower weight on the labels) the same "
            f"student gains {100 * diagnosis.mean():.2f} ± {100 * diagnosis.std(ddof=1):.2f} points.")


def summary_markdown(run: Run, results: list[dict]) -> str:
    """What this run measured, in sentences built from its numbers and verdicts (nothing typed in)."""
    def pct(values) -> str:
        return f"{100 * np.mean(values):.1f}% ± {100 * np.std(values, ddof=1):.1f}"

    p = run.params
    big, small, alike = p.mnist_temperature, p.small_net_temperature, p.wide_alike_temperature
    verdict = {r["id"]: claims_lib.verdict_text(r) for r in results}
    small_tails = {t: tail(run, f"small_{soft_name(t)}_curve") for t in p.temperatures}
    best_t = max(small_tails, key=lambda t: small_tails[t].mean())
    n_few = p.labelled_per_class * digits.N_CLASSES
    return "\n".join([
        f"Over {len(run.seeds)} seeds (profile `{run.profile}`), test accuracy, mean ± std (students: mean of the last "
        f"{claims_lib.WINDOW} evaluations of each learning curve):",
        "",
        f"- teacher {pct(run.values('teacher_test_acc'))};",
        f"- the wide student on every label: alone {pct(tail(run, 'wide_hard_curve'))}, with soft targets at "
        f"T = {big:g} {pct(tail(run, f'wide_{soft_name(big)}_curve'))} "
        f"(*{verdict['soft-targets-beat-hard-labels']}*), at T = {alike:g} "
        f"{pct(tail(run, f'wide_{soft_name(alike)}_curve'))} (alike: *{verdict['high-temperatures-alike']}*);",
        f"- the small student on every label: alone {pct(tail(run, 'small_hard_curve'))}; "
        + ", ".join(f"T = {t:g} {pct(v)}" for t, v in small_tails.items())
        + f" (best mean at T = {best_t:g}; T = {small:g} against T = {big:g}: "
        f"*{verdict['small-net-moderate-temperature-beats-high']}*, against T = 1: "
        f"*{verdict['small-net-moderate-temperature-beats-1']}*);",
        f"- the small student with {n_few} labels: alone {pct(tail(run, 'small_few_curve'))}, with soft targets on "
        f"them {pct(tail(run, 'small_few_soft_curve'))} (*{verdict['soft-targets-regularise']}*); with the teacher's "
        f"outputs on every training image, soft {pct(tail(run, 'small_few_unlabelled_soft_curve'))} "
        f"(*{verdict['semi-supervised-transfer']}* against labels alone) and arg-max "
        f"{pct(tail(run, 'small_few_unlabelled_argmax_curve'))} (soft vs arg-max: "
        f"*{verdict['soft-beats-pseudo-labels']}*);",
        f"- the student that never saw a {p.omit_class} classifies "
        f"{pct(omitted(run, 'omit_class_adjusted_acc', f'omit_T{big:g}'))} of the test {p.omit_class}s at "
        f"T = {big:g} after the bias shift (*{verdict['omitted-class-recognised']}*), "
        f"{pct(omitted(run, 'omit_class_raw_acc', f'omit_T{big:g}'))} without it; at T = 1, "
        f"{pct(omitted(run, 'omit_class_adjusted_acc', 'omit_T1'))} after the shift; without a teacher, "
        f"{pct(omitted(run, 'omit_class_adjusted_acc', 'omit_labels_only'))}.",
    ])


def curve_arms(p: Params) -> dict[str, list[tuple[str, str]]]:
    """Per figure panel, (label, metric) of the learning curves the claims read."""
    big, small = p.mnist_temperature, p.small_net_temperature
    n_few = p.labelled_per_class * digits.N_CLASSES
    return {
        f"{'×'.join(map(str, p.wide_hidden))} student, every label": [
            ("labels only", "wide_hard_curve"),
            *[(f"+ soft targets, T = {t:g}", f"wide_{soft_name(t)}_curve") for t in p.wide_temperatures()],
            (f"+ soft targets, T = {big:g}, α = {p.diagnosis_alpha:g}",
             f"wide_{soft_name(big)}_alpha{p.diagnosis_alpha:g}_curve")],
        f"{'×'.join(map(str, p.small_hidden))} student, every label": [
            ("labels only", "small_hard_curve"),
            *[(f"+ soft targets, T = {t:g}", f"small_{soft_name(t)}_curve") for t in p.temperatures]],
        f"{'×'.join(map(str, p.small_hidden))} student, {n_few} labels": [
            ("labels only", "small_few_curve"),
            (f"+ soft targets on them, T = {small:g}", "small_few_soft_curve"),
            (f"+ arg-max labels on all images", "small_few_unlabelled_argmax_curve"),
            (f"+ soft targets on all images, T = {small:g}", "small_few_unlabelled_soft_curve")],
    }


def learning_curves_markdown(run: Run) -> str:
    """What the learning-curve figure shows: each arm's tail mean and how much its tail still moves."""
    p = run.params
    rows = []
    for panel, arms in curve_arms(p).items():
        rows.append(f"- **{panel}**:")
        for label, name in arms:
            c = curves(run, name)
            drift = c.drift()
            moving = int(np.sum(drift > ACC_CONVERGENCE_TOL))
            state = f"still moving in {moving} of {len(drift)} seeds" if moving else "flat in every seed"
            rows.append(f"  - {label}: {100 * c.values().mean():.1f}%, tail moved by up to {100 * drift.max():.2f}% "
                        f"(relative): {state}.")
    best = {panel: max(arms, key=lambda arm: tail(run, arm[1]).mean())[0] for panel, arms in curve_arms(p).items()}
    return ("Each curve is the mean over seeds of a student's test accuracy, evaluated every "
            f"{p.eval_every} steps; the claims read the mean of the last {claims_lib.WINDOW} evaluations and call an "
            f"arm unconverged if that mean moved by more than {100 * ACC_CONVERGENCE_TOL:g}% (relative) against the "
            "window before. The highest arm per panel: " + "; ".join(f"{panel}: {label}" for panel, label in best.items())
            + ".\n\n" + "\n".join(rows))
