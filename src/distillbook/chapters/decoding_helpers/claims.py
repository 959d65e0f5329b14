"""The papers' claims with their margins, their verdicts from the recorded numbers, the test-bed health table, the
facts about the set-up that no claim can test, and every text built from this run's numbers."""

from __future__ import annotations

from functools import partial

import numpy as np

from distillbook.core.claims import Claim
from distillbook.core.results import Run

from .experiment import DRAFT_ARMS, Bed
from .params import Params

DISTILLSPEC, SWIFTKV, DPARALLEL, DECOG = 79, 28, 36, 73


def _values(run: Run, name: str) -> np.ndarray:
    return np.asarray(run.values(name), dtype=float)


def _mean_std(x: np.ndarray, digits: int = 3) -> str:
    return f"{x.mean():.{digits}g} ± {x.std(ddof=1):.{digits}g}"


ALPHA_MARGIN = 0.01
ALPHA_RATIONALE = ("0.01 in alpha is one more accepted draft token per 100 proposals: about 2% more tokens per target "
                   "call at gamma = 4 for alpha from 0.6 to 0.9 (block-efficiency formula), a fifth of the paper's "
                   "smallest reported speed-up (10%)")


def claims(p: Params) -> tuple[Claim, ...]:
    answers = p.dg_eval
    return (
        Claim("distilled-drafts-accept-more", DISTILLSPEC, statement="Every distilled draft has a higher acceptance "
              "rate than the draft trained as long on data (per seed: the worst distilled draft minus the control)",
              a="alpha, worst distilled draft", b="alpha, data-trained draft", margin=ALPHA_MARGIN,
              rationale=ALPHA_RATIONALE, ceiling=1.0, saturation_tol=ALPHA_MARGIN,
              paper_figure="Figure 2 / Table 1", paper_value="distillation raises acceptance, 10-45% speed-up",
              explanation="The data-trained draft is already close to the target on this small language."),
        Claim("on-policy-tvd-beats-offline", DISTILLSPEC, statement="On-policy TVD gives a higher acceptance rate "
              "than offline forward KL", a="alpha, TVD on-policy", b="alpha, FKL offline", margin=ALPHA_MARGIN,
              rationale=ALPHA_RATIONALE, ceiling=1.0, saturation_tol=ALPHA_MARGIN,
              paper_figure="Figure 4", paper_value="on-policy data and TVD-like divergences work best",
              explanation="On-policy data help where the draft's own samples leave the data distribution; a draft "
                          f"pre-trained on this {p.n_states}-state language barely does, so every divergence ends at "
                          "about the "
                          "same acceptance rate."),
        Claim("on-policy-jsd-beats-offline", DISTILLSPEC, statement="...and so does on-policy JSD",
              a="alpha, JSD on-policy", b="alpha, FKL offline", margin=ALPHA_MARGIN, rationale=ALPHA_RATIONALE,
              ceiling=1.0, saturation_tol=ALPHA_MARGIN, paper_figure="Figure 4", paper_value="on-policy data helps",
              explanation="As for TVD: the draft's own samples stay close to the data, so on-policy data add little."),
        Claim("block-efficiency-formula", DISTILLSPEC, statement="Measured tokens per target call are within 5% of "
              "(1 - alpha^(gamma+1)) / (1 - alpha) (on-policy TVD draft)", a="measured block efficiency",
              b="analytic block efficiency", statistic="ratio", region=("within", (0.95, 1.05)), margin=0.0,
              rationale=f"±5%: tokens per target call is measured over at most {p.spec_strings * p.length} "
                        f"speculative rounds ({p.spec_strings} strings of {p.length} tokens), and a round yields 1 to "
                        f"{p.gamma + 1} tokens, so a few percent of sampling error; and the formula assumes i.i.d. "
                        "acceptance, which position-dependent alpha breaks slightly",
              paper_figure="Leviathan et al. (2023), eq. 1", paper_value="exact for i.i.d. acceptance",
              explanation="Acceptance varies by position, so the i.i.d. formula is only approximate."),
        Claim("swiftkv-distilled-keeps-90", SWIFTKV, statement="SwiftKV with distilled q/k/v keeps at least 90% of "
              "the base model's accuracy (arg-max agreement with the oracle after the prompt)",
              a="agreement, distilled", b="agreement, base", statistic="ratio", region=(">", 0.9), margin=0.0,
              rationale="the 90% bar is itself the smallest retention the chapter counts as 'minimal loss' (the "
                        "paper loses about a point on 8B models); agreement over 256 strings resolves 0.1% of it",
              paper_figure="Table 1", paper_value="minimal quality loss",
              explanation="Distilling only the later layers' q/k/v projections cannot recover what the rewired "
                          "prompt states no longer carry.",
              diagnosis="swiftkv-rewiring-collapses"),
        Claim("swiftkv-rewiring-collapses", SWIFTKV, statement="Rewiring alone falls below 50% of the base "
              "accuracy", a="agreement, rewired", b="agreement, base", statistic="ratio", region=("<", 0.5),
              margin=0.0, rationale="the 50% bar is itself the brief's line for 'collapse'; agreement over 256 "
                                    "strings resolves 0.1% of it",
              paper_figure="brief's expectation", paper_value="without training the rewired model collapses",
              explanation="Rewiring at layer k = kv_local keeps every prompt token's identity and position in the "
                          "keys and values the later layers read; the positions after the prompt run every layer "
                          "and can redo much of the prompt's mixing, so rewiring alone loses little."),
        Claim("dparallel-fewer-steps", DPARALLEL, statement="Certainty forcing cuts the decoding steps above the "
              "one-step floor by the paper's factor", a="steps, base", b="steps, dParallel", statistic="ratio",
              region=(">", 8.5), margin=0.0, floor=1.0,
              rationale=f"the paper's 8.5× on 256-token answers (256 → 30 steps) removes 88% of the 255 steps above "
                        f"the one-step floor; carried to {p.dp_digits}-token answers as the excess over that floor, "
                        f"(base − 1)/(dParallel − 1) > 8.5, i.e. about {1 + (p.dp_digits - 1) / 8.5:.2f} steps "
                        "from "
                        f"{p.dp_digits}; the paper's factor is the bar, so margin 0",
              paper_figure="Table 1 (GSM8K 256 -> 30 steps)", paper_value="8.5-10.5x fewer steps",
              explanation="A permutation task needs one step per token from any calibrated model, since the model "
                          "cannot know which digit goes where until the others are placed; certainty forcing can "
                          "only trade validity for the steps it cuts.",
              diagnosis="dp_steps_ce"),
        Claim("dparallel-keeps-accuracy", DPARALLEL, statement="...with validity within 2 points of the base",
              a="validity, dParallel", b="validity, base", region=("within", (-0.02, 0.02)), margin=0.0,
              rationale=f"±2 points: the paper keeps accuracy within about a point; 2 points are "
                        f"{round(0.02 * p.dp_eval)} of the {p.dp_eval} test problems",
              paper_figure="Table 1", paper_value="accuracy kept",
              explanation="Forcing certainty on an ambiguous task commits digits before the model knows which are "
                          "left: the entropy term, not the fine-tuning on its own trajectories, costs the validity.",
              diagnosis="dp_valid_ce"),
        Claim("entropy-term-matters", DPARALLEL, statement="The entropy term cuts steps beyond CE alone on the "
              "same trajectories", a="steps, CE + entropy", b="steps, CE only", region=("<", 0.0), margin=0.1,
              rationale=f"0.1 step per {p.dp_digits}-token answer: a saving smaller than one step in ten answers is "
                        f"no speed-up worth reporting; the mean over {p.dp_eval} problems resolves 1/{p.dp_eval} step",
              floor=1.0, paper_figure="ablation", paper_value="certainty forcing needs the entropy term",
              explanation="Without the entropy term the fine-tuned model stays as unsure about the order as the base.",
              diagnosis="dp_steps_ce"),
        Claim("decog-beats-free-decoding", DECOG, statement="Deco-G's answers are more often correct than the "
              "language model's own, decoded without the format (the chapter's stand-in for format prompting)",
              a="accuracy, Deco-G", b="accuracy, LM alone", margin=0.01, floor=0.0, ceiling=1.0,
              saturation_tol=1 / answers,
              rationale=f"1 point: the paper's smallest gain (1% relative) at accuracies near 1, and 2 of the "
                        f"{answers} test sums",
              paper_figure="Table 2", paper_value="1-6% relative gain over prompting",
              explanation="At this scale the format does not interfere with solving the sum (the paper's premise), so "
                          "decoding in the required format can only move digits into its slots, not fix them."),
    )


def evaluate_claims(run: Run) -> list[dict]:
    c = {claim.id: claim for claim in claims(run.params)}
    v = partial(_values, run)
    worst = np.min([v(f"alpha_{arm}") for arm in DRAFT_ARMS if arm != "data"], axis=0)
    return [
        c["distilled-drafts-accept-more"].evaluate(worst, v("alpha_data")),
        c["on-policy-tvd-beats-offline"].evaluate(v("alpha_tvd_onpolicy"), v("alpha_fkl_offline")),
        c["on-policy-jsd-beats-offline"].evaluate(v("alpha_jsd_onpolicy"), v("alpha_fkl_offline")),
        c["block-efficiency-formula"].evaluate(v("block_measured_tvd_onpolicy"), v("block_analytic_tvd_onpolicy")),
        c["swiftkv-distilled-keeps-90"].evaluate(v("kv_agree_distilled"), v("kv_agree_base")),
        c["swiftkv-rewiring-collapses"].evaluate(v("kv_agree_rewired"), v("kv_agree_base")),
        c["dparallel-fewer-steps"].evaluate(v("dp_steps_base"), v("dp_steps_dparallel")),
        c["dparallel-keeps-accuracy"].evaluate(v("dp_valid_dparallel"), v("dp_valid_base")),
        c["entropy-term-matters"].evaluate(v("dp_steps_dparallel"), v("dp_steps_ce")),
        c["decog-beats-free-decoding"].evaluate(v("dg_accuracy_decog"), v("dg_accuracy_prompt")),
    ]


def setup_facts(run: Run) -> dict[str, float]:
    """Facts about the set-up that no claim can test (constant by configuration or by construction), computed.

    ``prefill_ratio``: SwiftKV's prefill FLOPs over the base model's, fixed by k of L layers; ``decog_vs_hard``:
    the largest |accuracy(Deco-G) - accuracy(hard masking)| over seeds (0 when every allowed token keeps the
    format completable, so the reweighting never changes the arg-max); ``base_steps_spread``: the spread of the
    base model's mean step count over seeds, against its answer length.
    """
    v = partial(_values, run)
    return {"prefill_ratio": float(v("kv_prefill_flops_ratio").mean()),
            "prefill_ratio_spread": float(np.ptp(v("kv_prefill_flops_ratio"))),
            "decog_vs_hard": float(np.max(np.abs(v("dg_accuracy_decog") - v("dg_accuracy_hard")))),
            "hard_compliance_min": float(v("dg_compliance_hard").min()),
            "decog_compliance_min": float(v("dg_compliance_decog").min()),
            "prompt_compliance_max": float(v("dg_compliance_prompt").max()),
            "base_steps_mean": float(v("dp_steps_base").mean()),
            "base_steps_spread": float(np.ptp(v("dp_steps_base"))),
            "ce_steps_mean": float(v("dp_steps_ce").mean()),
            "ce_steps_spread": float(np.ptp(v("dp_steps_ce")))}


def setup_facts_markdown(run: Run) -> str:
    """The facts about the set-up that no claim can test, as sentences built from this run's numbers."""
    p, f = run.params, setup_facts(run)
    n = len(run.seeds)
    every = "in every seed" if n > 1 else "in its one seed"
    prefill = (f"{100 * f['prefill_ratio']:.1f}% of the base model's {every}" if f["prefill_ratio_spread"] == 0 else
               f"{100 * f['prefill_ratio']:.1f}% of the base model's on average "
               f"(spread {100 * f['prefill_ratio_spread']:.2g} points)")
    lines = [f"- **SwiftKV's prefill cost** is {prefill}: the prompt runs {p.kv_k} of {p.kv_layers} layers, a "
             "configuration constant stated here rather than claimed (the paper's halved prefill is a design choice, "
             "not an outcome)."]
    if f["base_steps_spread"] == 0 and f["ce_steps_spread"] == 0:
        lines.append(f"- **dParallel's base and CE-only models** take {f['base_steps_mean']:g} and "
                     f"{f['ce_steps_mean']:g} "
                     f"steps per {p.dp_digits}-token answer {every}: on a permutation a calibrated model unmasks one "
                     "token per step, so only the entropy term can cut steps here.")
    else:
        lines.append(f"- **dParallel's base and CE-only models** take {f['base_steps_mean']:.3g} and "
                     f"{f['ce_steps_mean']:.3g} steps per {p.dp_digits}-token answer on average.")
    comply = "every answer" if f["decog_compliance_min"] == 1 and f["hard_compliance_min"] == 1 else (
        f"at least {100 * min(f['decog_compliance_min'], f['hard_compliance_min']):.1f}% of answers")
    lines.append(f"- **Format compliance** is a guarantee by construction: hard masking and Deco-G comply on {comply} "
                 f"{every}, the language model alone on at most {100 * f['prompt_compliance_max']:.1f}%.")
    if f["decog_vs_hard"] == 0:
        lines.append(f"- **Deco-G's accuracy equals hard masking's** {every}: every token the automaton allows keeps "
                     "the format completable, so the HMM's reweighting never changes the greedy choice, and the "
                     "paper's comparison with masking cannot be made on this automaton.")
    else:
        lines.append(f"- **Deco-G and hard masking** differ in accuracy by at most {f['decog_vs_hard']:.3f} "
                     "over seeds.")
    return "\n".join(lines)


def record_health(run: Run) -> None:
    """The test-bed health table: the shared models and the Deco-G LM against their oracle or ceiling."""
    p = run.params
    run.health(f"speculative target ({p.target_layers}-layer GPT-2)", "KL(oracle ‖ target), nats/symbol", "target_kl",
               lower_is_better=True, references={"exact oracle": 0.0},
               note="on oracle strings; the drafts are judged by their agreement with this target")
    run.health(f"SwiftKV base ({p.kv_layers}-layer Llama)", "arg-max agreement with the oracle", "kv_agree_base",
               lower_is_better=False, references={"exact oracle": 1.0},
               note="after the prompt; the oracle's own arg-max scores 1")
    run.health("SwiftKV base", "KL(oracle ‖ model) after the prompt, nats", "kv_kl_base", lower_is_better=True,
               references={"exact oracle": 0.0})
    run.health("dParallel base (masked diffusion)", "valid permutations", "dp_valid_base", lower_is_better=False,
               references={"ceiling": 1.0}, note="decoded at one step per token")
    run.health("Deco-G language model", "correct sums, LM alone", "dg_accuracy_prompt", lower_is_better=False,
               references={"ceiling": 1.0})


def glue_values(run: Run, bed: Bed) -> dict[str, float]:
    """Every number the prose cites: the sizes it names and the set-up facts (:func:`setup_facts`)."""
    p = run.params
    return {"kv_k": p.kv_k, "kv_layers": p.kv_layers, "dp_digits": p.dp_digits, **setup_facts(run)}


def summary_markdown(run: Run, results: list[dict]) -> str:
    """The measured numbers behind the claims, mean ± std over seeds (``results``, the verdicts, are tabled
    apart)."""
    v, ms = partial(_values, run), _mean_std
    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), mean ± std.", ""]
    lines.append("- **DistillSpec** acceptance rate: " + "; ".join(
        f"{label} {ms(v(f'alpha_{a}'))}" for a, (label, _, _) in DRAFT_ARMS.items()) + ".")
    lines.append(f"- **SwiftKV** agreement: base {ms(v('kv_agree_base'))}, rewired {ms(v('kv_agree_rewired'))}, "
                 f"distilled {ms(v('kv_agree_distilled'))}; KL to the oracle: base {ms(v('kv_kl_base'))}, rewired "
                 f"{ms(v('kv_kl_rewired'))}, distilled {ms(v('kv_kl_distilled'))}; prefill FLOPs "
                 f"{100 * v('kv_prefill_flops_ratio').mean():.0f}% of the base.")
    lines.append(f"- **dParallel** steps / validity: base {ms(v('dp_steps_base'))} / {ms(v('dp_valid_base'))}; "
                 f"CE only {ms(v('dp_steps_ce'))} / {ms(v('dp_valid_ce'))}; CE + entropy {ms(v('dp_steps_dparallel'))}"
                 f" / {ms(v('dp_valid_dparallel'))} (self-generated trajectories kept: {ms(v('dp_kept'))}).")
    lines.append("- **Deco-G** compliance / accuracy: " + "; ".join(
        f"{label} {ms(v(f'dg_compliance_{n}'))} / {ms(v(f'dg_accuracy_{n}'))}"
        for n, label in (("prompt", "LM alone"), ("hard", "hard masking"), ("decog", "Deco-G"))) + ".")
    return "\n".join(lines)
