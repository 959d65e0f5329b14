"""The test beds and the runs: the shared models (trained once per run), then each seed's four experiments.

The methods themselves live in :mod:`distillbook.methods`: speculative sampling and DistillSpec's draft loss in
``speculative``, SwiftKV in ``swiftkv``, threshold decoding and certainty forcing in ``masked_diffusion``, Deco-G
in ``constrained``. This module holds the tasks (the grammar language, the permutation problems, the sums with
their answer formats), the arms and the metrics.
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
              "tvd_onpolicy": ("TVD, draft samples (on-policy)", "total_variation", "draft"),
              "jsd_onpolicy": ("JSD, draft samples (on-policy)", "jsd", "draft")}
"""Draft arm -> (label, divergence to the target or None for next-token CE on data, source of the strings)."""

# the purposes of the seeds derived from a run seed: derived_seed(seed, purpose) / derived_generator(seed, purpose)
ALPHA_STRINGS, SPECULATIVE_RUNS, SWIFTKV_STRINGS, DP_TRAJECTORIES, DP_TEST, DG_SAMPLES, DG_TEST, ORACLE_STRINGS = \
    range(1, 9)  # evaluation and sampling draws
TARGET_INIT, SWIFTKV_INIT, DPARALLEL_INIT, DRAFT_INIT, DECOG_LM_INIT = range(9, 14)  # initial weights


def _fit(run: Run, name: str, seed: int, model, loss, batches, steps: int, lr: float, params=None):
    optimizer = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr)
    return run.fit(name, seed, model, loss, batches, steps=steps, optimizer=optimizer)


# ---------------------------------------------------------------- shared models (trained once per run)


@dataclass
class Bed:
    lang: HMMLanguage
    V: int
    bos: int
    target: torch.nn.Module
    kv_base: torch.nn.Module
    dp_base: torch.nn.Module


def build_bed(run: Run) -> Bed:
    """The grammar language, the speculative target, the SwiftKV base and the masked-diffusion base, trained with
    the run's first seed."""
    p = run.params
    lang = HMMLanguage.random(p.language_seed, n_states=p.n_states, vocab_size=p.vocab_size, length=p.length)
    V, bos, seed = p.vocab_size, p.vocab_size, run.seeds[0]

    def lm_batches(gen):
        return lang.sample(p.batch_size, gen)

    def lm_loss(m, x):
        return next_token_loss(m, x, V, bos)

    torch.manual_seed(derived_seed(seed, TARGET_INIT))
    target = tiny_gpt2(V + 1, p.target_dim, p.target_layers, max_length=p.length + p.gamma + 2)
    _fit(run, "target", seed, target, lm_loss, lm_batches, p.target_steps, p.lr)
    torch.manual_seed(derived_seed(seed, SWIFTKV_INIT))
    kv = swiftkv.tiny_llama(V + 1, p.kv_dim, p.kv_layers, max_length=p.length + 1)

    def kv_loss(m, x):
        logits = swiftkv.forward(m, with_bos(x, bos)[:, :-1], 1, p.kv_layers, local_layers=p.kv_local)
        return F.cross_entropy(logits[..., :V].reshape(-1, V), x.reshape(-1))

    _fit(run, "swiftkv-base", seed, kv, kv_loss, lm_batches, p.kv_base_steps, p.lr)
    torch.manual_seed(derived_seed(seed, DPARALLEL_INIT))
    dp = _permutation_model(p)

    def dp_loss(m, batch):
        return masked_diffusion.masked_lm_loss(m, batch, _answer(p), DIGITS)

    def dp_batches(gen):
        return _perm_batch(p, gen)

    _fit(run, "dparallel-base", seed, dp, dp_loss, dp_batches, p.dp_base_steps, 2e-3)
    for m in (target, kv, dp):
        m.eval().requires_grad_(False)
    return Bed(lang, V, bos, target, kv, dp)


# ---------------------------------------------------------------- 1. DistillSpec


def distillspec(run: Run, b: Bed, seed: int) -> dict:
    p = run.params
    V, bos = b.V, b.bos

    def data_batches(gen):
        return b.lang.sample(p.batch_size, gen)

    def ce_loss(m, x):
        return next_token_loss(m, x, V, bos)

    torch.manual_seed(derived_seed(seed, DRAFT_INIT))
    draft0 = tiny_gpt2(V + 1, p.draft_dim, 1, max_length=p.length + p.gamma + 2)
    _fit(run, "draft-pre", seed, draft0, ce_loss, data_batches, p.draft_pre_steps, p.lr)
    eval_x = sample(b.target, p.alpha_strings, p.length, bos, derived_generator(seed, ALPHA_STRINGS), n_symbols=V)
    with torch.no_grad():
        target_probs = torch.softmax(symbol_logits(b.target, eval_x, V, bos).double(), -1)
    oracle_x = b.lang.sample(p.alpha_strings, derived_generator(seed, ORACLE_STRINGS))
    with torch.no_grad():
        target_logits = symbol_logits(b.target, oracle_x, V, bos).double()
    out = {"target_kl": golden_kl(b.lang.next_token_probs(oracle_x), target_logits).mean().item()}
    for arm, (_, divergence, source) in DRAFT_ARMS.items():
        draft = copy.deepcopy(draft0)
        if divergence is None:
            loss = ce_loss
        else:
            def loss(m, x, divergence=divergence):
                with torch.no_grad():
                    teacher = symbol_logits(b.target, x, V, bos)
                return speculative.draft_distillation_loss(symbol_logits(m, x, V, bos), teacher, divergence)

        if source == "data":
            batches = data_batches
        else:
            def batches(gen, draft=draft):  # on-policy: the draft's own samples, as it is now
                return sample(draft, p.batch_size, p.length, bos, gen, n_symbols=V)

        _fit(run, f"draft-{arm}", seed, draft, loss, batches, p.draft_steps, p.lr)
        draft.eval()
        with torch.no_grad():
            q = torch.softmax(symbol_logits(draft, eval_x, V, bos).double(), -1)
        alpha = float(speculative.acceptance_rate(target_probs, q).mean())
        measured = speculative.measured_block_efficiency(
            speculative.lm_next_probs(b.target, V, bos), speculative.lm_next_probs(draft, V, bos),
            torch.zeros(0, dtype=torch.long), p.length, p.gamma, p.spec_strings,
            derived_generator(seed, SPECULATIVE_RUNS))
        out.update({f"alpha_{arm}": alpha, f"block_analytic_{arm}": float(speculative.block_efficiency(alpha, p.gamma)),
                    f"block_measured_{arm}": measured})
    return out


# ---------------------------------------------------------------- 2. SwiftKV


def swift_kv(run: Run, b: Bed, seed: int) -> dict:
    p = run.params
    V, bos, L, k = b.V, b.bos, p.kv_layers, p.kv_k
    x = b.lang.sample(256, derived_generator(seed, SWIFTKV_STRINGS))
    ids = with_bos(x, bos)[:, :-1]
    oracle = b.lang.next_token_probs(x)[:, p.kv_prompt - 1:]

    def quality(model, layers) -> tuple[float, float]:
        with torch.no_grad():
            logits = swiftkv.forward(model, ids, p.kv_prompt, layers, local_layers=p.kv_local)[..., :V]
        agree = (logits.argmax(-1) == oracle.argmax(-1)).double().mean().item()
        return agree, golden_kl(oracle, logits.double()).mean().item()

    student = copy.deepcopy(b.kv_base).train()
    trainable = swiftkv.unfreeze_later_qkv(student, k)

    def loss(m, xb):
        i = with_bos(xb, bos)[:, :-1]
        with torch.no_grad():
            teacher = swiftkv.forward(b.kv_base, i, p.kv_prompt, L, local_layers=p.kv_local)
        return swiftkv.distillation_loss(swiftkv.forward(m, i, p.kv_prompt, k, local_layers=p.kv_local), teacher,
                                         temperature=2.0)

    def batches(gen):
        return b.lang.sample(p.batch_size, gen)

    _fit(run, "swiftkv-distil", seed, student, loss, batches, p.kv_distil_steps, p.lr, params=trainable)
    student.eval()
    base_agree, base_kl = quality(b.kv_base, L)
    rewired_agree, rewired_kl = quality(b.kv_base, k)
    distilled_agree, distilled_kl = quality(student, k)
    prompt = ids[:1, :p.kv_prompt]
    flops = swiftkv.prefill_flops(b.kv_base, prompt, k) / swiftkv.prefill_flops(b.kv_base, prompt, L)
    return {"kv_agree_base": base_agree, "kv_agree_rewired": rewired_agree, "kv_agree_distilled": distilled_agree,
            "kv_kl_base": base_kl, "kv_kl_rewired": rewired_kl, "kv_kl_distilled": distilled_kl,
            "kv_prefill_flops_ratio": flops}


# ---------------------------------------------------------------- 3. dParallel: "write any permutation of these digits"

SEP, MASK = 10, 11  # digits are 0-9
DIGITS = slice(0, 10)


def _permutation_model(p: Params):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=12, hidden_size=p.dp_dim, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=4 * p.dp_dim, max_position_embeddings=2 * p.dp_digits + 1)
    return BertForMaskedLM(config)


def _perm_problems(p: Params, n: int, gen: torch.Generator) -> torch.Tensor:
    """Rows [d_1..d_N, SEP, a permutation of d_1..d_N], N distinct digits."""
    digits = torch.stack([torch.randperm(10, generator=gen)[:p.dp_digits] for _ in range(n)])
    order = torch.stack([torch.randperm(p.dp_digits, generator=gen) for _ in range(n)])
    return torch.cat([digits, torch.full((n, 1), SEP), digits.gather(1, order)], 1)


def _answer(p: Params) -> slice:
    return slice(p.dp_digits + 1, 2 * p.dp_digits + 1)


def _perm_batch(p: Params, gen: torch.Generator, source: torch.Tensor | None = None):
    """128 problems (fresh, or drawn from ``source``) with a random share of each answer masked."""
    x = _perm_problems(p, 128, gen) if source is None else source[torch.randint(0, len(source), (128,), generator=gen)]
    return masked_diffusion.mask_random_share(x, _answer(p), MASK, gen)


def _valid(p: Params, x: torch.Tensor) -> torch.Tensor:
    return (x[:, _answer(p)].sort(1).values == x[:, :p.dp_digits].sort(1).values).all(1)


def _decode(p: Params, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return masked_diffusion.decode(model, x, _answer(p), MASK, p.dp_tau, vocab=DIGITS)


def dparallel(run: Run, b: Bed, seed: int) -> dict:
    p = run.params
    with torch.no_grad():
        out, _ = _decode(p, b.dp_base, _perm_problems(p, p.dp_trajectories, derived_generator(seed, DP_TRAJECTORIES)))
    valid = _valid(p, out)
    # the model's own correct trajectories (all of them if none is correct, as in a few-step smoke run)
    trajectories = out[valid] if valid.any() else out
    test = _perm_problems(p, p.dp_eval, derived_generator(seed, DP_TEST))
    result = {"dp_kept": valid.double().mean().item()}

    def batches(gen):
        return _perm_batch(p, gen, trajectories)

    for name, weight in (("base", None), ("ce", 0.0), ("dparallel", p.dp_entropy_weight)):
        model = b.dp_base
        if weight is not None:
            model = copy.deepcopy(b.dp_base).train().requires_grad_(True)

            def loss(m, batch, weight=weight):
                return masked_diffusion.masked_lm_loss(m, batch, _answer(p), DIGITS, entropy_weight=weight)

            _fit(run, f"dparallel-{name}", seed, model, loss, batches, p.dp_tune_steps, 5e-4)
            model.eval()
        with torch.no_grad():
            decoded, steps = _decode(p, model, test)
        result[f"dp_valid_{name}"] = _valid(p, decoded).double().mean().item()
        result[f"dp_steps_{name}"] = steps.double().mean().item()
    return result


# ---------------------------------------------------------------- 4. Deco-G: "a + b =" in a required format

PLUS, EQ, ANS_MARK, DOT, PAD = 10, 11, 12, 13, 14
DG_V, DG_BOS, DG_PROMPT, DG_ANSWER = 15, 15, 4, 5  # prompt "a + b =": 4 tokens; answer part: 5 tokens


def _answer_tokens(total: torch.Tensor, fmt: torch.Tensor) -> torch.Tensor:
    """Formats: 0 = required ("A d [d] . _"), 1 = bare ("d [d] _ _ _"), 2 = chatty ("_ d [d] . _")."""
    rows = []
    for s, f in zip(total.tolist(), fmt.tolist()):
        digits = [int(c) for c in str(s)]
        body = {0: [ANS_MARK, *digits, DOT], 1: digits, 2: [PAD, *digits, DOT]}[f]
        rows.append(body + [PAD] * (DG_ANSWER - len(body)))
    return torch.tensor(rows)


def _dg_strings(n: int, gen: torch.Generator, target_share: float) -> torch.Tensor:
    a, c = torch.randint(0, 10, (n,), generator=gen), torch.randint(0, 10, (n,), generator=gen)
    r = torch.rand(n, generator=gen)
    fmt = torch.where(r < target_share, 0, torch.where(r < target_share + (1 - target_share) / 2, 1, 2))
    prompt = torch.stack([a, torch.full_like(a, PLUS), c, torch.full_like(a, EQ)], 1)
    return torch.cat([prompt, _answer_tokens(a + c, fmt)], 1)


def format_dfa() -> constrained.DFA:
    """'A', one or two digits, '.', then padding: exactly the required format of a 5-token answer."""
    D = constrained.DEAD
    table = torch.full((6, DG_V), D, dtype=torch.long)
    table[0, ANS_MARK] = 1
    table[1, :10] = 2
    table[2, :10] = 3
    table[2, DOT] = 4
    table[3, DOT] = 4
    table[4, PAD] = 5
    table[5, PAD] = 5
    return constrained.DFA(table, torch.tensor([False, False, False, False, True, True]))


def _dg_correct(strings: torch.Tensor) -> torch.Tensor:
    """The digits of the answer part, read in order, spell a + b."""
    out = []
    for row in strings.tolist():
        digits = "".join(str(t) for t in row[DG_PROMPT:] if t < 10)
        out.append(digits == str(row[0] + row[2]))
    return torch.tensor(out)


def decog(run: Run, b: Bed, seed: int) -> dict:
    p = run.params

    def lm_loss(m, x):
        return next_token_loss(m, x, DG_V, DG_BOS)

    def lm_batches(gen):
        return _dg_strings(p.batch_size, gen, p.dg_target_share)

    torch.manual_seed(derived_seed(seed, DECOG_LM_INIT))
    lm = tiny_gpt2(DG_V + 1, 64, 2, max_length=12)
    _fit(run, "decog-lm", seed, lm, lm_loss, lm_batches, p.dg_lm_steps, p.lr)
    lm.eval()

    def next_probs(x):
        return torch.softmax(lm(input_ids=with_bos(x, DG_BOS)).logits[:, -1, :DG_V].double(), -1)

    gen = derived_generator(seed, DG_SAMPLES)
    # the HMM is distilled from the LM's own answers (prompts drawn as in use)
    prompts = _dg_strings(p.dg_hmm_samples, gen, p.dg_target_share)[:, :DG_PROMPT]
    answers = constrained.decode(next_probs, prompts, DG_ANSWER, gen)[:, DG_PROMPT:]
    hmm, _ = constrained.fit_hmm(answers, p.dg_hmm_states, DG_V, p.dg_em_iterations, gen)
    dfa = format_dfa()
    beta, ok = constrained.format_backward(hmm, dfa, DG_ANSWER), constrained.reachable(dfa, DG_ANSWER)
    test = _dg_strings(p.dg_eval, derived_generator(seed, DG_TEST), p.dg_target_share)[:, :DG_PROMPT]
    result = {}
    for name, constraint in (("prompt", {}), ("hard", {"dfa": dfa, "ok": ok}),
                             ("decog", {"dfa": dfa, "hmm": hmm, "beta": beta})):
        strings = constrained.decode(next_probs, test, DG_ANSWER, gen, greedy=True, **constraint)
        answer = strings[:, DG_PROMPT:]
        result[f"dg_compliance_{name}"] = float(np.mean([dfa.accepts(r) for r in answer.tolist()]))
        result[f"dg_accuracy_{name}"] = _dg_correct(strings).double().mean().item()
    return result


# ---------------------------------------------------------------- one seed


def run_seed(run: Run, seed: int, bed: Bed) -> dict:
    """Every experiment of one seed, recorded; the figures read the recorded numbers only, so nothing is
    returned for them."""
    run.record(seed, **distillspec(run, bed, seed), **swift_kv(run, bed, seed), **dparallel(run, bed, seed),
               **decog(run, bed, seed))
    return {}
