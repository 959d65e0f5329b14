"""The oracle language (the test bed) and the chapter's four experiments, one seed at a time."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.chapters.lm_kd_dynamics.params import Params, hacking_arms
from distillbook.core.results import Run
from distillbook.core.runtime import derived_generator, derived_seed
from distillbook.methods.cross_tokenizer import cross_tokenizer_loss, encode_bpe, token_log_probs
from distillbook.methods.kd import DIVERGENCES, forward_kl, regime_batches
from distillbook.models import lm
from distillbook.models.lm import sample, tiny_gpt2
from distillbook.testbeds.grammar import ALPHABET, HMMLanguage, golden_kl, to_strings, train_bpe, with_bos

LOG2 = float(np.log(2))
GOLDEN_STREAM = 999  # the golden strings' stream, keyed by the language seed rather than the run's seed
# What each stream derived from a run seed draws (``derived_generator(seed, purpose)``):
TEACHER_STRINGS = 1  # the oracle strings the imperfect teacher learns from
ZOO_SET = 2  # the divergence zoo's fixed set of teacher samples
ZOO_HELD_OUT = 3  # held-out teacher samples for the zoo's proxy metric
SAMPLE_QUALITY = 4  # the samples whose validity measures sample quality
HACKING_POOL = 5  # the teacher samples the offline sets of teacher hacking are prefixes of
XTOK_STRINGS = 6  # the cross-tokenizer students' transfer set
BPE_TEXT = 7  # the oracle text the BPE tokenizer is trained on
ORACLE_POOL = 8  # the oracle strings of the oracle-as-teacher control
HACKING_HELD_OUT = 9  # held-out teacher samples for teacher hacking's proxy metric
CAPACITY_POOL = 10  # the oracle strings every capacity-gap student distils on
XTOK_VAL = 11  # the validation strings that pick ALM's tau and ULD's weight
# ...and what each initialisation seed derived from it starts (``derived_seed(seed, purpose)``); every model of
# one role starts from the same weights (the same init for every divergence, regime or teacher width):
TEACHER_INIT = 12  # the imperfect teacher
ZOO_STUDENT_INIT = 13  # the divergence zoo's students
HACKING_STUDENT_INIT = 14  # the teacher-hacking students
CAPACITY_TEACHER_INIT = 15  # the capacity-gap teachers
CAPACITY_STUDENT_INIT = 16  # the capacity-gap students
XTOK_TEACHER_INIT = 17  # the BPE teacher
XTOK_STUDENT_INIT = 18  # the character students


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


def build_bed(run: Run) -> Bed:
    """The oracle language of ``run.params`` (the same for every seed) and its golden strings."""
    return Bed(run.params)


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
    return float(forward_kl(symbol_logits(model, bed, x), targets(x)))


def teacher_targets(bed: Bed, teacher: torch.nn.Module):
    """The teacher's logits over the V symbols at every position of a batch of strings."""
    def targets(x):
        return symbol_logits(teacher, bed, x)

    return targets


def oracle_targets(bed: Bed):
    """The oracle as a teacher: log p*(v | x_<t), exact (impossible symbols get log 1e-30)."""
    def targets(x):
        return bed.lang.next_token_probs(x.cpu()).clamp_min(1e-30).log().to(x.device, torch.float32)

    return targets


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


def distill(run: Run, bed: Bed, student, targets, next_batch, divergence: str, steps: int, seed: int, name: str,
            **kw):
    """Token-level distillation: D(teacher, student) at every position of the strings from ``next_batch``.

    ``targets(x)`` gives the teacher's logits (see :func:`teacher_targets`, :func:`oracle_targets`); a batch
    may instead be a pair ``(x, teacher logits)`` computed ahead.
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
                   optimizer=torch.optim.AdamW(student.parameters(), lr=p.lr), **kw)


def oracle_batches(bed: Bed, batch_size: int):
    """Fresh oracle strings at every step."""
    return lambda gen: bed.lang.sample(batch_size, gen)


# ---------------------------------------------------------------- experiments


def imperfect_teacher(run: Run, bed: Bed, seed: int) -> torch.nn.Module:
    """The teacher of experiments 1-2: trained on a limited oracle sample, so it is imperfect."""
    p = run.params
    strings = bed.lang.sample(p.teacher_train_strings, derived_generator(seed, TEACHER_STRINGS))
    teacher = new_lm(run, bed, p.teacher_dim, p.teacher_layers, derived_seed(seed, TEACHER_INIT))
    batches = regime_batches("offline", batch_size=p.batch_size, length=bed.length, bos_id=bed.bos, n_symbols=bed.V,
                             offline_set=strings)
    train_next_token(run, bed, teacher, batches, p.teacher_steps, seed, "teacher")
    run.record(seed, teacher_golden=golden(bed, teacher))
    return teacher


def divergence_zoo(run: Run, bed: Bed, teacher, seed: int) -> None:
    """One student per divergence, on the same fixed set of teacher samples."""
    p = run.params
    zoo_set = sample(teacher, p.zoo_offline_strings, bed.length, bed.bos, derived_generator(seed, ZOO_SET),
                     n_symbols=bed.V)
    held_out = sample(teacher, p.golden_strings, bed.length, bed.bos, derived_generator(seed, ZOO_HELD_OUT),
                      n_symbols=bed.V)
    gold, prox, valid = [], [], []
    for div in p.zoo_divergences:
        student = new_lm(run, bed, p.student_dim, p.student_layers, derived_seed(seed, ZOO_STUDENT_INIT))
        batches = regime_batches("offline", batch_size=p.batch_size, length=bed.length, bos_id=bed.bos,
                                 n_symbols=bed.V, offline_set=zoo_set)
        distill(run, bed, student, teacher_targets(bed, teacher), batches, div, p.zoo_steps, seed, f"zoo-{div}")
        gold.append(golden(bed, student))
        prox.append(proxy(bed, student, teacher_targets(bed, teacher), held_out))
        valid.append(valid_share(bed, student, p.golden_strings, derived_generator(seed, SAMPLE_QUALITY)))
    run.record(seed, zoo_golden=gold, zoo_proxy=prox, zoo_valid_share=valid,
               teacher_valid_share=valid_share(bed, teacher, p.golden_strings, derived_generator(seed, SAMPLE_QUALITY)))


def teacher_hacking(run: Run, bed: Bed, teacher, seed: int) -> None:
    """Forward-KL distillation under each data regime; golden and proxy tracked over training.

    The proxy, KL(teacher || student), is measured for every arm on the same held-out teacher samples;
    the offline sets are prefixes of one pool of teacher samples (of oracle samples for the control).
    """
    p = run.params
    pools = {"teacher": sample(teacher, p.offline_sizes[-1], bed.length, bed.bos,
                               derived_generator(seed, HACKING_POOL), n_symbols=bed.V),
             "oracle": bed.lang.sample(p.offline_sizes[0], derived_generator(seed, ORACLE_POOL))}
    held_out = sample(teacher, p.golden_strings, bed.length, bed.bos, derived_generator(seed, HACKING_HELD_OUT),
                      n_symbols=bed.V)
    targets = {"teacher": teacher_targets(bed, teacher), "oracle": oracle_targets(bed)}
    teacher_golden = golden(bed, teacher)
    steps = None
    for name, regime, size, source in hacking_arms(p):
        student = new_lm(run, bed, p.student_dim, p.student_layers, derived_seed(seed, HACKING_STUDENT_INIT))
        batches = regime_batches(regime, batch_size=p.batch_size, length=bed.length, bos_id=bed.bos,
                                 n_symbols=bed.V, offline_set=pools[source][:size] if size else None,
                                 teacher=teacher, student=student)

        def evaluate(m):
            return {"golden": golden(bed, m), "proxy": proxy(bed, m, targets["teacher"], held_out)}

        result = distill(run, bed, student, targets[source], batches, "forward_kl", p.hacking_steps, seed,
                         f"hacking-{name}", eval_every=p.eval_every, evaluate=evaluate)
        run.record(seed, **{f"hacking_{name}_golden": result.column("golden"),
                            f"hacking_{name}_proxy": result.column("proxy"),
                            # how far above its teacher's own golden KL (the floor) the student ends
                            f"hacking_{name}_gap_to_teacher": result.final("golden") - teacher_golden})
        steps = [r["step"] for r in result.history]
    run.record(seed, hacking_steps=steps)


def capacity_gap(run: Run, bed: Bed, seed: int) -> None:
    """Teachers of growing width trained on fresh oracle data; the same student distilled from each.

    Every student draws its batches (with replacement) from the same pool of oracle strings, with each
    teacher's logits computed ahead in large batches: the distillation budget is identical, only the
    teacher differs.
    """
    p = run.params
    pool = bed.lang.sample(p.capacity_steps * p.batch_size, derived_generator(seed, CAPACITY_POOL))
    teachers, students = [], []
    for dim in p.capacity_teacher_dims:
        teacher = new_lm(run, bed, dim, p.capacity_teacher_layers, derived_seed(seed, CAPACITY_TEACHER_INIT))
        train_next_token(run, bed, teacher, oracle_batches(bed, p.batch_size), p.capacity_teacher_steps, seed,
                         f"capacity-teacher-d{dim}")
        with torch.no_grad():
            logits = torch.cat([symbol_logits(teacher, bed, chunk).cpu() for chunk in pool.split(2048)])
        student = new_lm(run, bed, p.capacity_student_dim, p.student_layers,
                         derived_seed(seed, CAPACITY_STUDENT_INIT))

        def draw(gen, logits=logits):
            i = torch.randint(0, len(pool), (p.batch_size,), generator=gen)
            return pool[i], logits[i]

        distill(run, bed, student, None, draw, "forward_kl", p.capacity_steps, seed, f"capacity-student-d{dim}")
        teachers.append(golden(bed, teacher))
        students.append(golden(bed, student))
    run.record(seed, capacity_teacher_golden=teachers, capacity_student_golden=students,
               capacity_student_excess=[s - t for s, t in zip(students, teachers)],
               capacity_narrowest_teacher_golden=teachers[0], capacity_widest_teacher_golden=teachers[-1])


# ---------------------------------------------------------------- 4. cross-tokenizer distillation


def cross_tokenizer(run: Run, bed: Bed, seed: int) -> None:
    """A BPE teacher trained on plenty of oracle text; character students that see only a small transfer set.

    The students learn by next-token prediction on the transfer set (NTP), by NTP plus ULD's
    sorted-probability term, or by ALM alone. ALM's tau and ULD's weight are each picked from their
    candidates on separate validation strings; the golden strings only measure the picked students.
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
    teacher = tiny_gpt2(bpe.get_vocab_size(), p.xtok_teacher_dim, p.teacher_layers, max_length=bed.length + 1).to(dev)

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
    token_logp = token_log_probs(teacher_logp, ids)  # log p_c of every chunk (teacher token) c
    g_ids, g_mask, _ = encode_bpe(bpe, bed.golden_x, bpe_bos, width=bed.length)
    g_token_logp = token_log_probs(teacher_log_probs(g_ids), g_ids)
    # the teacher's bits per character: its total log-loss over the characters the golden strings span
    teacher_bpc = float(-(g_token_logp * g_mask).sum() / bed.golden_x.numel() / LOG2)

    # everything a student batch indexes lives on the run's device (fit moves the drawn indices there)
    x_d, chunk_d, mask_d = x.to(dev), chunk.to(dev), mask.to(dev)
    token_logp_d, probs_d = token_logp.to(dev), teacher_logp.exp().to(dev)

    def draw(gen):
        return torch.randint(0, len(x), (p.batch_size,), generator=gen)

    @torch.no_grad()
    def bits_per_char(m, strings) -> float:
        logits = symbol_logits(m, bed, strings).cpu()
        return float(F.cross_entropy(logits.reshape(-1, bed.V), strings.reshape(-1)) / LOG2)

    def train_student(method: str, knob: float | None):
        def loss(m, i):
            return cross_tokenizer_loss(method, symbol_logits(m, bed, x_d[i]), x_d[i], chunk=chunk_d[i],
                                        teacher_chunk_logp=token_logp_d[i], teacher_probs=probs_d[i],
                                        mask=mask_d[i], knob=knob)

        student = new_lm(run, bed, p.xtok_student_dim, p.student_layers, derived_seed(seed, XTOK_STUDENT_INIT))

        def evaluate(m):
            return {"bpc": bits_per_char(m, bed.golden_x)}

        result = run.fit(f"xtok-{method}-{knob}", seed, student, loss, draw, steps=p.xtok_steps,
                         optimizer=torch.optim.AdamW(student.parameters(), lr=p.lr), evaluate=evaluate,
                         eval_every=max(1, p.xtok_steps // 10))  # 10 evaluations: convergence reads the tail
        return student, result

    finals, picked = {}, {}
    for method, candidates in (("ntp", [None]), ("uld", p.uld_weights), ("alm", p.alm_temperatures)):
        trained = [(knob, *train_student(method, knob)) for knob in candidates]
        knob, _, result = min(trained, key=lambda t: bits_per_char(t[1], val_x))  # picked on validation strings
        picked[method] = knob
        finals[method] = result.column("bpc")
        steps = [r["step"] for r in result.history]
    run.record(seed, xtok_steps=steps, oracle_bits_per_char=bed.entropy_rate / LOG2, xtok_teacher_bpc=teacher_bpc,
               xtok_alm_tau=picked["alm"], xtok_uld_weight=picked["uld"],
               **{f"xtok_{m}_bpc_curve": c for m, c in finals.items()},
               **{f"xtok_{m}_bpc": c[-1] for m, c in finals.items()})


def run_seed(run: Run, seed: int, bed: Bed) -> None:
    """All four experiments for one seed."""
    teacher = imperfect_teacher(run, bed, seed)
    divergence_zoo(run, bed, teacher, seed)
    teacher_hacking(run, bed, teacher, seed)
    capacity_gap(run, bed, seed)
    cross_tokenizer(run, bed, seed)
