"""The chapter's claims and every text built from its numbers: verdicts, health, glued values, summaries."""

from __future__ import annotations

import numpy as np

from distillbook.chapters.foundations.experiment import Bed
from distillbook.chapters.foundations.params import Params, ablation_settings, longest_ablation
from distillbook.core import claims as claims_lib
from distillbook.core.claims import Claim
from distillbook.core.results import Run
from distillbook.testbeds import digits

HINTON = "Hinton et al. (2015)"

TEST_IMAGES = digits.TEST_SIZE
ACC_MARGIN = 0.005  # half a point of test accuracy
ACC_CONVERGENCE_TOL = 0.01  # the tail may move by about twice the margin (relative, at accuracies near 1)
ACC_RATIONALE = (f"half a point: 2.5 of the {TEST_IMAGES} fixed test images (resolution {100 / TEST_IMAGES:.1f} points "
                 "an image), below the smallest gain the paper reports (MNIST 146 → 74 errors of 10,000 = 0.7 points); "
                 f"arms are tail means of the last {claims_lib.WINDOW} evaluations; a tail that moved by more than "
                 f"{ACC_CONVERGENCE_TOL:g} relative (about 1 point, 5 test images, twice the margin and above the "
                 "image or two a flat curve jitters between evaluations) against the window before is not converged")
ACC_BOUNDS = dict(ceiling=1.0, saturation_tol=1 / TEST_IMAGES, convergence_tol=ACC_CONVERGENCE_TOL,
                  margin=ACC_MARGIN, rationale=ACC_RATIONALE)
OMIT_TEST_IMAGES = TEST_IMAGES // digits.N_CLASSES  # the stratified test set holds about 50 of each digit


def claims(p: Params) -> tuple[Claim, ...]:
    """The chapter's claims, at the temperatures fixed in advance by ``p``."""
    big, small = f"T = {p.mnist_temperature:g}", f"T = {p.small_net_temperature:g}"
    n_labelled = p.labelled_per_class * digits.N_CLASSES
    longer = longest_ablation(p)
    longer_id = None if longer is None else f"soft-beats-pseudo-labels-{longer}-steps"
    slow_high_t = ("the high-temperature student is still learning when training stops (softened targets are fitted "
                   "slowly), so a claim read at that point compares a moving arm.")
    out = [
        Claim("distilled-beats-labels", None, reference=HINTON,
              statement="A small student distilled on labelled + unlabelled images beats the same student trained on "
                        "its labels alone (test accuracy)",
              a=f"distilled, {big}", b="label-only", **ACC_BOUNDS,
              paper_figure="§3, MNIST", paper_value="small net 146 test errors → 74 when distilled (T = 20)",
              explanation=slow_high_t,
              diagnosis=None if longer is None else f"ablation_steps{longer}_soft_curve"),
        Claim("soft-beats-pseudo-labels", None, reference=HINTON,
              statement="On the same transfer set, the teacher's soft targets beat its hard (arg-max) labels "
                        "(test accuracy)",
              a=f"distilled, {big}", b="teacher's arg-max labels", **ACC_BOUNDS,
              paper_figure="§2–3", paper_value="soft targets carry much more information per case than hard targets",
              explanation=f"at {p.student_steps} steps the {big} student has not finished fitting its targets while "
                          "the arg-max student has; the same comparison with a longer training tests this.",
              diagnosis=longer_id),
    ]
    if longer is not None:
        out.append(Claim(
            longer_id, None, reference=HINTON,
            statement=f"...and with the student trained {longer} steps instead of {p.student_steps} (the chapter's "
                      "longer-training ablation)",
            a=f"distilled, {big}, {longer} steps", b=f"arg-max labels, {longer} steps", **ACC_BOUNDS,
            paper_figure="§2–3", paper_value="soft targets carry much more information per case than hard targets",
            explanation="the teacher's arg-max label is right on nearly every transfer image (see the health table), "
                        "so soft targets can add only what their small probabilities carry.",
            diagnosis="teacher_transfer_acc"))
    out += [
        Claim("temperature-above-1-helps", None, reference=HINTON,
              statement=f"For a small student, softening with {small} beats T = 1 (transfer set: all training images; "
                        "test accuracy)",
              a=f"distilled, {small}", b="distilled, T = 1", **ACC_BOUNDS,
              paper_figure="§3, MNIST", paper_value="T in 2.5–4 best for 30 hidden units; T ≥ 8 alike for ≥ 300",
              explanation="with every training image in the transfer set, T = 1 targets already give the student the "
                          "teacher's label for every image; what softening adds should show when the transfer set "
                          "is small.",
              diagnosis="temperature-above-1-helps-small-transfer"),
        Claim("temperature-above-1-helps-small-transfer", None, reference=HINTON,
              statement=f"With only the {n_labelled} labelled images as transfer set, soft targets at {small} beat "
                        "T = 1 (test accuracy)",
              a=f"soft on labelled set, {small}", b="soft on labelled set, T = 1", **ACC_BOUNDS,
              paper_figure="§2", paper_value="high T exposes the small probabilities: more information per case",
              explanation=f"{n_labelled} transfer images leave too little for any temperature to add; the same "
                          "comparison on the whole training set tests it.",
              diagnosis="temperature-above-1-helps"),
        Claim("soft-targets-regularise", None, reference=HINTON,
              statement=f"On a small labelled set alone, soft targets ({small}) beat hard labels (test accuracy)",
              a=f"soft on labelled set, {small}", b="label-only", **ACC_BOUNDS,
              paper_figure="Table 5 (speech, 3% of the data)", paper_value="44.5% → 57.0% test frame accuracy",
              explanation="on the labelled images alone soft targets help only through their small probabilities, "
                          "which the temperature claim on the same images tests.",
              diagnosis="temperature-above-1-helps-small-transfer"),
        Claim("omitted-class-recognised", None, reference=HINTON,
              statement=f"A student that never saw one digit recognises most test images of it from soft targets "
                        f"({big}), after a bias shift (accuracy on that digit)",
              a=f"omitted-digit accuracy, {big}", statistic="value", region=(">", 0.5),
              margin=1 / OMIT_TEST_IMAGES, floor=0.0, ceiling=1.0,
              rationale=f"one of the about {OMIT_TEST_IMAGES} test images of that digit ({TEST_IMAGES} stratified test "
                        "images over 10 digits): 'most' must be more than half by at least one image; the student's "
                        "final weights plus the bias chosen on validation, not a curve",
              paper_figure="§3, MNIST without 3s", paper_value="98.6% of test 3s after raising the 3-bias by 3.5",
              explanation="everything the student knows of the digit comes from the small probabilities the teacher "
                          "gives it on other digits; the accuracy at every temperature (T = 1 makes them vanish) "
                          "shows how much they carry.",
              diagnosis="omit_class_adjusted_acc"),
    ]
    return tuple(out)


def at_temperature(run: Run, name: str, temperature: float) -> list[float]:
    """Per-seed value of a per-temperature metric at ``temperature``."""
    i = run.params.temperatures.index(temperature)
    return [v[i] for v in run.values(name)]


def _curves(run: Run, name: str, temperature: float | None = None) -> claims_lib.Curves:
    """Per-seed learning curves of an arm (of a per-temperature metric at ``temperature``), as a claim arm."""
    return claims_lib.curve(run.values(name) if temperature is None else at_temperature(run, name, temperature))


def tail(run: Run, name: str, temperature: float | None = None) -> np.ndarray:
    """Per-seed tail means (the value the claims read) of an arm's learning curves."""
    return _curves(run, name, temperature).values()


def evaluate_claims(run: Run) -> list[dict]:
    p = run.params
    big, small = p.mnist_temperature, p.small_net_temperature
    c = {claim.id: claim for claim in claims(p)}
    soft_big = _curves(run, "soft_all_curves", big)
    out = [
        c["distilled-beats-labels"].evaluate(soft_big, _curves(run, "label_only_curve")),
        c["soft-beats-pseudo-labels"].evaluate(soft_big, _curves(run, "pseudo_label_curve")),
    ]
    longer = longest_ablation(p)
    if longer is not None:
        out.append(c[f"soft-beats-pseudo-labels-{longer}-steps"].evaluate(
            _curves(run, f"ablation_steps{longer}_soft_curve"), _curves(run, f"ablation_steps{longer}_argmax_curve")))
    out += [
        c["temperature-above-1-helps"].evaluate(_curves(run, "soft_all_curves", small),
                                                _curves(run, "soft_all_curves", 1.0)),
        c["temperature-above-1-helps-small-transfer"].evaluate(_curves(run, "soft_labelled_curves", small),
                                                               _curves(run, "soft_labelled_curves", 1.0)),
        c["soft-targets-regularise"].evaluate(_curves(run, "soft_labelled_curves", small),
                                              _curves(run, "label_only_curve")),
        c["omitted-class-recognised"].evaluate(at_temperature(run, "omit_class_adjusted_acc", big)),
    ]
    return out


def record_health(run: Run) -> None:
    """The test-bed health rows: the teacher and its arg-max labels on the transfer set, against perfect accuracy."""
    run.health("teacher (all labels)", "test accuracy", "teacher_test_acc", lower_is_better=False,
               references={"perfect accuracy": 1.0, "student on its labels alone": "label_only_test_acc"},
               note="the teacher must leave the student room above its labels alone and below the ceiling")
    run.health("teacher's arg-max labels on the transfer set", "agreement with the true labels",
               "teacher_transfer_acc", lower_is_better=False, references={"perfect accuracy": 1.0},
               note="measured on the transfer set, which is the teacher's own training set; near 1, arg-max "
                    "pseudo-labels are nearly the true labels: soft targets can then add only their small "
                    "probabilities")


def glue_values(run: Run, bed: Bed) -> dict[str, float]:
    """The run's numbers that the chapter's prose quotes (glued into the page, never typed), in percent."""
    return {"teacher_transfer_acc": 100 * float(np.mean(run.values("teacher_transfer_acc"))),
            "teacher_test_acc": 100 * float(np.mean(run.values("teacher_test_acc")))}


def summary_markdown(run: Run, results: list[dict]) -> str:
    """What this run measured, in sentences built from its numbers and verdicts (nothing typed in)."""
    def pct(values) -> str:
        return f"{100 * np.mean(values):.1f}% ± {100 * np.std(values, ddof=1):.1f}"

    p = run.params
    big, small = p.mnist_temperature, p.small_net_temperature
    verdict = {r["id"]: claims_lib.verdict_text(r) for r in results}
    best_t = p.temperatures[int(np.argmax(np.mean([tail(run, "soft_all_curves", t) for t in p.temperatures], axis=1)))]
    lines = [
        f"Over {len(run.seeds)} seeds (profile `{run.profile}`), test accuracy, mean ± std (students: mean of the last "
        f"{claims_lib.WINDOW} evaluations of each learning curve):",
        "",
        f"- teacher {pct(run.values('teacher_test_acc'))}; student on {p.labelled_per_class} labels per class alone "
        f"{pct(tail(run, 'label_only_curve'))};",
        f"- with the whole training set as transfer set: soft targets at T = {big:g} "
        f"{pct(tail(run, 'soft_all_curves', big))} (*{verdict['distilled-beats-labels']}* against labels alone), "
        f"the teacher's arg-max labels {pct(tail(run, 'pseudo_label_curve'))} "
        f"(soft vs arg-max: *{verdict['soft-beats-pseudo-labels']}*); T = 1 gives "
        f"{pct(tail(run, 'soft_all_curves', 1.0))} and T = {small:g} {pct(tail(run, 'soft_all_curves', small))} "
        f"(*{verdict['temperature-above-1-helps']}*); the best mean is at T = {best_t:g};",
        f"- with the labelled images as the only transfer set: T = 1 gives "
        f"{pct(tail(run, 'soft_labelled_curves', 1.0))}, T = {small:g} {pct(tail(run, 'soft_labelled_curves', small))} "
        f"(*{verdict['temperature-above-1-helps-small-transfer']}*);",
        f"- the student that never saw a {p.omit_class} classifies "
        f"{pct(at_temperature(run, 'omit_class_adjusted_acc', big))} of the test {p.omit_class}s at T = {big:g} after "
        f"the bias shift, {pct(at_temperature(run, 'omit_class_raw_acc', big))} "
        f"without it; at T = 1, {pct(at_temperature(run, 'omit_class_adjusted_acc', 1.0))} "
        f"(*{verdict['omitted-class-recognised']}*);",
        "- soft targets minus arg-max labels on the full transfer set, in points (tail means): "
        + "; ".join(f"{label}: {100 * np.mean(tail(run, f'ablation_{label}_soft_curve') - tail(run, f'ablation_{label}_argmax_curve')):+.2f}"
                    for label, _, _ in ablation_settings(p))
        + f" (base setting: {100 * np.mean(tail(run, 'soft_all_curves', big) - tail(run, 'pseudo_label_curve')):+.2f}).",
    ]
    return "\n".join(lines)


def learning_curves_markdown(run: Run) -> str:
    """What the learning-curve figure shows: each arm's tail mean and how much its tail still moves."""
    p = run.params
    rows = []
    for label, name, t in curve_arms(p):
        c = _curves(run, name, t)
        drift = c.drift()
        moving = int(np.sum(drift > ACC_CONVERGENCE_TOL))
        state = (f"still moving in {moving} of {len(drift)} seeds" if moving else "flat in every seed")
        rows.append(f"- {label}: {100 * c.values().mean():.1f}% over its last {claims_lib.WINDOW} evaluations; its "
                    f"tail moved by up to {100 * drift.max():.2f}% (relative) against the window before: {state} "
                    f"(tolerance {100 * ACC_CONVERGENCE_TOL:g}%).")
    return ("Each curve is the mean over seeds of the student's test accuracy, evaluated every "
            f"{p.eval_every} steps; the claims read the mean of the last {claims_lib.WINDOW} evaluations and call an "
            "arm unconverged if that mean still moves by more than the tolerance:\n\n" + "\n".join(rows))


def curve_arms(p: Params) -> list[tuple[str, str, float | None]]:
    """(label, metric, temperature) of the learning curves the figure shows and the claims read."""
    arms = [("labels only", "label_only_curve", None), ("teacher's arg-max labels", "pseudo_label_curve", None),
            ("distilled, T = 1", "soft_all_curves", 1.0),
            (f"distilled, T = {p.small_net_temperature:g}", "soft_all_curves", p.small_net_temperature),
            (f"distilled, T = {p.mnist_temperature:g}", "soft_all_curves", p.mnist_temperature)]
    longer = longest_ablation(p)
    if longer is not None:
        arms += [(f"arg-max labels, {longer} steps", f"ablation_steps{longer}_argmax_curve", None),
                 (f"distilled, T = {p.mnist_temperature:g}, {longer} steps", f"ablation_steps{longer}_soft_curve", None)]
    return arms
