"""The oracle language (the test bed) and the chapter's four experiments, one seed at a time."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.chapters.lm_kd_dynamics.params import Params, hacking_arms
from distillbook.core.claims import relative_change, tail_mean
from distillbook.core.results import Run
from distillbook.core.runtime import derived_generator, derived_seed
from distillbook.methods.cross_tokenizer import (cross_tokenizer_loss, debiased_token_log_probs, encode_bpe,
                                                 extension_matrix, token_log_probs)
from distillbook.methods.kd import DIVERGENCES, forward_kl, regime_batches
from distillbook.models import lm
from distillbook.models.lm import sample, tiny_gpt2
from distillbook.testbeds.grammar import ALPHABET, HMMLanguage, golden_kl, to_strings, train_bpe, with_bos

LOG2 = float(np.log(2))
GOLDEN_STREAM = 999  # the golden strings' stream, keyed by the language seed rather than the run's seed
# What each stream derived from a run seed draws (``derived_generator(seed, purpose)``):
TEACHER_ERRORS = 1  # which oracle states the teacher gets confidently wrong
ZOO_SET = 2  # the divergence zoo's fixed set of teacher samples
ZOO_HELD_OUT = 3  # held-out teacher samples for the zoo's proxy metric
SAMPLE_QUALITY = 4  # the samples whose validity measures sample quality
HACKING_POOL = 5  # the teacher samples the offline sets of teacher hacking are prefixes of
XTOK_STRINGS = 6  # the cross-tokenizer students' transfer set
BPE_TEXT = 7  # the oracle text the BPE tokenizer is trained on
ORACLE_POOL = 8  # the oracle strings of the oracle-as-teacher controls
HACKING_HELD_OUT = 9  # held-out teacher samples for teacher hacking's proxy metric
CAPACITY_POOL = 10  # the oracle strings every capacity-gap student distils on
XTOK_VAL = 11  # the validation strings that pick ALM's tau and ULD's weight
PRETRAIN_STRINGS = 19  # the oracle strings the student is pre-trained on (the paper's SFT start)
XTOK_PRETRAIN = 20  # the oracle strings the character student is pre-trained on
# ...and what each initialisation seed derived from it starts (``derived_seed(seed, purpose)``); every model of
# one role starts from the same weights (the same init for every divergence, regime or teacher width):
STUDENT_INIT = 14  # the pre-trained student of the zoo and teacher hacking
CAPACITY_TEACHER_INIT = 15  # the capacity-gap teachers (the ladder is trained once, from the run's first seed)
CAPACITY_STUDENT_INIT = 16  # the capacity-gap students
XTOK_TEACHER_INIT = 17  # the BPE teacher
XTOK_STUDENT_INIT = 18  # the character students


CONFIDENT = 0.7  # a state the teacher gets confidently wrong emits its likeliest symbol with at least this probability
EMISSION_FLOOR = 1e-3  # teachers emit every symbol with probability >= this / V: on-policy strings need targets


def with_emission_floor(lang: HMMLanguage, floor: float = EMISSION_FLOOR) -> HMMLanguage:
    """``lang`` with emissions (1 - floor) B + floor / V: every string has a next-token distribution, so a
    teacher can score the student's own (possibly impossible) samples."""
    emission = (1 - floor) * lang.emission + floor / lang.vocab_size
    return HMMLanguage(lang.initial, lang.transition, emission, lang.length)


def confidently_wrong(lang: HMMLanguage, max_kl: float, generator: torch.Generator,
                      n_probe: int = 512) -> tuple[HMMLanguage, list[int]]:
    """The oracle with some hidden states' emission probabilities reversed within their support.

    In a reversed state the most likely symbol becomes the least likely and vice versa: the teacher is
    confidently wrong there, systematically (the same states, every string), and exactly right elsewhere. A
    permutation keeps every state's entropy, so the teacher is exactly as sharp as the oracle: the
    oracle-as-teacher control differs from it only in the errors. Only confident states are reversed (the oracle's
    likeliest symbol has probability >= ``CONFIDENT``, which the teacher then makes the least likely); they are
    tried in random order and a reversal is kept while the teacher's KL(oracle || teacher) per symbol stays within
    ``max_kl``, so every seed's teacher is about as wrong, whichever states it gets wrong. The KL is measured on ``n_probe`` oracle strings drawn
    from ``generator``, not on the golden strings. Returns the teacher and its reversed states.
    """
    if not max_kl > 0:
        raise ValueError(f"teacher_golden_kl must be > 0, got {max_kl}")
    probe = lang.sample(n_probe, generator)
    probe_probs = lang.next_token_probs(probe)
    emission, wrong = lang.emission.clone(), []
    for state in torch.randperm(lang.n_states, generator=generator).tolist():
        if lang.emission[state].max() < CONFIDENT:
            continue
        trial = emission.clone()
        support = torch.nonzero(trial[state] > 0).squeeze(1)
        ranked = support[trial[state, support].argsort()]  # least to most likely
        trial[state, ranked] = trial[state, ranked.flip(0)]
        teacher = HMMLanguage(lang.initial, lang.transition, trial, lang.length)
        if golden_kl(probe_probs, teacher.next_token_probs(probe).clamp_min(1e-30).log()).mean() <= max_kl:
            emission = trial
            wrong.append(state)
    if not wrong:
        raise ValueError(f"teacher_golden_kl={max_kl} is too small: reversing any one state costs more")
    return HMMLanguage(lang.initial, lang.transition, emission, lang.length), sorted(wrong)


def state_beliefs(lang: HMMLanguage, x: torch.Tensor) -> torch.Tensor:
    """The oracle's belief over its hidden state before each symbol, p(s_t | x_<t): (n, L, K), float64.

    The forward filter of :meth:`HMMLanguage.next_token_probs`, which is ``state_beliefs(x) @ emission``.
    """
    belief = lang.initial.expand(len(x), -1)
    out = torch.empty(len(x), x.shape[1], lang.n_states, dtype=torch.float64)
    for t in range(x.shape[1]):
        out[:, t] = belief
        joint = belief * lang.emission[:, x[:, t]].T
        belief = (joint / joint.sum(dim=1, keepdim=True)) @ lang.transition
    return out


class Bed:
    """The oracle language and its held-out golden strings with their exact next-token distributions."""

    def __init__(self, p: Params):
        self.lang = HMMLanguage.random(p.language_seed, n_states=p.n_states, vocab_size=p.vocab_size,
                                       length=p.length, branching=p.branching, emissions=p.emissions)
        self.V = p.vocab_size
        self.bos = p.vocab_size  # models read BOS then predict every symbol
        self.length = p.length
        self.golden_x = self.lang.sample(p.golden_strings, derived_generator(p.language_seed, GOLDEN_STREAM))
        self.golden_probs = self.lang.next_token_probs(self.golden_x)
        self.entropy_rate = float(-self.lang.log_likelihood(self.golden_x).mean() / p.length)
        self.ladder = None  # the capacity-gap teachers, trained once per run (see capacity_ladder)


def build_bed(run: Run) -> Bed:
    """The oracle language of ``run.params`` (the same for every seed), its golden strings and the capacity-gap
    teacher ladder (trained once, before the seeds run side by side)."""
    bed = Bed(run.params)
    bed.ladder = capacity_ladder(run, bed)
    return bed


# ---------------------------------------------------------------- shared steps


def new_lm(run: Run, bed: Bed, dim: int, layers: int, init_seed: int) -> torch.nn.Module:
    """A tiny GPT-2 over the V symbols and BOS, initialised from ``init_seed``."""
    torch.manual_seed(init_seed)
    return tiny_gpt2(bed.V + 1, dim, layers, n_head=2, max_length=bed.length + 1).to(run.device)


def symbol_logits(model: torch.nn.Module, bed: Bed, x: torch.Tensor) -> torch.Tensor:
    """Logits over the V symbols at every position of ``x`` (the model reads BOS + x[:-1])."""
    return lm.symbol_logits(model, x, bed.V, bed.bos)


@torch.no_grad()
def golden(bed: Bed, model: torch.nn.Module) -> float:
    """Exact KL(oracle || model) per symbol (nats), averaged over the golden strings."""
    return float(golden_kl(bed.golden_probs, symbol_logits(model, bed, bed.golden_x).cpu()).mean())


@torch.no_grad()
def proxy(bed: Bed, model: torch.nn.Module, targets, x: torch.Tensor) -> float:
    """KL(teacher || model) per symbol (nats) on strings ``x``; ``targets(x)`` gives the teacher's logits."""
    logits = symbol_logits(model, bed, x)
    return float(forward_kl(logits, targets(x.to(logits.device))))


def hmm_targets(lang: HMMLanguage):
    """An explicit HMM as a teacher: log p(v | x_<t), exact (impossible symbols get log 1e-30)."""
    def targets(x):
        return lang.next_token_probs(x.cpu()).clamp_min(1e-30).log().to(x.device, torch.float32)

    return targets


def oracle_targets(bed: Bed):
    """The oracle as a teacher (see :func:`hmm_targets`)."""
    return hmm_targets(bed.lang)


@torch.no_grad()
def valid_share(bed: Bed, model: torch.nn.Module, n: int, generator: torch.Generator) -> float:
    """Sample quality: the share of the model's samples that the oracle can produce at all."""
    x = sample(model, n, bed.length, bed.bos, generator, n_symbols=bed.V)
    return float(bed.lang.valid(x).double().mean())


def train_next_token(run: Run, bed: Bed, model, next_batch, steps: int, seed: int, name: str, **kw):
    """Next-token cross-entropy on strings from ``next_batch``."""
    p = run.params

    def loss(m, x):
        return lm.next_token_loss(m, x, bed.V, bed.bos)

    return run.fit(name, seed, model, loss, next_batch, steps=steps,
                   optimizer=torch.optim.AdamW(model.parameters(), lr=p.lr), **kw)


def adamw(model: torch.nn.Module, lr: float, steps: int | None = None):
    """AdamW at ``lr``, and a cosine schedule to 0 over ``steps`` (``None``: a constant rate).

    The decay lets a curve settle at the end, so its last evaluations read where training arrived rather than
    the noise of a constant rate.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if steps else None
    return {"optimizer": optimizer, "scheduler": schedule}


def distill(run: Run, bed: Bed, student, targets, next_batch, divergence: str, steps: int, seed: int, name: str,
            cosine: bool = False, **kw):
    """Token-level distillation: D(teacher, student) at every position of the strings from ``next_batch``.

    ``targets(x)`` gives the teacher's logits (see :func:`hmm_targets`, :func:`oracle_targets`); a batch
    may instead be a pair ``(x, teacher logits)`` computed ahead. ``cosine`` decays the rate to 0 by the end.
    """
    p = run.params
    fn = DIVERGENCES[divergence]

    def loss(m, batch):
        if isinstance(batch, (tuple, list)):
            x, target = batch
        else:
            x = batch
            with torch.no_grad():
                target = targets(x)
        return fn(symbol_logits(m, bed, x), target)

    return run.fit(name, seed, student, loss, next_batch, steps=steps,
                   **adamw(student, p.lr, steps if cosine else None), **kw)


def oracle_batches(bed: Bed, batch_size: int):
    """Fresh oracle strings at every step."""
    return lambda gen: bed.lang.sample(batch_size, gen)


# ---------------------------------------------------------------- experiments


def teacher_and_student(run: Run, bed: Bed, seed: int) -> tuple[HMMLanguage, torch.nn.Module, torch.Tensor]:
    """The teacher of experiments 1-2 and the student's pre-trained starting point, as in the paper's set-up.

    The teacher is the oracle made confidently wrong in some hidden states (:func:`confidently_wrong`): better
    than the student overall, worse than it where its errors are. The student starts pre-trained by next-token
    prediction on a small oracle sample (the paper fine-tunes both models on oracle data before distilling).
    """
    p = run.params
    teacher, wrong = confidently_wrong(bed.lang, p.teacher_golden_kl, derived_generator(seed, TEACHER_ERRORS))
    teacher = with_emission_floor(teacher)
    student = new_lm(run, bed, p.student_dim, p.student_layers, derived_seed(seed, STUDENT_INIT))
    strings = bed.lang.sample(p.pretrain_strings, derived_generator(seed, PRETRAIN_STRINGS))
    batches = regime_batches("offline", batch_size=p.batch_size, length=bed.length, bos_id=bed.bos, n_symbols=bed.V,
                             offline_set=strings)
    train_next_token(run, bed, student, batches, p.pretrain_steps, seed, "student-pretrain")
    teacher_golden = float(golden_kl(bed.golden_probs, teacher.next_token_probs(bed.golden_x).clamp_min(1e-30).log())
                           .mean())
    # each golden position's weight on the teacher's wrong states: the oracle's belief that one emits next
    wrong_weight = state_beliefs(bed.lang, bed.golden_x)[..., wrong].sum(-1)
    teacher_wrong, teacher_right = split_kl(bed, teacher.next_token_probs(bed.golden_x).log(), wrong_weight)
    student_wrong, student_right = golden_split(bed, student, wrong_weight)
    run.record(seed, teacher_golden=teacher_golden, pretrained_student_golden=golden(bed, student),
               teacher_wrong_states=len(wrong), teacher_golden_wrong=teacher_wrong, teacher_golden_right=teacher_right,
               pretrained_student_golden_wrong=student_wrong, pretrained_student_golden_right=student_right)
    return teacher, student, wrong_weight


def divergence_zoo(run: Run, bed: Bed, teacher: HMMLanguage, student0, seed: int) -> None:
    """One student per divergence, from the same pre-trained start, on the same fixed set of teacher samples."""
    p = run.params
    zoo_set = teacher.sample(p.zoo_offline_strings, derived_generator(seed, ZOO_SET))
    held_out = teacher.sample(p.golden_strings, derived_generator(seed, ZOO_HELD_OUT))
    targets = hmm_targets(teacher)
    gold, prox, valid = [], [], []
    for div in p.zoo_divergences:
        student = copy.deepcopy(student0)
        batches = regime_batches("offline", batch_size=p.batch_size, length=bed.length, bos_id=bed.bos,
                                 n_symbols=bed.V, offline_set=zoo_set)
        distill(run, bed, student, targets, batches, div, p.zoo_steps, seed, f"zoo-{div}")
        gold.append(golden(bed, student))
        prox.append(proxy(bed, student, targets, held_out))
        valid.append(valid_share(bed, student, p.golden_strings, derived_generator(seed, SAMPLE_QUALITY)))
    run.record(seed, zoo_golden=gold, zoo_proxy=prox, zoo_valid_share=valid)


@torch.no_grad()
def golden_split(bed: Bed, model: torch.nn.Module, wrong_weight: torch.Tensor) -> tuple[float, float]:
    """The golden KL where the teacher is wrong and where it is right: the mean over golden positions of
    KL(oracle_t || model_t) weighted by ``wrong_weight`` (the oracle's belief that a wrong state emits x_t), and
    by its complement."""
    return split_kl(bed, torch.log_softmax(symbol_logits(model, bed, bed.golden_x).cpu().double(), -1), wrong_weight)


def split_kl(bed: Bed, log_q: torch.Tensor, wrong_weight: torch.Tensor) -> tuple[float, float]:
    """:func:`golden_split` for log-probabilities ``log_q`` (n, L, V) on the golden strings."""
    p = bed.golden_probs
    kl = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - log_q), torch.zeros_like(p)).sum(-1)
    w = wrong_weight
    return float((w * kl).sum() / w.sum()), float(((1 - w) * kl).sum() / (1 - w).sum())


def teacher_hacking(run: Run, bed: Bed, teacher: HMMLanguage, student0, wrong_weight, seed: int) -> None:
    """Forward-KL distillation under each data regime, from the same pre-trained student; golden and proxy
    tracked over training (the first evaluation is the starting point).

    The proxy, KL(teacher || student), is measured for every arm on the same held-out teacher samples. The
    offline sets are prefixes of one pool of teacher samples; each size has a control that swaps the teacher for
    the oracle (oracle strings, the oracle's targets with the teacher's emission floor), which changes only the
    teacher's errors.
    """
    p = run.params
    pools = {"teacher": teacher.sample(p.offline_sizes[-1], derived_generator(seed, HACKING_POOL)),
             "oracle": bed.lang.sample(p.offline_sizes[-1], derived_generator(seed, ORACLE_POOL))}
    held_out = teacher.sample(p.golden_strings, derived_generator(seed, HACKING_HELD_OUT))
    # the control teacher: the oracle with the same emission floor as the teacher, so only the errors differ
    targets = {"teacher": hmm_targets(teacher), "oracle": hmm_targets(with_emission_floor(bed.lang))}
    teacher_golden = run.per_seed[seed]["teacher_golden"]

    def evaluate(m):
        at_wrong, at_right = golden_split(bed, m, wrong_weight)
        return {"golden": golden(bed, m), "proxy": proxy(bed, m, targets["teacher"], held_out),
                "golden_wrong": at_wrong, "golden_right": at_right}

    start = evaluate(student0)
    steps = None
    for name, regime, size, source in hacking_arms(p):
        student = copy.deepcopy(student0)
        if regime == "online":  # fresh samples from the explicit teacher at every step
            def batches(gen):
                return teacher.sample(p.batch_size, gen)
        else:
            batches = regime_batches(regime, batch_size=p.batch_size, length=bed.length, bos_id=bed.bos,
                                     n_symbols=bed.V, offline_set=pools[source][:size] if size else None,
                                     student=student)
        result = distill(run, bed, student, targets[source], batches, "forward_kl", p.hacking_steps, seed,
                         f"hacking-{name}", cosine=True, eval_every=p.eval_every, evaluate=evaluate)
        golden_curve = [start["golden"]] + result.column("golden")
        run.record(seed, **{f"hacking_{name}_golden": golden_curve,
                            f"hacking_{name}_proxy": [start["proxy"]] + result.column("proxy"),
                            # the golden KL split by where the teacher is wrong and where it is right
                            f"hacking_{name}_golden_wrong": [start["golden_wrong"]] + result.column("golden_wrong"),
                            f"hacking_{name}_golden_right": [start["golden_right"]] + result.column("golden_right"),
                            # when the wrong positions move: by the first evaluation, and from there to the end
                            f"hacking_{name}_wrong_rise_first": result.column("golden_wrong")[0] - start["golden_wrong"],
                            f"hacking_{name}_wrong_rise_after": tail_mean(result.column("golden_wrong"))
                            - result.column("golden_wrong")[0],
                            # how far above its teacher's own golden KL the student ends
                            f"hacking_{name}_gap_to_teacher": tail_mean(golden_curve) - teacher_golden})
        steps = [0] + [r["step"] for r in result.history]
    run.record(seed, hacking_steps=steps)


def capacity_ladder(run: Run, bed: "Bed") -> tuple[list, float]:
    """Teachers of growing width trained on fresh oracle data to the end of a cosine schedule, once per run.

    A fixed family of teachers, like the paper's pre-trained ones; training it for every seed would cost
    ``len(seeds)`` times as much (recorded as ``capacity_ladder_seconds``). The learning rate shrinks as
    1 / width above width 48, so the widest teachers converge rather than overshoot.
    """
    p = run.params
    seed = run.seeds[0]
    teachers = []
    started = time.perf_counter()
    for dim in p.capacity_teacher_dims:
        teacher = new_lm(run, bed, dim, p.capacity_teacher_layers, derived_seed(seed, CAPACITY_TEACHER_INIT))
        optimizer = torch.optim.AdamW(teacher.parameters(), lr=p.lr * min(1.0, 48 / dim))
        result = run.fit(f"capacity-teacher-d{dim}", seed, teacher,
                         lambda m, x: lm.next_token_loss(m, x, bed.V, bed.bos), oracle_batches(bed, p.batch_size),
                         steps=p.capacity_teacher_steps, optimizer=optimizer,
                         scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, p.capacity_teacher_steps),
                         evaluate=lambda m: {"golden": golden(bed, m)},
                         eval_every=max(1, p.capacity_teacher_steps // 20))
        teacher.eval().requires_grad_(False)
        teachers.append((teacher, result.column("golden")))
    return teachers, time.perf_counter() - started


def n_parameters(model: torch.nn.Module) -> int:
    return sum(t.numel() for t in model.parameters())


def capacity_gap(run: Run, bed: Bed, ladder, seed: int) -> None:
    """Each student size distilled with the same budget from every teacher of the ladder, and from the oracle.

    Every student draws its batches (with replacement) from the same pool of oracle strings, with each
    teacher's logits computed ahead: the distillation budget is identical, only the teacher differs. The
    oracle's exact targets are the ladder's limit, a teacher of unbounded size.
    """
    p = run.params
    (teachers, ladder_seconds) = ladder
    pool = bed.lang.sample(p.capacity_steps * p.batch_size, derived_generator(seed, CAPACITY_POOL))
    with torch.no_grad():
        targets = [torch.cat([symbol_logits(t, bed, chunk).cpu() for chunk in pool.split(2048)])
                   for t, _ in teachers]
    targets.append(oracle_targets(bed)(pool))
    for student_dim in p.capacity_student_dims:
        goldens, drifts = [], []
        for k, logits in enumerate(targets):
            student = new_lm(run, bed, student_dim, p.student_layers, derived_seed(seed, CAPACITY_STUDENT_INIT))

            def draw(gen, logits=logits):
                i = torch.randint(0, len(pool), (p.batch_size,), generator=gen)
                return pool[i], logits[i]

            name = f"d{p.capacity_teacher_dims[k]}" if k < len(teachers) else "oracle"
            result = distill(run, bed, student, None, draw, "forward_kl", p.capacity_steps, seed,
                             f"capacity-s{student_dim}-from-{name}", cosine=True,
                             evaluate=lambda m: {"golden": golden(bed, m)},
                             eval_every=max(1, p.capacity_steps // 10))
            goldens.append(result.final("golden"))
            drifts.append(result.drift("golden"))
        run.record(seed, **{f"capacity_s{student_dim}_golden": goldens[:-1],
                            f"capacity_s{student_dim}_from_oracle_golden": goldens[-1],
                            # > 0: the oracle's exact targets make a better student than the widest teacher's
                            f"capacity_s{student_dim}_oracle_gain": goldens[-2] - goldens[-1],
                            # how much the students' golden curves still move at the end (the largest of them)
                            f"capacity_s{student_dim}_drift": max(drifts),
                            f"capacity_s{student_dim}_parameters": n_parameters(student)})
    run.record(seed, capacity_teacher_golden=[tail_mean(c) for _, c in teachers],
               capacity_teacher_parameters=[n_parameters(t) for t, _ in teachers],
               capacity_widest_teacher_golden=tail_mean(teachers[-1][1]),
               capacity_narrowest_teacher_golden=tail_mean(teachers[0][1]),
               capacity_teacher_drift=[relative_change(c) for _, c in teachers],
               capacity_ladder_seconds=ladder_seconds)


# ---------------------------------------------------------------- 4. cross-tokenizer distillation


def cross_tokenizer(run: Run, bed: Bed, seed: int) -> None:
    """A BPE teacher trained on plenty of oracle text; pre-trained character students that see only a small
    transfer set.

    Every student starts from the same character model, pre-trained by next-token prediction on its own oracle
    strings (the paper distils into pre-trained students). On the transfer set it then learns by next-token
    prediction (NTP), NTP plus ULD's sorted-probability term, ALM alone, ALM plus NTP (the paper's combined
    setting) or ALM on debiased chunk probabilities. Each arm's knob (ULD's weight, each ALM arm's tau) is picked
    from its candidates on separate validation strings; the golden strings only measure the picked students. Every
    student's rate decays to 0 on a cosine schedule, so its last evaluations read where it arrived.
    """
    p = run.params
    dev = run.device
    bpe = train_bpe(to_strings(bed.lang.sample(4096, derived_generator(seed, BPE_TEXT))), p.bpe_vocab,
                    ALPHABET[: bed.V])
    bpe_bos = bpe.token_to_id("<bos>")
    x = bed.lang.sample(p.xtok_train_strings, derived_generator(seed, XTOK_STRINGS))
    val_x = bed.lang.sample(p.xtok_val_strings, derived_generator(seed, XTOK_VAL))
    ids, mask, chunk = encode_bpe(bpe, x, bpe_bos)

    torch.manual_seed(derived_seed(seed, XTOK_TEACHER_INIT))
    teacher = tiny_gpt2(bpe.get_vocab_size(), p.xtok_teacher_dim, p.xtok_teacher_layers,
                        max_length=bed.length + 1).to(dev)

    def teacher_loss(m, batch):
        b_ids, b_mask = batch
        logits = m(input_ids=with_bos(b_ids, bpe_bos)[:, :-1]).logits
        return F.cross_entropy(logits[b_mask], b_ids[b_mask])

    def fresh_text(gen):
        b_ids, b_mask, _ = encode_bpe(bpe, bed.lang.sample(p.batch_size, gen), bpe_bos, width=bed.length)
        return b_ids, b_mask

    run.fit("xtok-teacher", seed, teacher, teacher_loss, fresh_text, steps=p.xtok_teacher_steps,
            optimizer=torch.optim.AdamW(teacher.parameters(), lr=p.lr))

    @torch.no_grad()
    def teacher_log_probs(b_ids):
        return torch.log_softmax(teacher(input_ids=with_bos(b_ids, bpe_bos)[:, :-1].to(dev)).logits, -1).cpu()

    teacher_logp = teacher_log_probs(ids)
    chunk_logp = {"canonical": token_log_probs(teacher_logp, ids),  # log p_c of every chunk (teacher token) c
                  "debiased": debiased_token_log_probs(teacher_logp, ids, extension_matrix(bpe))}
    g_ids, g_mask, _ = encode_bpe(bpe, bed.golden_x, bpe_bos, width=bed.length)
    g_token_logp = token_log_probs(teacher_log_probs(g_ids), g_ids)
    # the teacher's bits per character: its total log-loss over the characters the golden strings span
    teacher_bpc = float(-(g_token_logp * g_mask).sum() / bed.golden_x.numel() / LOG2)

    # everything a student batch indexes lives on the run's device (fit moves the drawn indices there)
    x_d, chunk_d, mask_d = x.to(dev), chunk.to(dev), mask.to(dev)
    chunk_logp_d = {k: v.to(dev) for k, v in chunk_logp.items()}
    probs_d = teacher_logp.exp().to(dev)

    def draw(gen):
        return torch.randint(0, len(x), (p.batch_size,), generator=gen)

    @torch.no_grad()
    def bits_per_char(m, strings) -> float:
        logits = symbol_logits(m, bed, strings).cpu()
        return float(F.cross_entropy(logits.reshape(-1, bed.V), strings.reshape(-1)) / LOG2)

    # the pre-trained character student every method starts from
    student0 = new_lm(run, bed, p.xtok_student_dim, p.student_layers, derived_seed(seed, XTOK_STUDENT_INIT))
    pretrain = bed.lang.sample(p.xtok_pretrain_strings, derived_generator(seed, XTOK_PRETRAIN))
    train_next_token(run, bed, student0, regime_batches("offline", batch_size=p.batch_size, length=bed.length,
                                                        bos_id=bed.bos, n_symbols=bed.V, offline_set=pretrain),
                     p.xtok_pretrain_steps, seed, "xtok-student-pretrain")
    start = bits_per_char(student0, bed.golden_x)

    def train_student(method: str, knob: float | None, chunks: str = "canonical"):
        def loss(m, i):
            return cross_tokenizer_loss(method, symbol_logits(m, bed, x_d[i]), x_d[i], chunk=chunk_d[i],
                                        teacher_chunk_logp=chunk_logp_d[chunks][i], teacher_probs=probs_d[i],
                                        mask=mask_d[i], knob=knob)

        student = copy.deepcopy(student0)

        def evaluate(m):
            return {"bpc": bits_per_char(m, bed.golden_x)}

        result = run.fit(f"xtok-{method}-{chunks}-{knob}", seed, student, loss, draw, steps=p.xtok_steps,
                         **adamw(student, p.lr, p.xtok_steps), evaluate=evaluate,
                         eval_every=max(1, p.xtok_steps // 10))  # 10 evaluations: convergence reads the tail
        return student, [start] + result.column("bpc")

    curves, picked = {}, {}
    arms = {"ntp": ("ntp", [None], "canonical"), "uld": ("uld", p.uld_weights, "canonical"),
            "alm": ("alm", p.alm_temperatures, "canonical"), "alm_ntp": ("alm_ntp", p.alm_temperatures, "canonical"),
            "alm_debiased": ("alm", p.alm_temperatures, "debiased")}
    for arm, (method, candidates, chunks) in arms.items():  # each arm's knob picked on validation strings
        trained = [(knob, *train_student(method, knob, chunks)) for knob in candidates]
        knob, _, bpc = min(trained, key=lambda t: bits_per_char(t[1], val_x))
        picked[arm], curves[arm] = knob, bpc
    steps = [0] + [round(k * max(1, p.xtok_steps // 10)) for k in range(1, len(curves["ntp"]))]
    # how much debiasing moves the teacher's chunk targets: mean log p~_c - log p_c over real chunks (nats)
    shift = float(((chunk_logp["debiased"] - chunk_logp["canonical"]) * mask).sum() / mask.sum())
    run.record(seed, xtok_steps=steps, oracle_bits_per_char=bed.entropy_rate / LOG2, xtok_teacher_bpc=teacher_bpc,
               xtok_pretrained_bpc=start, xtok_alm_tau=picked["alm"], xtok_alm_ntp_tau=picked["alm_ntp"],
               xtok_alm_debiased_tau=picked["alm_debiased"], xtok_uld_weight=picked["uld"],
               xtok_debias_shift=shift,
               **{f"xtok_{m}_bpc_curve": c for m, c in curves.items()},
               **{f"xtok_{m}_bpc": c[-1] for m, c in curves.items()})


def run_seed(run: Run, seed: int, bed: Bed) -> None:
    """All four experiments for one seed (``distillbook.core.parallel.map_seeds`` runs seeds side by side)."""
    teacher, student, wrong_weight = teacher_and_student(run, bed, seed)
    divergence_zoo(run, bed, teacher, student, seed)
    teacher_hacking(run, bed, teacher, student, wrong_weight, seed)
    capacity_gap(run, bed, bed.ladder, seed)
    cross_tokenizer(run, bed, seed)
