"""The papers' claims with their margins, the verdicts from the recorded per-seed numbers, the test-bed health
table, the numbers the prose glues and the generated markdown."""

from __future__ import annotations

import numpy as np

from distillbook.chapters.dataset_distillation.experiment import Bed, eval_every, n_test_images
from distillbook.chapters.dataset_distillation.params import Params
from distillbook.core import claims as claims_lib
from distillbook.core.claims import Claim
from distillbook.core.results import Run

AST, INFER = 67, 78

LABELS = {"random": "random real subset", "herding": "herding subset", "mtt": "MTT",
          "ast": "MTT, smooth experts", "sre2l": "SRe2L-like, dynamic labels", "infer": "INFER, static labels",
          "infer_dynamic": "INFER, dynamic labels"}
ACC_MARGIN = 0.01  # one point of test accuracy
ACC_CONVERGENCE_TOL = 0.02  # the library default: above the yardstick's jitter between evaluations (random shifts)
MATCH_CONVERGENCE_TOL = 0.02  # the library default, for the matching loss (health table)


def _accuracy_bounds(p: Params) -> dict:
    n = n_test_images(p)
    rationale = (f"1 point: {n / 100:g} of the {n} fixed test images (resolution {100 / n:.2g} points an image; each "
                 f"score is the mean of {p.eval_nets} evaluation net(s)); the papers' tables rank methods by whole points. "
                 f"Arms are tail means of the last {claims_lib.WINDOW} of the evaluation nets' test-accuracy "
                 f"evaluations; a tail that moved by more than {ACC_CONVERGENCE_TOL:g} relative against the window before "
                 "is not converged (the library default, not the margin: nets trained on randomly shifted images "
                 "jitter by a point or two between evaluations)")
    return dict(margin=ACC_MARGIN, rationale=rationale, ceiling=1.0, saturation_tol=1 / n,
                convergence_tol=ACC_CONVERGENCE_TOL)


def claims(p: Params) -> tuple[Claim, ...]:
    small, large = p.ipcs[0], p.ipcs[-1]
    bounds = _accuracy_bounds(p)
    mismatch = ("the images are tuned to the matching unroll's conditions (plain SGD, no momentum, no shift) but "
                "judged by nets trained with momentum and random shifts; the same comparison under the unroll's "
                "conditions tests it.")
    out = []
    for ipc, statement in ((small, f"At {small} image(s) per class, MTT's distilled images train better networks than "
                                   "a random real subset (test accuracy)"),
                           (large, f"...and at {large} images per class")):
        out.append(Claim(f"mtt-beats-random-ipc{ipc}", AST, statement=statement,
                         a=f"MTT, IPC {ipc}", b=f"random, IPC {ipc}", **bounds,
                         paper_figure="Table 1 (MTT rows vs random)" if ipc == small else "Table 1",
                         paper_value="MTT far above random subsets at every IPC",
                         explanation=mismatch, diagnosis=f"mtt-beats-random-ipc{ipc}-unroll-conditions"))
    for ipc in (small, large):
        out.append(Claim(f"mtt-beats-random-ipc{ipc}-unroll-conditions", AST,
                         statement=f"Diagnosis: at {ipc} image(s) per class, MTT beats the random subset when both are "
                                   "judged by nets trained as the matching unroll trains (plain SGD, no shift)",
                         a=f"MTT, IPC {ipc}, unroll conditions", b=f"random, IPC {ipc}, unroll conditions", **bounds,
                         paper_figure="Table 1", paper_value="MTT far above random subsets at every IPC",
                         explanation="the matching loss is still falling when the run stops, so the images are not "
                                     "yet where trajectory matching would take them (health table).",
                         diagnosis=f"match_loss_drift_mtt_ipc{ipc}"))
    out += [
        Claim(f"smooth-experts-help-ipc{small}", AST, statement=f"Matching smoother experts (input-gradient penalty, "
              f"shorter parameter paths) beats matching plain experts at {small} image(s) per class",
              a=f"AST experts, IPC {small}", b=f"MTT, IPC {small}", **bounds, paper_figure="Table 1 / ablation",
              paper_value="AST beats MTT and FTD; smooth experts are part of the gain",
              explanation=f"{small} image(s) per class leave the synthetic set too little room for the experts' "
                          f"smoothness to matter; the same comparison at {large} images per class tests it.",
              diagnosis=f"smooth-experts-help-ipc{large}"),
        Claim(f"smooth-experts-help-ipc{large}", AST, statement=f"...and at {large} images per class",
              a=f"AST experts, IPC {large}", b=f"MTT, IPC {large}", **bounds, paper_figure="Table 1",
              paper_value="AST beats MTT across IPC settings",
              explanation="the smooth experts carry two of AST's changes only; whether they are smoother at all is "
                          "their parameter path length against the plain experts' (health table).",
              diagnosis="expert_path_smooth"),
        Claim(f"infer-static-beats-sre2l-dynamic-ipc{large}", INFER, statement=f"At {large} images per class, INFER "
              "with static soft labels beats class-wise SRe2L-like synthesis with dynamic labels",
              a=f"INFER static, IPC {large}", b=f"SRe2L-like dynamic, IPC {large}", **bounds,
              paper_figure="Tables 1-2", paper_value="beats class-specific methods with far less label storage",
              explanation="dynamic labels give a fresh teacher signal for every shifted image at every step, which one "
                          "static label per image cannot match; INFER's images with dynamic labels separate the images "
                          "from the labels.",
              diagnosis=f"infer-dynamic-labels-help-ipc{large}"),
        Claim(f"infer-dynamic-labels-help-ipc{large}", INFER, statement=f"Diagnosis: at {large} images per class, "
              "INFER's own images train better networks with dynamic labels than with their static soft labels",
              a=f"INFER dynamic, IPC {large}", b=f"INFER static, IPC {large}", **bounds,
              paper_figure="Tables 1-2 (INFER vs INFER+Dyn)", paper_value="dynamic labels add accuracy at a storage cost",
              explanation="if dynamic labels do not help on the same images, the labels cannot be what INFER-static "
                          "lacks against SRe2L-dynamic; the images comparison below separates the other half.",
              diagnosis=f"infer-images-beat-sre2l-images-ipc{large}"),
        Claim(f"infer-images-beat-sre2l-images-ipc{large}", INFER, statement=f"At {large} images per class and with "
              "dynamic labels for both, INFER's images beat the SRe2L-like class-wise synthesis",
              a=f"INFER dynamic, IPC {large}", b=f"SRe2L-like dynamic, IPC {large}", **bounds,
              paper_figure="Tables 1-2 (INFER+Dyn vs SRe2L)", paper_value="INFER+Dyn above SRe2L at every IPC",
              explanation="with MLP teachers and evaluation nets, synthesis from noise is not the weak point it is "
                          "for the paper's ConvNets, and the shared compensators leave INFER's images close to their "
                          "real anchors."),
    ]
    return tuple(out)


def evaluate_claims(run: Run) -> list[dict]:
    small, large = run.params.ipcs[0], run.params.ipcs[-1]
    c = {claim.id: claim for claim in claims(run.params)}
    def v(method: str, ipc: int):
        """An arm's evaluation curve; for a distilled set, its drift is also its trajectory matching's (the images
        are not settled while the matching loss still falls)."""
        arm = claims_lib.curve(run.values(f"curve_{method}_ipc{ipc}"))
        matched = {"mtt": "mtt", "mtt_unrolled": "mtt", "ast": "ast"}.get(method)
        if matched is None:
            return arm
        match_drift = np.asarray(run.values(f"match_loss_drift_{matched}_ipc{ipc}"), dtype=float)
        return claims_lib.derived(arm.values(), np.maximum(arm.drift(), match_drift), arm.window)
    return [
        c[f"mtt-beats-random-ipc{small}"].evaluate(v("mtt", small), v("random", small)),
        c[f"mtt-beats-random-ipc{large}"].evaluate(v("mtt", large), v("random", large)),
        c[f"mtt-beats-random-ipc{small}-unroll-conditions"].evaluate(v("mtt_unrolled", small),
                                                                     v("random_unrolled", small)),
        c[f"mtt-beats-random-ipc{large}-unroll-conditions"].evaluate(v("mtt_unrolled", large),
                                                                     v("random_unrolled", large)),
        c[f"smooth-experts-help-ipc{small}"].evaluate(v("ast", small), v("mtt", small)),
        c[f"smooth-experts-help-ipc{large}"].evaluate(v("ast", large), v("mtt", large)),
        c[f"infer-static-beats-sre2l-dynamic-ipc{large}"].evaluate(v("infer", large), v("sre2l", large)),
        c[f"infer-dynamic-labels-help-ipc{large}"].evaluate(v("infer_dynamic", large), v("infer", large)),
        c[f"infer-images-beat-sre2l-images-ipc{large}"].evaluate(v("infer_dynamic", large), v("sre2l", large)),
    ]


def record_health(run: Run) -> None:
    """Test-bed health: teachers and the yardstick against perfect accuracy, the experts' smoothing, and whether
    each trajectory matching converged."""
    p = run.params
    run.health("evaluation nets on the whole training set (the yardstick's ceiling)", "test accuracy",
               "full_data_acc", lower_is_better=False, references={"perfect accuracy": 1.0},
               note="how far a distilled set could go under this yardstick")
    run.health("BatchNorm teachers (INFER, SRe2L-like)", "test accuracy (mean over teachers)", "teacher_test_acc",
               lower_is_better=False, references={"perfect accuracy": 1.0, "evaluation nets, whole training set":
                                                  "full_data_acc"},
               note="the soft labels are only as good as these")
    run.health("smooth experts", "parameter path length", "expert_path_smooth", lower_is_better=True,
               references={"plain experts": "expert_path_plain"},
               note="smoother experts move less; equal lengths would leave the smooth-expert claims nothing to test")
    for ipc in p.ipcs:
        for method in ("mtt", "ast"):
            run.health(f"{LABELS[method]}, IPC {ipc}: matching", "relative change of the matching loss (last "
                       f"{claims_lib.WINDOW} logs vs the {claims_lib.WINDOW} before)",
                       f"match_loss_drift_{method}_ipc{ipc}", lower_is_better=True,
                       references={"convergence tolerance": MATCH_CONVERGENCE_TOL,
                                   "matching loss (tail mean)": f"match_loss_tail_{method}_ipc{ipc}"},
                       note="above the tolerance the matching was still improving when it stopped")


def matching_loss_markdown(run: Run) -> str:
    """What the matching-loss figure shows, per method and IPC (generated from the run)."""
    p = run.params
    rows = []
    for ipc in p.ipcs:
        for method in ("mtt", "ast"):
            drift = np.asarray(run.values(f"match_loss_drift_{method}_ipc{ipc}"))
            curves = np.asarray(run.values(f"match_loss_{method}_ipc{ipc}"))
            moving = int(np.sum(drift > MATCH_CONVERGENCE_TOL))
            rows.append(f"- {LABELS[method]}, IPC {ipc}: from {curves[:, 0].mean():.3g} to "
                        f"{np.mean(run.values(f'match_loss_tail_{method}_ipc{ipc}')):.3g} (mean of the last "
                        f"{claims_lib.WINDOW} logs); its tail moved by {100 * drift.mean():.1f}% on average against the "
                        f"logs before, "
                        + (f"more than the {100 * MATCH_CONVERGENCE_TOL:g}% tolerance in {moving} of {len(drift)} seeds "
                           "(still falling when the run stops)." if moving else
                           f"within the {100 * MATCH_CONVERGENCE_TOL:g}% tolerance in every seed."))
    return ("The normalised matching loss (1 = the student lands no closer to the expert's target than its start) "
            f"over {p.match_iterations} matching iterations:\n\n" + "\n".join(rows))


def evaluation_curves_markdown(run: Run) -> str:
    """How settled the evaluation nets' test accuracy is for every arm a claim reads."""
    p = run.params
    arms = sorted({(m, ipc) for ipc in p.ipcs for m in ("random", "mtt", "ast", "random_unrolled", "mtt_unrolled")}
                  | {(m, p.ipcs[-1]) for m in ("sre2l", "infer", "infer_dynamic")}, key=lambda x: (x[1], x[0]))
    moving = []
    for m, ipc in arms:
        drift = claims_lib.curve(run.values(f"curve_{m}_ipc{ipc}")).drift()
        if np.any(drift > ACC_CONVERGENCE_TOL):
            label = LABELS.get(m) or f"{LABELS[m.removesuffix('_unrolled')]}, unroll conditions"
            moving.append(f"{label} at IPC {ipc} "
                          f"({int(np.sum(drift > ACC_CONVERGENCE_TOL))} of {len(drift)} seeds)")
    head = (f"Every score is read from the evaluation nets' test accuracy, evaluated every {eval_every(p)} of their "
            f"{p.eval_steps} steps, as the mean of the last {claims_lib.WINDOW} evaluations. ")
    return head + ("Arms whose tail still moved by more than the tolerance: " + "; ".join(moving) + "."
                   if moving else "Every arm a claim reads had settled within the tolerance in every seed.")


def summary_markdown(run: Run, results: list[dict]) -> str:
    p = run.params

    def ms(values) -> str:
        return f"{100 * np.mean(values):.1f}% ± {100 * np.std(values, ddof=1):.1f}"

    def tail(name) -> np.ndarray:
        return claims_lib.curve(run.values(name)).values()

    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), test accuracy of fresh networks (mean of the "
             f"last {claims_lib.WINDOW} evaluations), mean ± std:", "",
             f"- trained on the whole real training set: {ms(tail('full_data_curve'))};"]
    for ipc in p.ipcs:
        lines.append(f"- {ipc} image(s) per class: " + "; ".join(
            f"{LABELS[m]} {ms(tail(f'curve_{m}_ipc{ipc}'))}" for m in LABELS) + ";")
        lines.append(f"  under the matching unroll's conditions (plain SGD, no shift): MTT "
                     f"{ms(tail(f'curve_mtt_unrolled_ipc{ipc}'))}, random {ms(tail(f'curve_random_unrolled_ipc{ipc}'))};")
    large = p.ipcs[-1]
    static, dynamic = run.values(f"bytes_infer_ipc{large}")[0], run.values(f"bytes_sre2l_ipc{large}")[0]
    lines.append(f"- labels at {large} images per class: static {static:,} bytes, dynamic {dynamic:,} bytes "
                 f"({dynamic / static:.0f}× more; by construction: one label per image vs one per image per step);")
    lines.append(f"- expert path length (parameter movement over training): plain "
                 f"{np.mean(run.values('expert_path_plain')):.2f}, smooth {np.mean(run.values('expert_path_smooth')):.2f}.")
    return "\n".join(lines)


def glue_values(run: Run, bed: Bed) -> dict[str, float | str]:
    """What the prose quotes: the IPCs distilled, the evaluation shift and the number of test images."""
    p = run.params
    return {"ipcs": " and ".join(map(str, p.ipcs)), "eval_shift": p.eval_shift, "n_test": bed.n_test}
