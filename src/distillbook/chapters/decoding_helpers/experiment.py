"""The test beds and the runs: each seed trains its own models (the speculative target, the SwiftKV base, the
masked-diffusion base and the Deco-G language model), then runs the four experiments on them.

The methods themselves live in :mod:`distillbook.methods`: speculative sampling and DistillSpec's draft loss in
``speculative``, SwiftKV in ``swiftkv``, threshold decoding and certainty forcing in ``masked_diffusion``, Deco-G
in ``constrained``. This module holds the tasks (the grammar language, the digit-mapping problems, the copy
prompts with their answer formats), the arms and the metrics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.core.results import Run
from distillbook.core.runtime import derived_generator, derived_seed
from distillbook.methods import constrained, masked_diffusion, speculative, swiftkv
from distillbook.models.lm import next_token_loss, sample, symbol_logits, tiny_gpt2
from distillbook.testbeds.grammar import HMMLanguage, golden_kl, with_bos

from .params import Params

DRAFT_ARMS = {"data": ("next-token CE on data", None, "data"),
              "fkl_offline": ("forward KL, data (offline)", "forward_kl", "data"),
              "fkl_onpolicy": ("forward KL, draft samples (on-policy)", "forward_kl", "draft"),
              "tvd_onpolicy": ("TVD, draft samples (on-policy)", "total_variation", "draft")}
"""Draft arm -> (label, divergence to the target or None for next-token CE on data, source of the strings).
Each pair of arms the claims compare differs in one thing: the data source (FKL offline vs FKL on-policy) or the
divergence (FKL vs TVD, both on-policy). JSD is left out: at the cpu budget a fifth arm does not fit (see the
preset's cost table)."""

BLOCK_ARMS = ("tvd_onpolicy", "data")  # arms whose block efficiency is also measured by speculative sampling

# the purposes of the seeds derived from a run seed: derived_seed(seed, purpose) / derived_generator(seed, purpose)
# (purpose 7 drew Deco-G's random test prompts; every distinct prompt is now tested once, and the slot is kept so
# that the other purposes keep their streams)
ALPHA_STRINGS, SPECULATIVE_RUNS, SWIFTKV_STRINGS, DP_TRAJECTORIES, DP_TEST, DG_SAMPLES, _, ORACLE_STRINGS = \
    range(1, 9)  # evaluation and sampling draws
TARGET_INIT, SWIFTKV_INIT, DPARALLEL_INIT, DRAFT_INIT, DECOG_LM_INIT = range(9, 14)  # initial weights
DRAFT_SAMPLES = 14  # the pre-trained draft's own strings (the on-policy shift diagnosis)
DG_HELDOUT = 15  # held-out LM samples for the Deco-G HMMs' likelihood check (test-bed health)


def _fit(run: Run, name: str, seed: int, model, loss, batches, steps: int, lr: float, params=None, **kwargs):
    optimizer = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr)
    return run.fit(name, seed, model, loss, batches, steps=steps, optimizer=optimizer, **kwargs)


# ---------------------------------------------------------------- the models every seed trains for itself


@dataclass
class Bed:
    """What every seed shares: the grammar language (an oracle, not a trained model)."""
    lang: HMMLanguage
    V: int
    bos: int


@dataclass
class Bases:
    """One seed's base models: the speculative target, the SwiftKV base and the masked-diffusion base."""
    target: torch.nn.Module
    kv_base: torch.nn.Module
    dp_base: torch.nn.Module


def build_bed(run: Run) -> Bed:
    """The grammar language. The base models are trained per seed (:func:`train_bases`), so that the intervals
    include their variance."""
    p = run.params
    lang = HMMLanguage.random(p.language_seed, n_states=p.n_states, vocab_size=p.vocab_size, length=p.length)
    return Bed(lang, p.vocab_size, p.vocab_size)


def train_bases(run: Run, b: Bed, seed: int) -> Bases:
    """The speculative target, the SwiftKV base and the masked-diffusion base of one seed."""
    p = run.params
    V, bos = b.V, b.bos

    def lm_batches(gen):
        return b.lang.sample(p.batch_size, gen)

    def lm_loss(m, x):
        return next_token_loss(m, x, V, bos)

    torch.manual_seed(derived_seed(seed, TARGET_INIT))
    target = tiny_gpt2(V + 1, p.target_dim, p.target_layers, max_length=p.length + p.gamma + 2).to(run.device)
    _fit(run, "target", seed, target, lm_loss, lm_batches, p.target_steps, p.lr)
    torch.manual_seed(derived_seed(seed, SWIFTKV_INIT))
    kv = swiftkv.tiny_llama(V + 1, p.kv_dim, p.kv_layers, max_length=p.length + 1).to(run.device)

    def kv_loss(m, x):
        logits = swiftkv.forward(m, with_bos(x, bos)[:, :-1], 1, p.kv_layers, local_layers=p.kv_local)
        return F.cross_entropy(logits[..., :V].reshape(-1, V), x.reshape(-1))

    _fit(run, "swiftkv-base", seed, kv, kv_loss, lm_batches, p.kv_base_steps, p.lr)
    torch.manual_seed(derived_seed(seed, DPARALLEL_INIT))
    dp = _digit_model(p).to(run.device)

    def dp_loss(m, batch):
        return masked_diffusion.masked_lm_loss(m, batch, _answer(p), DIGITS)

    def dp_batches(gen):
        return _noisy_batch(p, gen)

    _fit(run, "dparallel-base", seed, dp, dp_loss, dp_batches, p.dp_base_steps, p.dp_base_lr)
    for m in (target, kv, dp):
        m.eval().requires_grad_(False)
    return Bases(target, kv, dp)


# ---------------------------------------------------------------- 1. DistillSpec


def distillspec(run: Run, b: Bed, m: Bases, seed: int) -> dict:
    p = run.params
    V, bos = b.V, b.bos

    def data_batches(gen):
        return b.lang.sample(p.batch_size, gen)

    def ce_loss(model, x):
        return next_token_loss(model, x, V, bos)

    torch.manual_seed(derived_seed(seed, DRAFT_INIT))
    draft0 = tiny_gpt2(V + 1, p.draft_dim, 1, max_length=p.length + p.gamma + 2).to(run.device)
    _fit(run, "draft-pre", seed, draft0, ce_loss, data_batches, p.draft_pre_steps, p.lr)
    draft0.eval()
    eval_x = sample(m.target, p.alpha_strings, p.length, bos, derived_generator(seed, ALPHA_STRINGS), n_symbols=V)

    def alpha_on(draft, x) -> float:
        """alpha = mean over strings and positions of sum_v min(p, q), on the strings x."""
        with torch.no_grad():
            target_probs = torch.softmax(symbol_logits(m.target, x, V, bos).double(), -1)
            q = torch.softmax(symbol_logits(draft, x, V, bos).double(), -1)
        return float(speculative.acceptance_rate(target_probs, q).mean())

    oracle_x = b.lang.sample(p.alpha_strings, derived_generator(seed, ORACLE_STRINGS))
    with torch.no_grad():
        target_logits = symbol_logits(m.target, oracle_x, V, bos).double()
    own_x = sample(draft0, p.alpha_strings, p.length, bos, derived_generator(seed, DRAFT_SAMPLES), n_symbols=V)
    # diagnosis of the on-policy claim: does the pre-trained draft meet the target worse on its own strings than on
    # the target's? (on-policy data can only help where they do)
    out = {"target_kl": golden_kl(b.lang.next_token_probs(oracle_x), target_logits).mean().item(),
           "alpha_shift_onpolicy": alpha_on(draft0, eval_x) - alpha_on(draft0, own_x)}
    for arm, (_, divergence, source) in DRAFT_ARMS.items():
        draft = copy.deepcopy(draft0).train()
        if divergence is None:
            loss = ce_loss
        else:
            def loss(model, x, divergence=divergence):
                with torch.no_grad():
                    teacher = symbol_logits(m.target, x, V, bos)
                return speculative.draft_distillation_loss(symbol_logits(model, x, V, bos), teacher, divergence)

        if source == "data":
            batches = data_batches
        else:
            def batches(gen, draft=draft):  # on-policy: the draft's own samples, as it is now
                return sample(draft, p.batch_size, p.length, bos, gen, n_symbols=V)

        fit = _fit(run, f"draft-{arm}", seed, draft, loss, batches, p.draft_steps, p.lr,
                   evaluate=lambda model: {"alpha": alpha_on(model, eval_x)}, eval_every=max(1, p.draft_steps // 10))
        draft.eval()
        alpha = alpha_on(draft, eval_x)
        out.update({f"alpha_{arm}": alpha, f"alpha_curve_{arm}": fit.column("alpha"),
                    f"block_analytic_{arm}": float(speculative.block_efficiency(alpha, p.gamma))})
        if arm in BLOCK_ARMS:  # speculative sampling run for real: the formula's claim and its second check
            out[f"block_measured_{arm}"] = speculative.measured_block_efficiency(
                speculative.lm_next_probs(m.target, V, bos), speculative.lm_next_probs(draft, V, bos),
                torch.zeros(0, dtype=torch.long), p.length, p.gamma, p.spec_strings,
                derived_generator(seed, SPECULATIVE_RUNS))
    # diagnosis of the divergence claim: TVD's lead over FKL (both on-policy) over the first three evaluations
    early = slice(0, 3)
    out["alpha_gap_tvd_fkl_early"] = float(np.mean(out["alpha_curve_tvd_onpolicy"][early])
                                           - np.mean(out["alpha_curve_fkl_onpolicy"][early]))
    return out


# ---------------------------------------------------------------- 2. SwiftKV


def swift_kv(run: Run, b: Bed, m: Bases, seed: int) -> dict:
    p = run.params
    V, bos, L, k = b.V, b.bos, p.kv_layers, p.kv_k
    x = b.lang.sample(256, derived_generator(seed, SWIFTKV_STRINGS))
    ids = with_bos(x, bos)[:, :-1].to(run.device)
    oracle = b.lang.next_token_probs(x)[:, p.kv_prompt - 1:].to(run.device)

    def quality(model, layers) -> tuple[float, float]:
        with torch.no_grad():
            logits = swiftkv.forward(model, ids, p.kv_prompt, layers, local_layers=p.kv_local)[..., :V]
        agree = (logits.argmax(-1) == oracle.argmax(-1)).double().mean().item()
        return agree, golden_kl(oracle, logits.double()).mean().item()

    student = copy.deepcopy(m.kv_base).train()
    trainable = swiftkv.unfreeze_later_qkv(student, k)

    def loss(model, xb):
        i = with_bos(xb, bos)[:, :-1]
        with torch.no_grad():
            teacher = swiftkv.forward(m.kv_base, i, p.kv_prompt, L, local_layers=p.kv_local)
        return swiftkv.distillation_loss(swiftkv.forward(model, i, p.kv_prompt, k, local_layers=p.kv_local), teacher,
                                         temperature=2.0)

    def batches(gen):
        return b.lang.sample(p.batch_size, gen)

    def evaluate(model) -> dict:  # the distillation curve: quality of the rewired student as it trains
        agree, kl = quality(model, k)
        return {"agree": agree, "kl": kl}

    fit = _fit(run, "swiftkv-distil", seed, student, loss, batches, p.kv_distil_steps, p.lr, params=trainable,
               evaluate=evaluate, eval_every=max(1, p.kv_distil_steps // 10))
    student.eval()
    base_agree, base_kl = quality(m.kv_base, L)
    rewired_agree, rewired_kl = quality(m.kv_base, k)
    distilled_agree, distilled_kl = quality(student, k)
    prompt = ids[:1, :p.kv_prompt]
    flops = swiftkv.prefill_flops(m.kv_base, prompt, k) / swiftkv.prefill_flops(m.kv_base, prompt, L)
    return {"kv_agree_base": base_agree, "kv_agree_rewired": rewired_agree, "kv_agree_distilled": distilled_agree,
            "kv_kl_base": base_kl, "kv_kl_rewired": rewired_kl, "kv_kl_distilled": distilled_kl,
            "kv_prefill_flops_ratio": flops, "kv_agree_curve_distilled": fit.column("agree"),
            "kv_kl_curve_distilled": fit.column("kl")}


# ---------------------------------------------------------------- 3. dParallel: "write these digits reversed, mapped"

SEP, MASK = 10, 11  # digits are 0-9
DIGITS = slice(0, 10)


def _digit_model(p: Params):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=12, hidden_size=p.dp_dim, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=4 * p.dp_dim, max_position_embeddings=2 * p.dp_digits + 1)
    return BertForMaskedLM(config)


def _digit_problems(p: Params, n: int, gen: torch.Generator) -> torch.Tensor:
    """Rows [x_1..x_N, SEP, y_1..y_N] with y_i = (3 x_{N+1-i} + 1) mod 10: every answer token is fixed by the
    prompt (reverse the digits, map each)."""
    x = torch.randint(0, 10, (n, p.dp_digits), generator=gen)
    # y_i = (3 x_{N+1-i} + 1) mod 10
    y = (3 * x.flip(1) + 1) % 10
    return torch.cat([x, torch.full((n, 1), SEP), y], 1)


def _answer(p: Params) -> slice:
    return slice(p.dp_digits + 1, 2 * p.dp_digits + 1)


def answer_noise(p: Params) -> torch.Tensor:
    """The base's training noise per answer position: eps_i = dp_noise_max * i / (N - 1), i = 0..N-1. A model
    calibrated to it is sure of the first answer tokens only: its top probability 1 - 0.9 eps_i falls below tau
    where eps_i > (1 - tau) / 0.9, so the base is accurate by arg-max but unmasks the rest one step at a time."""
    # eps_i = eps_max * i / (N - 1)
    return p.dp_noise_max * torch.arange(p.dp_digits, dtype=torch.float64) / (p.dp_digits - 1)


def _noisy_batch(p: Params, gen: torch.Generator):
    """The base's training batch: fresh problems whose answer token i is replaced by a uniform digit with
    probability eps_i (:func:`answer_noise`), then a random share of each answer masked."""
    x = _digit_problems(p, p.dp_batch, gen)
    noisy = torch.rand(p.dp_batch, p.dp_digits, generator=gen, dtype=torch.float64) < answer_noise(p)
    x[:, _answer(p)] = torch.where(noisy, torch.randint(0, 10, (p.dp_batch, p.dp_digits), generator=gen),
                                   x[:, _answer(p)])
    return masked_diffusion.mask_random_share(x, _answer(p), MASK, gen)


def _trajectory_batch(p: Params, gen: torch.Generator, source: torch.Tensor):
    """A fine-tuning batch: the model's own correct answers, a random share of each masked."""
    x = source[torch.randint(0, len(source), (p.dp_batch,), generator=gen)]
    return masked_diffusion.mask_random_share(x, _answer(p), MASK, gen)


def _exact(p: Params, decoded: torch.Tensor, problems: torch.Tensor) -> torch.Tensor:
    return (decoded[:, _answer(p)] == problems[:, _answer(p)]).all(1)


def _decode(p: Params, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return masked_diffusion.decode(model, x, _answer(p), MASK, p.dp_tau, vocab=DIGITS)


def dparallel(run: Run, b: Bed, m: Bases, seed: int) -> dict:
    p = run.params
    problems = _digit_problems(p, p.dp_trajectories, derived_generator(seed, DP_TRAJECTORIES)).to(run.device)
    with torch.no_grad():
        out, _ = _decode(p, m.dp_base, problems)
    correct = _exact(p, out, problems)
    # the model's own correct answers (all of them if none is correct, as in a few-step smoke run)
    trajectories = (out[correct] if correct.any() else out).cpu()  # batches are drawn on the host; fit moves them
    test = _digit_problems(p, p.dp_eval, derived_generator(seed, DP_TEST)).to(run.device)
    result = {"dp_kept": correct.double().mean().item()}

    def batches(gen):
        return _trajectory_batch(p, gen, trajectories)

    def steps_now(model) -> dict:
        with torch.no_grad():
            _, steps = _decode(p, model, test[:p.dp_curve_problems])
        return {"steps": steps.double().mean().item()}

    for name, weight in (("base", None), ("ce", 0.0), ("dparallel", p.dp_entropy_weight)):
        model = m.dp_base
        if weight is not None:
            model = copy.deepcopy(m.dp_base).train().requires_grad_(True)

            def loss(mdl, batch, weight=weight):
                return masked_diffusion.masked_lm_loss(mdl, batch, _answer(p), DIGITS, entropy_weight=weight)

            fit = _fit(run, f"dparallel-{name}", seed, model, loss, batches, p.dp_tune_steps, p.dp_tune_lr,
                       evaluate=steps_now, eval_every=max(1, p.dp_tune_steps // 6))
            result[f"dp_steps_curve_{name}"] = fit.column("steps")
            model.eval()
        with torch.no_grad():
            decoded, steps = _decode(p, model, test)
        result[f"dp_exact_{name}"] = _exact(p, decoded, test).double().mean().item()
        result[f"dp_steps_{name}"] = steps.double().mean().item()
    return result


# ---------------------------------------------------------------- 4. Deco-G: "write d, n times" within a 5-token answer

EQ, ANS_MARK, DOT, PAD, INSTRUCTED, FREE = 10, 11, 12, 13, 14, 15
DG_V, DG_BOS, DG_PROMPT = 16, 16, 4  # prompt "[instruction] d n =": 4 tokens
DG_TRAIN_ANSWER, DG_ANSWER = 6, 5  # answers in the training data: 6 tokens; the required format: 5
FORMATS = ("compact", "chatty", "bare")
FORMAT_SHARES = {INSTRUCTED: (0.25, 0.70, 0.05), FREE: (0.05, 0.45, 0.50)}
"""Answer formats of the LM's training data, by instruction token: compact "A d.. . _" (the required one), chatty
"A _ _ d.. ." and bare "d.. _ _". Instructed, the LM still prefers the chatty one, whose two fillers the format
allows but which leaves no room for a second digit within the 5-token budget."""


def _answer_tokens(digit: torch.Tensor, count: torch.Tensor, fmt: torch.Tensor) -> torch.Tensor:
    """Answers of DG_TRAIN_ANSWER tokens: fmt 0 = compact, 1 = chatty, 2 = bare (see :data:`FORMATS`)."""
    rows = []
    for d, n, f in zip(digit.tolist(), count.tolist(), fmt.tolist()):
        body = {0: [ANS_MARK, *[d] * n, DOT], 1: [ANS_MARK, PAD, PAD, *[d] * n, DOT], 2: [d] * n}[f]
        rows.append(body + [PAD] * (DG_TRAIN_ANSWER - len(body)))
    return torch.tensor(rows)


def _dg_prompts(n: int, gen: torch.Generator, instruction: int) -> torch.Tensor:
    """Prompts [instruction, d, n, =]: write the digit d, n in {1, 2} times (drawn at random)."""
    d, count = torch.randint(0, 10, (n,), generator=gen), torch.randint(1, 3, (n,), generator=gen)
    return torch.stack([torch.full_like(d, instruction), d, count, torch.full_like(d, EQ)], 1)


def dg_test_prompts() -> torch.Tensor:
    """Every distinct instructed prompt once (10 digits x 2 counts = 20): greedy decoding answers a prompt the same
    way every time, so repeats of a prompt would add no information, only weight."""
    d, n = torch.arange(10).repeat_interleave(2), torch.tensor([1, 2]).repeat(10)
    return torch.stack([torch.full_like(d, INSTRUCTED), d, n, torch.full_like(d, EQ)], 1)


def _dg_strings(n: int, gen: torch.Generator) -> torch.Tensor:
    """The LM's training strings: half instructed, half free, each with its format shares."""
    instructed = torch.rand(n, generator=gen) < 0.5
    prompts = torch.where(instructed[:, None], _dg_prompts(n, gen, INSTRUCTED), _dg_prompts(n, gen, FREE))
    r = torch.rand(n, generator=gen)
    fmt = torch.empty(n, dtype=torch.long)
    for token, (compact, chatty, _) in FORMAT_SHARES.items():
        rows = prompts[:, 0] == token
        fmt[rows] = torch.where(r[rows] < compact, 0, torch.where(r[rows] < compact + chatty, 1, 2))
    return torch.cat([prompts, _answer_tokens(prompts[:, 1], prompts[:, 2], fmt)], 1)


def format_dfa() -> constrained.DFA:
    """'A', any fillers, one or two digits, '.', then fillers: the required format of a DG_ANSWER-token answer."""
    D = constrained.DEAD
    table = torch.full((5, DG_V), D, dtype=torch.long)
    table[0, ANS_MARK] = 1
    table[1, PAD] = 1
    table[1, :10] = 2
    table[2, :10] = 3
    table[2, DOT] = 4
    table[3, DOT] = 4
    table[4, PAD] = 4
    return constrained.DFA(table, torch.tensor([False, False, False, False, True]))


def _dg_correct(strings: torch.Tensor) -> torch.Tensor:
    """The digits of the answer part, read in order, are the prompt's digit written n times (format aside)."""
    out = []
    for row in strings.tolist():
        digits = [t for t in row[DG_PROMPT:] if t < 10]
        out.append(digits == [row[1]] * row[2])
    return torch.tensor(out)


DG_ARMS = ("prompt", "hard", "decog_answers", "decog")
"""Prompting (the instructed LM alone), hard DFA masking, Deco-G with an HMM of the answers only, and Deco-G with an
HMM of prompt + answer (instruction-aware: it reads the prompt)."""


def _hmm_health(p: Params, lm, hmm_prompted, hmm_answers, next_probs, gen: torch.Generator) -> dict:
    """Test-bed health of the HMMs: mean log p(answer | prompt) in nats on held-out samples of the instructed LM,
    under the LM itself, the prompt-aware HMM (log p(prompt, answer) - log p(prompt)) and the answer-only HMM
    (log p(answer), the prompt unread). An HMM that carries the request scores above the answer-only one."""
    prompts = _dg_prompts(p.dg_heldout, gen, INSTRUCTED)
    x = constrained.decode(next_probs, prompts, DG_ANSWER, gen)
    with torch.no_grad():
        ids = with_bos(x, DG_BOS).to(next(lm.parameters()).device)
        logp = torch.log_softmax(lm(input_ids=ids).logits[:, :-1, :DG_V].double(), -1)
        lm_ll = logp.gather(-1, ids[:, 1:, None])[:, DG_PROMPT:, 0].sum(1)
    hmm_ll = hmm_prompted.log_likelihood(x) - hmm_prompted.log_likelihood(x[:, :DG_PROMPT])
    return {"dg_loglik_lm": lm_ll.mean().item(), "dg_loglik_hmm": hmm_ll.mean().item(),
            "dg_loglik_hmm_answers": hmm_answers.log_likelihood(x[:, DG_PROMPT:]).mean().item()}


def decog(run: Run, b: Bed, seed: int) -> dict:
    p = run.params

    def lm_loss(mdl, x):
        return next_token_loss(mdl, x, DG_V, DG_BOS)

    def lm_batches(gen):
        return _dg_strings(p.batch_size, gen)

    torch.manual_seed(derived_seed(seed, DECOG_LM_INIT))
    lm = tiny_gpt2(DG_V + 1, 64, 2, max_length=DG_PROMPT + DG_TRAIN_ANSWER + 2).to(run.device)
    _fit(run, "decog-lm", seed, lm, lm_loss, lm_batches, p.dg_lm_steps, p.lr)
    lm.eval()

    def next_probs(x):  # the decoding (DFA and HMM per row) runs on the host; the LM on the run's device
        return torch.softmax(lm(input_ids=with_bos(x, DG_BOS).to(run.device)).logits[:, -1, :DG_V].double(), -1).cpu()

    gen = derived_generator(seed, DG_SAMPLES)
    # the HMMs are distilled from the instructed LM's own answers of the format's length (prompts drawn as in use)
    prompts = _dg_prompts(p.dg_hmm_samples, gen, INSTRUCTED)
    samples = constrained.decode(next_probs, prompts, DG_ANSWER, gen)
    hmm_answers, _ = constrained.fit_hmm(samples[:, DG_PROMPT:], p.dg_hmm_states, DG_V, p.dg_em_iterations, gen)
    hmm_prompted, _ = constrained.fit_hmm(samples, p.dg_hmm_states, DG_V, p.dg_em_iterations, gen)
    dfa = format_dfa()
    ok = constrained.reachable(dfa, DG_ANSWER)
    test = dg_test_prompts()
    constraints = {"prompt": {}, "hard": {"dfa": dfa, "ok": ok},
                   "decog_answers": {"dfa": dfa, "hmm": hmm_answers,
                                     "beta": constrained.format_backward(hmm_answers, dfa, DG_ANSWER)},
                   "decog": {"dfa": dfa, "hmm": hmm_prompted, "hmm_reads_prompt": True,
                             "beta": constrained.format_backward(hmm_prompted, dfa, DG_ANSWER)}}
    # diagnosis: does the prompt-aware HMM read the request? Its probability that the format survives a filler
    # after "A", for prompts asking for one digit against two (a perfect HMM of these samples: near 1 against 0)
    with torch.no_grad():
        gap = []
        for d in range(10):
            w = [constrained.format_weights(hmm_prompted, dfa, constraints["decog"]["beta"], torch.tensor([ANS_MARK]),
                                            torch.tensor([INSTRUCTED, d, n, EQ]))[PAD].item() for n in (1, 2)]
            gap.append(w[0] - w[1])
    result = {"dg_hmm_prompt_gap": float(np.mean(gap)), **_hmm_health(p, lm, hmm_prompted, hmm_answers, next_probs,
                                                                       derived_generator(seed, DG_HELDOUT))}
    for name in DG_ARMS:
        strings = constrained.decode(next_probs, test, DG_ANSWER, gen, greedy=True, **constraints[name])
        result[f"dg_compliance_{name}"] = float(np.mean([dfa.accepts(r) for r in strings[:, DG_PROMPT:].tolist()]))
        correct = _dg_correct(strings)
        complies = torch.tensor([dfa.accepts(r) for r in strings[:, DG_PROMPT:].tolist()])
        result[f"dg_accuracy_{name}"] = correct.double().mean().item()
        # compliance-aware: an answer outside the format counts as wrong
        result[f"dg_accuracy_strict_{name}"] = (correct & complies).double().mean().item()
        # accuracy on the prompts that ask for two digits, where the chatty prefix the format allows is a trap
        result[f"dg_accuracy_two_{name}"] = correct[test[:, 2] == 2].double().mean().item()
    return result


# ---------------------------------------------------------------- one seed


def run_seed(run: Run, seed: int, bed: Bed) -> dict:
    """Every experiment of one seed, on that seed's own base models, recorded; the figures read the recorded
    numbers only, so nothing is returned for them."""
    bases = train_bases(run, bed, seed)
    run.record(seed, **distillspec(run, bed, bases, seed), **swift_kv(run, bed, bases, seed),
               **dparallel(run, bed, bases, seed), **decog(run, bed, seed))
    return {}
