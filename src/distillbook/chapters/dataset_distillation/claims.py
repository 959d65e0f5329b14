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
          "ast": "MTT, smooth experts", "mtt_augmented_experts": "MTT, experts trained on shifted images",
          "sre2l": "SRe2L-like, dynamic labels", "sre2l_static": "SRe2L-like, static labels",
          "infer": "INFER, static labels", "infer_dynamic": "INFER, dynamic labels",
          "infer_unshifted_labels": "INFER, static labels of the unshifted images"}
EVERY_IPC = ("random", "herding", "mtt", "ast")  # the arms run at every IPC; the others at the largest only
MATCHED = ("mtt", "ast", "mtt_augmented_experts")  # the arms distilled by trajectory matching
SYNTHESISED = {"sre2l": "sre2l", "sre2l_static": "sre2l", "infer": "infer", "infer_dynamic": "infer",
               "infer_unshifted_labels": "infer"}  # arm -> the BatchNorm synthesis its images come from
ACC_MARGIN = 0.01  # one point of test accuracy
ACC_CONVERGENCE_TOL = 0.01  # the margin: a tail still moving by more than the smallest effect worth reporting
MATCH_CONVERGENCE_TOL = 0.02  # the library default, for the matching loss (health table)


def _accuracy_bounds(p: Params) -> dict:
    n = n_test_images(p)
    rationale = (f"1 point: {n / 100:g} of the {n} fixed test images (resolution {100 / n:.2g} points an image; each "
                 f"score is the mean of {p.eval_nets} evaluation net(s)); the papers' tables rank methods by whole points. "
                 f"Arms are tail means of the last {claims_lib.WINDOW} of the evaluation nets' test-accuracy "
                 f"evaluations; a tail that moved by more than {ACC_CONVERGENCE_TOL:g} relative against the window before "
                 "(about the margin) is not converged")
    return dict(margin=ACC_MARGIN, rationale=rationale, ceiling=1.0, saturation_tol=1 / n,
                convergence_tol=ACC_CONVERGENCE_TOL)


def claims(p: Params) -> tuple[Claim, ...]:
    small, large = p.ipcs[0], p.ipcs[-1]
    bounds = _accuracy_bounds(p)
    out = [
        Claim(f"mtt-beats-random-ipc{small}", AST, statement=f"At {small} image(s) per class, MTT's distilled images "
              "train better networks than a random real subset (test accuracy)", a=f"MTT, IPC {small}",
              b=f"random, IPC {small}", **bounds, paper_figure="Table 1 (MTT rows vs random)",
              paper_value="MTT far above random subsets at every IPC",
              explanation=f"one real image per class is the weakest start; if MTT cannot improve on it, the matching "
                          "itself fails, which its loss curve (health table) tests.",
              diagnosis=f"match_loss_drift_mtt_ipc{small}"),
        Claim(f"mtt-beats-random-ipc{large}", AST, statement=f"At {large} images per class, MTT's distilled images train better "
              "networks than a random real subset (test accuracy)",
              a=f"MTT, IPC {large}", b=f"random, IPC {large}", **bounds, paper_figure="Table 1",
              paper_value="MTT far above random subsets at every IPC",
              explanation=f"at {large} images per class a random real subset already covers much of the digits' "
                          "variation, so the matching has less to add, and longer matching does not add it: the "
                          "evaluation nets' accuracy at each quarter of the matching (probe_acc_mtt) shows whether "
                          "the images improved along the way or the learned rate's climb undid it.",
              diagnosis=f"probe_acc_mtt_ipc{large}"),
        Claim(f"smooth-experts-help-ipc{small}", AST, statement=f"Matching smoother experts (input-gradient penalty, "
              f"shorter parameter paths) beats matching plain experts at {small} image(s) per class",
              a=f"AST experts, IPC {small}", b=f"MTT, IPC {small}", **bounds, paper_figure="Table 1 / ablation",
              paper_value="AST beats MTT and FTD; smooth experts are part of the gain",
              explanation=f"{small} image(s) per class leave the synthetic set too little room for the experts' "
                          f"smoothness to matter; the same comparison at {large} images per class tests it.",
              diagnosis=f"smooth-experts-help-ipc{large}"),
        Claim(f"smooth-experts-help-ipc{large}", AST, statement=f"Matching smoother experts beats matching plain "
              f"experts at {large} images per class",
              a=f"AST experts, IPC {large}", b=f"MTT, IPC {large}", **bounds, paper_figure="Table 1",
              paper_value="AST beats MTT across IPC settings",
              explanation="the smooth experts carry two of AST's changes only; whether they are smoother at all is "
                          "their parameter path length against the plain experts' (health table).",
              diagnosis="expert_path_smooth"),
        Claim(f"infer-static-beats-sre2l-dynamic-ipc{large}", INFER, statement=f"At {large} images per class, INFER "
              "with static soft labels beats class-wise SRe2L-like synthesis with dynamic labels",
              a=f"INFER static, IPC {large}", b=f"SRe2L-like dynamic, IPC {large}", **bounds,
              paper_figure="Tables 1-2", paper_value="beats class-specific methods with far less label storage",
              explanation="dynamic labels give a fresh teacher signal for every shifted view at every step, which one "
                          "static label per image cannot match; INFER's images with dynamic labels separate the labels "
                          "from the images.",
              diagnosis=f"infer-dynamic-labels-help-ipc{large}"),
        Claim(f"infer-dynamic-labels-help-ipc{large}", INFER, statement=f"Labels: at {large} images per class, "
              "INFER's own images train better networks with dynamic labels than with their static soft labels",
              a=f"INFER dynamic, IPC {large}", b=f"INFER static, IPC {large}", **bounds,
              paper_figure="Tables 1-2 (INFER vs INFER+Dyn)", paper_value="dynamic labels add accuracy at a storage cost",
              explanation="if dynamic labels do not help on the same images, the labels cannot be what INFER-static "
                          "lacks against SRe2L-dynamic; the synthesis comparison at equal labels separates the other "
                          "half.",
              diagnosis=f"infer-images-beat-sre2l-images-static-ipc{large}"),
        Claim(f"infer-images-beat-sre2l-images-static-ipc{large}", INFER, statement=f"Synthesis: at {large} images "
              "per class and with the same kind of static soft labels for both, INFER's images beat the SRe2L-like "
              "class-wise synthesis",
              a=f"INFER static, IPC {large}", b=f"SRe2L-like static, IPC {large}", **bounds,
              paper_figure="Tables 1-2 (INFER vs SRe2L)", paper_value="INFER's compensators above class-wise synthesis",
              explanation="synthesis from noise gives images the teachers recognise (their accuracy on every shifted "
                          "view, teacher_shifted_acc, health table) but that carry less of the data than real anchors; "
                          "the same comparison with dynamic labels tests whether the labels hide the difference.",
              diagnosis=f"infer-images-beat-sre2l-images-ipc{large}"),
        Claim(f"infer-images-beat-sre2l-images-ipc{large}", INFER, statement=f"Synthesis: at {large} images per "
              "class and with dynamic labels for both, INFER's images beat the SRe2L-like class-wise synthesis",
              a=f"INFER dynamic, IPC {large}", b=f"SRe2L-like dynamic, IPC {large}", **bounds,
              paper_figure="Tables 1-2 (INFER+Dyn vs SRe2L)", paper_value="INFER+Dyn above SRe2L at every IPC",
              explanation="with MLP teachers and evaluation nets, synthesis from noise is not the weak point it is "
                          "for the paper's ConvNets, and the shared compensators leave INFER's images close to their "
                          "real anchors; the teachers' accuracy on the shifted views of the SRe2L-like images shows "
                          "whether those images carry their class under the augmentation at all.",
              diagnosis=f"teacher_shifted_acc_sre2l_ipc{large}"),
    ]
    return tuple(out)


def evaluate_claims(run: Run) -> list[dict]:
    small, large = run.params.ipcs[0], run.params.ipcs[-1]
    c = {claim.id: claim for claim in claims(run.params)}

    def v(method: str, ipc: int):
        """An arm's evaluation curve: its value and its convergence are the evaluation nets' test accuracy (the
        matching and synthesis losses, noisy and annealed, are shown in the health table, not read here)."""
        return claims_lib.curve(run.values(f"curve_{method}_ipc{ipc}"))

    return [
        c[f"mtt-beats-random-ipc{small}"].evaluate(v("mtt", small), v("random", small)),
        c[f"mtt-beats-random-ipc{large}"].evaluate(v("mtt", large), v("random", large)),
        c[f"smooth-experts-help-ipc{small}"].evaluate(v("ast", small), v("mtt", small)),
        c[f"smooth-experts-help-ipc{large}"].evaluate(v("ast", large), v("mtt", large)),
        c[f"infer-static-beats-sre2l-dynamic-ipc{large}"].evaluate(v("infer", large), v("sre2l", large)),
        c[f"infer-dynamic-labels-help-ipc{large}"].evaluate(v("infer_dynamic", large), v("infer", large)),
        c[f"infer-images-beat-sre2l-images-static-ipc{large}"].evaluate(v("infer", large), v("sre2l_static", large)),
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
    large = p.ipcs[-1]
    if f"synthesis_loss_drift_sre2l_ipc{large}" in run.per_seed[run.seeds[0]]:
        run.health(f"SRe2L-like images (from noise), IPC {large}", "teachers' accuracy on every shifted view "
                   "(mean over views)", f"teacher_shifted_acc_sre2l_ipc{large}", lower_is_better=False,
                   references={"random real anchors": f"teacher_shifted_acc_random_ipc{large}",
                               "INFER images": f"teacher_shifted_acc_infer_ipc{large}", "perfect accuracy": 1.0},
                   note="images recognised in one alignment only would be lost under the students' shifts")
        for method in ("sre2l", "infer"):
            run.health(f"{LABELS[method].split(',')[0]} synthesis, IPC {large}", "relative change of the synthesis "
                       f"loss (last {claims_lib.WINDOW} logs vs the {claims_lib.WINDOW} before)",
                       f"synthesis_loss_drift_{method}_ipc{large}", lower_is_better=True,
                       references={"convergence tolerance": MATCH_CONVERGENCE_TOL},
                       note="above the tolerance the images were still changing when the synthesis stopped")
    for ipc, method in matched_arms(run):
            run.health(f"{LABELS[method]}, IPC {ipc}: matching", "relative change of the matching loss (last "
                       f"{claims_lib.WINDOW} logs vs the {claims_lib.WINDOW} before)",
                       f"match_loss_drift_{method}_ipc{ipc}", lower_is_better=True,
                       references={"convergence tolerance": MATCH_CONVERGENCE_TOL,
                                   "matching loss (tail mean)": f"match_loss_tail_{method}_ipc{ipc}"},
                       note="above the tolerance the matching was still improving when it stopped")


def matched_arms(run: Run) -> list[tuple[int, str]]:
    """(IPC, method) of every trajectory matching this run recorded."""
    return [(ipc, m) for ipc in run.params.ipcs for m in MATCHED if f"match_loss_drift_{m}_ipc{ipc}" in
            run.per_seed[run.seeds[0]]]


def arms_at(run: Run, ipc: int) -> list[str]:
    """The methods evaluated at ``ipc``, in LABELS order."""
    return [m for m in LABELS if f"curve_{m}_ipc{ipc}" in run.per_seed[run.seeds[0]]]


def matching_loss_markdown(run: Run) -> str:
    """What the matching-loss figure shows, per method and IPC (generated from the run)."""
    p = run.params
    rows = []
    for ipc, method in matched_arms(run):
            drift = np.asarray(run.values(f"match_loss_drift_{method}_ipc{ipc}"))
            curves = np.asarray(run.values(f"match_loss_{method}_ipc{ipc}"))
            moving = int(np.sum(drift > MATCH_CONVERGENCE_TOL))
            rows.append(f"- {LABELS[method]}, IPC {ipc}: from {curves[:, 0].mean():.3g} to "
                        f"{np.mean(run.values(f'match_loss_tail_{method}_ipc{ipc}')):.3g} (mean of the last "
                        f"{claims_lib.WINDOW} logs); its tail moved by {100 * drift.mean():.1f}% on average against the "
                        f"logs before, "
                        + (f"more than the {100 * MATCH_CONVERGENCE_TOL:g}% tolerance in {moving} of {len(drift)} seeds "
                           "(still moving, up or down, when the run stops)." if moving else
                           f"within the {100 * MATCH_CONVERGENCE_TOL:g}% tolerance in every seed."))
    text = ("The normalised matching loss (1 = the student lands no closer to the expert's target than its start) "
            f"over {p.match_iterations} matching iterations, the Adam rates annealed to zero by a cosine "
            f"(`match_schedule={p.match_schedule}`):\n\n" + "\n".join(rows))
    large = p.ipcs[-1]
    if f"probe_acc_mtt_ipc{large}" in run.per_seed[run.seeds[0]]:
        steps = run.values(f"probe_steps_mtt_ipc{large}")[0]
        probes = 100 * np.asarray(run.values(f"probe_acc_mtt_ipc{large}"), dtype=float)
        rate = np.mean(run.values(f"lr_mtt_ipc{large}"))
        random = 100 * np.mean(_tail(run, f"curve_random_ipc{large}"))
        text += (f"\n\nAlong the MTT matching at IPC {large}, the evaluation nets' test accuracy (final, mean over "
                 "seeds) after " + ", ".join(f"{s} iterations {a:.1f}%" for s, a in zip(steps, probes.mean(0)))
                 + f"; the random real subset it starts from scores {random:.1f}% and the learned rate ends at "
                 f"{rate:.3g}.")
    return text


def evaluation_curves_markdown(run: Run) -> str:
    """How settled the evaluation nets' test accuracy is for every arm a claim reads."""
    p = run.params
    arms = [(m, ipc) for ipc in p.ipcs for m in arms_at(run, ipc)]
    moving = []
    for m, ipc in arms:
        drift = claims_lib.curve(run.values(f"curve_{m}_ipc{ipc}")).drift()
        if np.any(drift > ACC_CONVERGENCE_TOL):
            label = LABELS[m]
            moving.append(f"{label} at IPC {ipc} "
                          f"({int(np.sum(drift > ACC_CONVERGENCE_TOL))} of {len(drift)} seeds)")
    head = (f"Every score is read from the evaluation nets' test accuracy, evaluated every {eval_every(p)} of their "
            f"{p.eval_steps} steps, as the mean of the last {claims_lib.WINDOW} evaluations. ")
    return head + ("Arms whose tail still moved by more than the tolerance: " + "; ".join(moving) + "."
                   if moving else "Every arm a claim reads had settled within the tolerance in every seed.")


def _tail(run: Run, name: str) -> np.ndarray:
    return claims_lib.curve(run.values(name)).values()


def summary_markdown(run: Run, results: list[dict]) -> str:
    p = run.params

    def ms(values) -> str:
        return f"{100 * np.mean(values):.1f}% ± {100 * np.std(values, ddof=1):.1f}"

    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), test accuracy of fresh networks (mean of the "
             f"last {claims_lib.WINDOW} evaluations), mean ± std:", "",
             f"- trained on the whole real training set: {ms(_tail(run, 'full_data_curve'))};"]
    for ipc in p.ipcs:
        lines.append(f"- {ipc} image(s) per class: " + "; ".join(
            f"{LABELS[m]} {ms(_tail(run, f'curve_{m}_ipc{ipc}'))}" for m in arms_at(run, ipc)) + ";")
    for ipc, method in matched_arms(run):
        lines.append(f"- learned student learning rate, {LABELS[method]}, IPC {ipc}: "
                     f"{np.mean(run.values(f'lr_{method}_ipc{ipc}')):.3g} (the evaluation nets train at it);")
    lines.append(f"- expert path length (parameter movement over training): plain "
                 f"{np.mean(run.values('expert_path_plain')):.2f}, smooth {np.mean(run.values('expert_path_smooth')):.2f}.")
    return "\n".join(lines)


def storage_markdown(run: Run) -> str:
    """The storage/accuracy trade-off at the largest IPC, from this run's bytes and accuracies."""
    p = run.params
    large = p.ipcs[-1]

    def size(kind: str) -> int:
        return int(run.values(f"bytes_{kind}_ipc{large}")[0])

    def acc(method: str) -> float:
        return 100 * float(np.mean(_tail(run, f"curve_{method}_ipc{large}")))

    static, per_view, dynamic = size("infer"), size("per_view"), size("infer_dynamic")
    gain = acc("infer_dynamic") - acc("infer")
    headline = acc("infer") - acc("sre2l")
    views = per_view // static
    return (f"At {large} images per class, INFER's static labels take {static:,} bytes (one float32 vector per image) "
            f"and the dynamic labels, stored as SRe2L stores them (one vector per image per step, {p.eval_steps} steps), "
            f"{dynamic:,} bytes, {dynamic / static:.0f}× more. On the same INFER images, the dynamic labels gain "
            f"{gain:+.1f} points over the static ones (mean over seeds): {gain / ((dynamic - static) / 1e6):+.2f} "
            f"points per extra megabyte. INFER with static labels against the SRe2L-like images with dynamic labels "
            f"(the paper's headline comparison): {headline:+.1f} points. A shift of up to {p.eval_shift} pixel(s) "
            f"gives each image only {views} views, so here the dynamic labels could also be stored as a table of one "
            f"label per view, {per_view:,} bytes ({views}× the static labels), with exactly the dynamic labels' "
            "accuracy; with a continuous augmentation such as a random crop, as in SRe2L and INFER, no such table "
            "exists and the per-step count is the real one.")


def glue_values(run: Run, bed: Bed) -> dict[str, float | str]:
    """What the prose quotes: the IPCs distilled, the evaluation shift, the number of test images and the
    matching iterations."""
    p = run.params
    return {"ipcs": " and ".join(map(str, p.ipcs)), "eval_shift": p.eval_shift, "n_test": bed.n_test,
            "largest_ipc": p.ipcs[-1], "match_iterations": p.match_iterations, "syn_steps": p.syn_steps,
            "synthesis_steps": p.synthesis_steps, "bn_weight": p.bn_weight}
