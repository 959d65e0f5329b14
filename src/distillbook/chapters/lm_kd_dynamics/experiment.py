"""How language-model distillation behaves: divergences, teacher hacking, the capacity gap, cross-tokenizer.

Everything runs on the ``grammar`` test bed's sparse HMM language, whose exact
next-token distribution makes the *golden* metric, KL(oracle || student),
exact at every position of a fixed set of held-out oracle strings. The
*proxy* metric is KL(teacher || student) on the teacher's own samples.

1. Divergence zoo: one student per divergence of ``methods/kd.py``, same data.
2. Teacher hacking (paper 43): oracle -> imperfect teacher -> student, with
   offline (fixed), online (fresh teacher samples) and on-policy data.
3. Capacity gap (paper 76): one student, teachers of growing width.
4. Cross-tokenizer (paper 70): a BPE teacher, a character student; next-token
   training, ULD and approximate likelihood matching (ALM).
"""

from __future__ import annotations

from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from distillbook.core.claims import WINDOW, Claim, curve, derived, relative_change, tail_mean
from distillbook.methods.cross_tokenizer import alm_loss, uld_term
from distillbook.methods.kd import DIVERGENCES, forward_kl
from distillbook.models import lm
from distillbook.models.lm import sample, tiny_gpt2
from distillbook.core.params import ChapterParams
from distillbook.core.runtime import derived_generator
from distillbook.core.plotting import mean_std_band
from distillbook.methods.regimes import regime_batches
from distillbook.core.results import Run
from distillbook.testbeds.grammar import ALPHABET, HMMLanguage, encode_bpe, golden_kl, to_strings, train_bpe, with_bos

CHAPTER = "lm-kd-dynamics"
LOG2 = float(np.log(2))


class Params(ChapterParams):
    # the oracle language (fixed across seeds: it is the test bed)
    language_seed: int = Field(ge=0)
    n_states: int = Field(ge=2, le=512)
    vocab_size: int = Field(ge=2, le=26)
    length: int = Field(ge=4, le=256, description="symbols per string")
    branching: int = Field(ge=1, description="successor states per hidden state")
    emissions: int = Field(ge=1, description="symbols each hidden state can emit")
    golden_strings: int = Field(ge=16, description="held-out oracle strings for the golden metric")
    batch_size: int = Field(ge=1, le=4096)
    lr: float = Field(gt=0, le=1)
    # teacher and student of experiments 1-2
    teacher_dim: int = Field(ge=4)
    teacher_layers: int = Field(ge=1)
    teacher_train_strings: int = Field(ge=8, description="oracle strings the (imperfect) teacher learns from")
    teacher_steps: int = Field(ge=1)
    student_dim: int = Field(ge=4)
    student_layers: int = Field(ge=1)
    # 1. divergence zoo
    zoo_divergences: list[str] = Field(min_length=1)
    zoo_offline_strings: int = Field(ge=8)
    zoo_steps: int = Field(ge=1)
    # 2. teacher hacking
    offline_sizes: list[int] = Field(min_length=1, description="sizes of the fixed offline sets of teacher samples "
                                                           "(the smallest is the claims' offline regime)")
    hacking_steps: int = Field(ge=1)
    eval_every: int = Field(ge=1)
    # 3. capacity gap
    capacity_teacher_dims: list[int] = Field(min_length=3)
    capacity_teacher_layers: int = Field(ge=1)
    capacity_teacher_steps: int = Field(ge=1)
    capacity_student_dim: int = Field(ge=4)
    capacity_steps: int = Field(ge=1)
    # 4. cross-tokenizer
    bpe_vocab: int = Field(ge=8, description="BPE vocabulary of the cross-tokenizer teacher")
    xtok_train_strings: int = Field(ge=8)
    xtok_teacher_dim: int = Field(ge=4)
    xtok_teacher_steps: int = Field(ge=1)
    xtok_student_dim: int = Field(ge=4)
    xtok_steps: int = Field(ge=1)
    xtok_val_strings: int = Field(ge=8, description="oracle strings that pick ALM's tau and ULD's weight")
    alm_temperatures: list[float] = Field(min_length=1, description="candidate taus of ALM's binarised chunk probabilities")
    uld_weights: list[float] = Field(min_length=1, description="candidate weights of ULD's term next to cross-entropy")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], language_seed=0, n_states=8, vocab_size=6, length=8, branching=2, emissions=2,
                      golden_strings=32, batch_size=16, lr=3e-3, teacher_dim=16, teacher_layers=1,
                      teacher_train_strings=32, teacher_steps=10, student_dim=8, student_layers=1,
                      zoo_divergences=["forward_kl", "reverse_kl", "jsd"], zoo_offline_strings=32, zoo_steps=5,
                      offline_sizes=[4, 16], hacking_steps=12, eval_every=2, capacity_teacher_dims=[8, 16, 32],
                      capacity_teacher_layers=1, capacity_teacher_steps=5, capacity_student_dim=8, capacity_steps=5,
                      bpe_vocab=16, xtok_train_strings=32, xtok_teacher_dim=16, xtok_teacher_steps=6,
                      xtok_student_dim=8, xtok_steps=6, xtok_val_strings=16, alm_temperatures=[1.0, 4.0],
                      uld_weights=[0.1, 1.0]),
        # Sized to stay well under 3 minutes on 2 cores (run times vary by 10-15% between runs).
        "cpu": dict(seeds=[0, 1, 2, 3], language_seed=0, n_states=16, vocab_size=12, length=16, branching=3,
                    emissions=3, golden_strings=256, batch_size=32, lr=3e-3, teacher_dim=32, teacher_layers=1,
                    teacher_train_strings=256, teacher_steps=300, student_dim=16, student_layers=1,
                    zoo_divergences=list(DIVERGENCES), zoo_offline_strings=512, zoo_steps=80,
                    offline_sizes=[16, 64], hacking_steps=260, eval_every=20, capacity_teacher_dims=[8, 16, 32, 64],
                    capacity_teacher_layers=1, capacity_teacher_steps=150, capacity_student_dim=16,
                    capacity_steps=300, bpe_vocab=48, xtok_train_strings=256, xtok_teacher_dim=32,
                    xtok_teacher_steps=300, xtok_student_dim=16, xtok_steps=150, xtok_val_strings=128,
                    alm_temperatures=[1.0, 4.0], uld_weights=[0.1, 1.0]),
        # Larger language and models, longer training. Tiny transformers are launch-bound on a GPU (several ms a
        # step, like the CPU), so the budget is counted in steps: about 3.5x the cpu profile's, which we estimate
        # at 8-9 minutes on one H200. Not yet measured there.
        "gpu": dict(seeds=[0, 1, 2, 3], language_seed=0, n_states=32, vocab_size=16, length=24, branching=3,
                    emissions=3, golden_strings=1024, batch_size=64, lr=2e-3, teacher_dim=128, teacher_layers=2,
                    teacher_train_strings=512, teacher_steps=600, student_dim=32, student_layers=1,
                    zoo_divergences=list(DIVERGENCES), zoo_offline_strings=2048, zoo_steps=250,
                    offline_sizes=[32, 128], hacking_steps=500, eval_every=25,
                    capacity_teacher_dims=[16, 32, 64, 128, 256], capacity_teacher_layers=2,
                    capacity_teacher_steps=400, capacity_student_dim=32, capacity_steps=800, bpe_vocab=96,
                    xtok_train_strings=512, xtok_teacher_dim=128, xtok_teacher_steps=600, xtok_student_dim=32,
                    xtok_steps=500, xtok_val_strings=512, alm_temperatures=[1.0, 4.0],
                    uld_weights=[0.1, 1.0]),
    }

    @field_validator("zoo_divergences")
    @classmethod
    def _known_divergences(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DIVERGENCES))
        if unknown:
            raise ValueError(f"unknown divergences {unknown}; allowed: {', '.join(DIVERGENCES)}")
        return value

    @field_validator("capacity_teacher_dims")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if sorted(set(value)) != value:
            raise ValueError("capacity_teacher_dims must be strictly increasing")
        return value

    @field_validator("teacher_dim", "student_dim", "capacity_teacher_dims", "capacity_student_dim", "xtok_teacher_dim",
                     "xtok_student_dim")
    @classmethod
    def _even_widths(cls, value):
        widths = value if isinstance(value, list) else [value]
        if any(d < 4 or d % 2 for d in widths):
            raise ValueError("model widths must be even and >= 4 (the models have 2 attention heads)")
        return value

    @field_validator("alm_temperatures", "uld_weights")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("candidates must be > 0")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.branching > self.n_states or self.emissions > self.vocab_size:
            raise ValueError("branching must be <= n_states and emissions <= vocab_size")
        if sorted(set(self.offline_sizes)) != self.offline_sizes or self.offline_sizes[0] < 2:
            raise ValueError("offline_sizes must be strictly increasing and >= 2")
        if self.eval_every > self.hacking_steps:
            raise ValueError(f"eval_every ({self.eval_every}) must be <= hacking_steps ({self.hacking_steps})")
        return self


# ---------------------------------------------------------------- the test bed and shared steps


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


GOLDEN_STREAM = 999  # the golden strings' stream, keyed by the language seed rather than the run's seed


def new_lm(run: Run, bed: Bed, dim: int, layers: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
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
    return lambda x: symbol_logits(teacher, bed, x)


def oracle_targets(bed: Bed):
    """The oracle as a teacher: log p*(v | x_<t), exact (impossible symbols get log 1e-30)."""
    return lambda x: bed.lang.next_token_probs(x.cpu()).clamp_min(1e-30).log().to(x.device, torch.float32)


@torch.no_grad()
def valid_share(bed: Bed, model: torch.nn.Module, n: int, generator: torch.Generator) -> float:
    """Sample quality: the share of the model's samples that the oracle can produce at all."""
    x = sample(model, n, bed.length, bed.bos, generator, n_symbols=bed.V)
    return float(bed.lang.valid(x).double().mean())


def train_next_token(run: Run, bed: Bed, model, next_batch, steps: int, seed: int, name: str, **kw):
    """Next-token cross-entropy on strings from ``next_batch``."""
    p = run.params

    def loss(m, x):
        return F.cross_entropy(symbol_logits(m, bed, x).reshape(-1, bed.V), x.to(run.device).reshape(-1))

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
    strings = bed.lang.sample(p.teacher_train_strings, derived_generator(seed, 1))
    teacher = new_lm(run, bed, p.teacher_dim, p.teacher_layers, seed)
    batches = regime_batches("offline", batch_size=p.batch_size, length=bed.length, bos_id=bed.bos, n_symbols=bed.V,
                             offline_set=strings)
    train_next_token(run, bed, teacher, batches, p.teacher_steps, seed, "teacher")
    run.record(seed, teacher_golden=golden(bed, teacher))
    return teacher


def divergence_zoo(run: Run, bed: Bed, teacher, seed: int) -> None:
    """One student per divergence, on the same fixed set of teacher samples."""
    p = run.params
    zoo_set = sample(teacher, p.zoo_offline_strings, bed.length, bed.bos, derived_generator(seed, 2), n_symbols=bed.V)
    held_out = sample(teacher, p.golden_strings, bed.length, bed.bos, derived_generator(seed, 3), n_symbols=bed.V)
    gold, prox, valid = [], [], []
    for div in p.zoo_divergences:
        student = new_lm(run, bed, p.student_dim, p.student_layers, seed + 100)
        batches = regime_batches("offline", batch_size=p.batch_size, length=bed.length, bos_id=bed.bos,
                                 n_symbols=bed.V, offline_set=zoo_set)
        distill(run, bed, student, teacher_targets(bed, teacher), batches, div, p.zoo_steps, seed, f"zoo-{div}")
        gold.append(golden(bed, student))
        prox.append(proxy(bed, student, teacher_targets(bed, teacher), held_out))
        valid.append(valid_share(bed, student, p.golden_strings, derived_generator(seed, 4)))
    run.record(seed, zoo_golden=gold, zoo_proxy=prox, zoo_valid_share=valid,
               teacher_valid_share=valid_share(bed, teacher, p.golden_strings, derived_generator(seed, 4)))


def hacking_arms(p: Params) -> list[tuple[str, str, int | None, str]]:
    """(name, regime, offline set size, teacher) of every teacher-hacking run.

    ``oracle{n}`` is the control: the same offline regime with the oracle itself as the teacher, so
    that a turn-up there is plain overfitting of a finite set, not hacking of a teacher's errors.
    """
    small = p.offline_sizes[0]
    return ([(f"offline{n}", "offline", n, "teacher") for n in p.offline_sizes]
            + [(f"oracle{small}", "offline", small, "oracle"), ("online", "online", None, "teacher"),
               ("on_policy", "on_policy", None, "teacher")])


def teacher_hacking(run: Run, bed: Bed, teacher, seed: int) -> None:
    """Forward-KL distillation under each data regime; golden and proxy tracked over training.

    The proxy, KL(teacher || student), is measured for every arm on the same held-out teacher samples;
    the offline sets are prefixes of one pool of teacher samples (of oracle samples for the control).
    """
    p = run.params
    pools = {"teacher": sample(teacher, p.offline_sizes[-1], bed.length, bed.bos, derived_generator(seed, 5), n_symbols=bed.V),
             "oracle": bed.lang.sample(p.offline_sizes[0], derived_generator(seed, 8))}
    held_out = sample(teacher, p.golden_strings, bed.length, bed.bos, derived_generator(seed, 9), n_symbols=bed.V)
    targets = {"teacher": teacher_targets(bed, teacher), "oracle": oracle_targets(bed)}
    teacher_golden = golden(bed, teacher)
    steps = None
    for name, regime, size, source in hacking_arms(p):
        student = new_lm(run, bed, p.student_dim, p.student_layers, seed + 200)
        batches = regime_batches(regime, batch_size=p.batch_size, length=bed.length, bos_id=bed.bos,
                                 n_symbols=bed.V, offline_set=pools[source][:size] if size else None,
                                 teacher=teacher, student=student)
        result = distill(run, bed, student, targets[source], batches, "forward_kl", p.hacking_steps, seed,
                         f"hacking-{name}", eval_every=p.eval_every,
                         evaluate=lambda m: {"golden": golden(bed, m),
                                             "proxy": proxy(bed, m, targets["teacher"], held_out)})
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
    pool = bed.lang.sample(p.capacity_steps * p.batch_size, derived_generator(seed, 10))
    teachers, students = [], []
    for dim in p.capacity_teacher_dims:
        teacher = new_lm(run, bed, dim, p.capacity_teacher_layers, seed + 300)
        train_next_token(run, bed, teacher, oracle_batches(bed, p.batch_size), p.capacity_teacher_steps, seed,
                         f"capacity-teacher-d{dim}")
        with torch.no_grad():
            logits = torch.cat([symbol_logits(teacher, bed, chunk).cpu() for chunk in pool.split(2048)])
        student = new_lm(run, bed, p.capacity_student_dim, p.student_layers, seed + 400)
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
    bpe = train_bpe(to_strings(bed.lang.sample(4096, derived_generator(seed, 7))), p.bpe_vocab, ALPHABET[: bed.V])
    bpe_bos = bpe.token_to_id("<bos>")
    x = bed.lang.sample(p.xtok_train_strings, derived_generator(seed, 6))
    val_x = bed.lang.sample(p.xtok_val_strings, derived_generator(seed, 11))
    ids, mask, chunk = encode_bpe(bpe, x, bpe_bos)

    torch.manual_seed(seed + 500)
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
    token_logp = teacher_logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    g_ids, g_mask, _ = encode_bpe(bpe, bed.golden_x, bpe_bos, width=bed.length)
    g_token_logp = teacher_log_probs(g_ids).gather(-1, g_ids.unsqueeze(-1)).squeeze(-1)
    # the teacher's bits per character: its total log-loss over the characters the golden strings span
    teacher_bpc = float(-(g_token_logp * g_mask).sum() / bed.golden_x.numel() / LOG2)

    # everything a student batch indexes lives on the run's device (fit moves the drawn indices there)
    x_d, chunk_d, mask_d = x.to(dev), chunk.to(dev), mask.to(dev)
    token_logp_d, probs_d = token_logp.to(dev), teacher_logp.exp().to(dev)
    draw = lambda gen: torch.randint(0, len(x), (p.batch_size,), generator=gen)  # noqa: E731

    @torch.no_grad()
    def bits_per_char(m, strings) -> float:
        logits = symbol_logits(m, bed, strings).cpu()
        return float(F.cross_entropy(logits.reshape(-1, bed.V), strings.reshape(-1)) / LOG2)

    def train_student(method: str, knob: float | None):
        def loss(m, i):
            logp = torch.log_softmax(symbol_logits(m, bed, x_d[i]), -1)
            char_logp = logp.gather(-1, x_d[i].unsqueeze(-1)).squeeze(-1)
            if method == "ntp":
                return -char_logp.mean()
            if method == "uld":
                return -char_logp.mean() + knob * uld_term(logp.exp(), probs_d[i], mask_d[i])
            return alm_loss(char_logp, chunk_d[i], token_logp_d[i], mask_d[i], knob)

        student = new_lm(run, bed, p.xtok_student_dim, p.student_layers, seed + 600)
        result = run.fit(f"xtok-{method}-{knob}", seed, student, loss, draw, steps=p.xtok_steps,
                         optimizer=torch.optim.AdamW(student.parameters(), lr=p.lr),
                         evaluate=lambda m: {"bpc": bits_per_char(m, bed.golden_x)},
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


def run_seed(run: Run, bed: Bed, seed: int) -> None:
    """All four experiments for one seed."""
    teacher = imperfect_teacher(run, bed, seed)
    divergence_zoo(run, bed, teacher, seed)
    teacher_hacking(run, bed, teacher, seed)
    capacity_gap(run, bed, seed)
    cross_tokenizer(run, bed, seed)


# ---------------------------------------------------------------- claims

TIAPKIN = 43  # On Teacher Hacking in Language Model Distillation
CAPACITY = 76  # Towards the Law of Capacity Gap in Distilling Language Models
ALM = 70  # Cross-Tokenizer Distillation via Approximate Likelihood Matching


def _final(curves, window: int = WINDOW) -> np.ndarray:
    """Per seed: the converged reading of a curve, the mean of its last ``window`` evaluations."""
    return np.array([tail_mean(c, window) for c in curves])


def _minimum_index(curves: np.ndarray, s: int, window: int) -> int:
    """Cross-fitted minimum for seed ``s``: the interior arg-min of the other seeds' mean curve, before the end
    window."""
    others = np.delete(curves, s, axis=0).mean(axis=0)
    return 1 + int(np.argmin(others[1:curves.shape[1] - window]))


def relative_u_depth(curves, window: int = 1) -> np.ndarray:
    """Per seed: how far a curve fell to its minimum and rose after it, relative to the minimum.

    d_s = min(c_s[0] - c_s[k], end_s - c_s[k]) / c_s[k], with end_s the mean of the last ``window`` points and
    k the interior arg-min (before the end window) of the *other* seeds' mean curve, cross-fitted as in
    :func:`distillbook.core.claims.rise_then_fall` so that a seed's noise cannot pick its own minimum. Positive: the
    seed fell to that point and rose after it; 0.05 means the end sits 5% above the minimum. Curves must be
    positive (a KL, bits per character).
    """
    c = np.asarray(curves, dtype=float)
    if c.ndim != 2 or c.shape[0] < 2 or c.shape[1] < window + 2:
        raise ValueError(f"curves must be (seeds >= 2, points >= window + 2 = {window + 2}), got {c.shape}")
    out = np.empty(len(c))
    for s in range(len(c)):
        k = _minimum_index(c, s, window)
        out[s] = min(c[s, 0] - c[s, k], c[s, -window:].mean() - c[s, k]) / c[s, k]
    return out


def proxy_fall_after_golden_minimum(golden_curves, proxy_curves, window: int = 1,
                                    relative: bool = False) -> np.ndarray:
    """Per seed: proxy at the golden curve's minimum minus proxy at the end (> 0: the proxy kept falling).

    The minimum's index is cross-fitted as in :func:`relative_u_depth`; the end is the mean of the last
    ``window`` evaluations. ``relative`` divides the drop by the proxy at the golden minimum.
    """
    g, pr = np.asarray(golden_curves, dtype=float), np.asarray(proxy_curves, dtype=float)
    out = np.empty(len(g))
    for s in range(len(g)):
        k = _minimum_index(g, s, window)
        out[s] = (pr[s, k] - pr[s, -window:].mean()) / (pr[s, k] if relative else 1.0)
    return out


U_MARGIN = 0.05
U_RATIONALE = ("5% of the curve's minimum: the plan's bar for a turn-up (C1: the final golden KL more than 5% above "
               "its own minimum); the end is the mean of the last evaluations, so one noisy evaluation cannot make it. "
               "A shape claim: the curve's movement is the claimed effect, so a curve still moving at the end may reproduce it "
               "but cannot refute it (movement_is_the_claim)")
KL_MARGIN = 0.01
KL_RATIONALE = ("0.01 nats/symbol is a 1% change in per-symbol perplexity (e^0.01), the smallest change in a language "
                "model's fit worth reporting; the golden KL is exact on fixed strings, so no test-sample noise sits "
                "below it. Floor: the teacher's own golden KL, which a distilled student approaches")
BPC_MARGIN = 0.01
BPC_RATIONALE = ("0.01 bits/character is a 0.7% change in per-character perplexity (2^0.01), the size of the golden "
                 "KL's margin; floor: the oracle's entropy rate, which no student can beat")


def claims(p: Params) -> tuple[Claim, ...]:
    small, large = p.offline_sizes[0], p.offline_sizes[-1]
    widest = p.capacity_teacher_dims[-1] / p.capacity_student_dim
    hacking = dict(saturation_tol=KL_MARGIN)
    shape = "a turn-up is the golden curve rising at the end; a still-rising end cannot refute it"
    return (
        Claim("offline-golden-turns-up", TIAPKIN,
              statement="With a small fixed offline set, the golden KL(oracle || student) falls, then rises again",
              a="relative golden U-depth, small offline set", statistic="value", region=(">", 0.0),
              movement_is_the_claim=shape, margin=U_MARGIN, rationale=U_RATIONALE,
              paper_figure="Fig. 1 / §5", paper_value="offline golden metric U-shaped over training",
              explanation=f"The {small}-string student stalls well above its teacher's golden KL: it never fits the "
                          "teacher closely enough for the teacher's errors to be what it learns next, so its golden "
                          "curve flattens instead of turning up.",
              diagnosis=f"hacking_offline{small}_gap_to_teacher"),
        Claim("proxy-falls-while-golden-rises", TIAPKIN,
              statement="...and, in the same seed, the proxy KL(teacher || student) on held-out teacher samples keeps "
                        "falling while the golden KL rises",
              a="min(relative golden U-depth, relative proxy drop after the golden minimum)", statistic="value",
              region=(">", 0.0), movement_is_the_claim=shape, margin=U_MARGIN,
              rationale="5% of each curve's value at the golden minimum, the turn-up's bar applied to both curves",
              paper_figure="Fig. 1 / §5", paper_value="proxy keeps improving while the golden metric degrades",
              explanation="Both halves are needed; without a golden turn-up (previous claim) there is no hacking "
                          "to see.",
              diagnosis="offline-golden-turns-up"),
        Claim("turn-up-is-teacher-hacking", TIAPKIN,
              statement="The turn-up is larger with the imperfect teacher than with the oracle itself as teacher on "
                        "the same number of strings (so it is more than overfitting a finite set)",
              a="relative U-depth, imperfect teacher", b="relative U-depth, oracle as teacher", movement_is_the_claim=shape, margin=U_MARGIN,
              rationale="the turn-up's own bar: a difference below 5% of the minimum is not a turn-up of its own",
              paper_figure="§4 (the oracle → teacher → student setup)",
              paper_value="hacking = exploiting the teacher's imperfections",
              explanation=f"What turns up on {small} strings is finite-set overfitting, sharpest with the oracle's "
                          "exact targets; the imperfect-teacher student stalls above its teacher before any hacking "
                          "could start.",
              diagnosis=f"hacking_offline{small}_gap_to_teacher"),
        Claim("online-turns-up-less", TIAPKIN,
              statement="Fresh teacher samples at every step turn up less than the small offline set "
                        "(relative U-depth)",
              a="relative U-depth, small offline set", b="relative U-depth, online", movement_is_the_claim=shape, margin=U_MARGIN,
              rationale="the turn-up's own bar: online data must remove at least a 5% turn-up",
              paper_figure="§5", paper_value="online generation mitigates teacher hacking",
              explanation="With no turn-up in the small offline arm there is nothing for online data to remove.",
              diagnosis="offline-golden-turns-up"),
        Claim("online-beats-offline", TIAPKIN,
              statement="Fresh teacher samples at every step end with a lower golden KL than the small offline set",
              a="final golden KL, small offline set", b="final golden KL, online", margin=KL_MARGIN,
              rationale=KL_RATIONALE, **hacking,
              paper_figure="§5", paper_value="online generation mitigates teacher hacking",
              explanation="The online student is still descending toward its teacher's golden KL, its floor, at the "
                          "end of the budget: online data bring the student to the teacher, not past it.",
              diagnosis="hacking_online_gap_to_teacher"),
        Claim("on-policy-beats-offline", TIAPKIN,
              statement="The student's own samples end with a lower golden KL than the small offline set",
              a="final golden KL, small offline set", b="final golden KL, on-policy", margin=KL_MARGIN,
              rationale=KL_RATIONALE, **hacking,
              paper_figure="§5", paper_value="on-policy data mitigates teacher hacking",
              explanation="The on-policy student is still descending toward its teacher's golden KL, its floor, at "
                          "the end of the budget.",
              diagnosis="hacking_on_policy_gap_to_teacher"),
        Claim("diverse-offline-helps", TIAPKIN,
              statement="A larger (more diverse) offline set ends with a lower golden KL than the small one",
              a="final golden KL, small offline set", b="final golden KL, largest offline set", margin=KL_MARGIN,
              rationale=KL_RATIONALE, **hacking,
              paper_figure="§5", paper_value="more diverse offline data mitigates teacher hacking",
              explanation=f"The {large}-string student is still descending toward its teacher's golden KL at the end "
                          "of the budget.",
              diagnosis=f"hacking_offline{large}_gap_to_teacher"),
        Claim("capacity-gap-u-shape", CAPACITY,
              statement="The same student distilled from wider and wider teachers: its golden KL falls, then rises",
              a="student's relative golden U-depth over teacher width", statistic="value", region=(">", 0.0),
              margin=U_MARGIN, rationale="the teacher-hacking turn-up's bar (5% of the minimum), over teacher width",
              paper_figure="Fig. 1", paper_value="U-shaped student loss; best teacher ≈ 2.5× the student",
              explanation=f"Up to {widest:g}× its width the student keeps up with every teacher (its golden KL stays "
                          "close to each teacher's), so a wider, better teacher is simply better here.",
              diagnosis="capacity_student_excess"),
        Claim("alm-beats-uld", ALM,
              statement="A character student distilled from a BPE teacher by ALM reaches fewer bits per character "
                        "than by ULD",
              a="bits/char, ULD", b="bits/char, ALM", margin=BPC_MARGIN, rationale=BPC_RATIONALE,
              saturation_tol=BPC_MARGIN,
              paper_figure="Table 1", paper_value="ALM beats prior cross-tokenizer methods (ULD, MinED, DSKD)",
              explanation="ALM has not reached its own target: the teacher's canonical-chunk bits per character "
                          "(the rate ALM matches, health table) lie below where the ALM student ends, and the ALM "
                          "curve is still moving, so the comparison is decided by training length, not by ALM's "
                          "objective (the earlier explanation, a biased canonical-chunk target, is refuted by the "
                          "same number: that target is better than ULD's result).",
              diagnosis="xtok_teacher_bpc"),
        Claim("alm-beats-next-token", ALM,
              statement="...and fewer than next-token training on the same strings",
              a="bits/char, next-token", b="bits/char, ALM", margin=BPC_MARGIN, rationale=BPC_RATIONALE,
              saturation_tol=BPC_MARGIN,
              paper_figure="Table 1", paper_value="distillation transfers the teacher beyond the data",
              explanation="As for ULD: the ALM student ends above the canonical-chunk rate it matches, still moving.",
              diagnosis="xtok_teacher_bpc"),
    )


def evaluate_claims(run: Run) -> list[dict]:
    c = {claim.id: claim for claim in claims(run.params)}
    n_small, n_large = run.params.offline_sizes[0], run.params.offline_sizes[-1]
    small = f"offline{n_small}"
    g = lambda name: np.asarray(run.values(f"hacking_{name}_golden"), dtype=float)  # noqa: E731
    def u(name):  # U-depth per seed, moving as much as its golden curve still moves at the end
        return derived(relative_u_depth(g(name), WINDOW), [relative_change(c, WINDOW) for c in g(name)], WINDOW)
    off_g, off_p = g(small), np.asarray(run.values(f"hacking_{small}_proxy"), dtype=float)
    teacher = run.values("teacher_golden")
    oracle_bpc = run.values("oracle_bits_per_char")
    results = [
        c["offline-golden-turns-up"].evaluate(u(small)),
        c["proxy-falls-while-golden-rises"].evaluate(
            derived(np.minimum(u(small).values(), proxy_fall_after_golden_minimum(off_g, off_p, WINDOW, relative=True)),
                    u(small).drift(), WINDOW)),
        c["turn-up-is-teacher-hacking"].evaluate(u(small), u(f"oracle{n_small}")),
        c["online-turns-up-less"].evaluate(u(small), u("online")),
        c["online-beats-offline"].evaluate(curve(off_g), curve(g("online")), floor=teacher),
        c["on-policy-beats-offline"].evaluate(curve(off_g), curve(g("on_policy")), floor=teacher),
    ]
    if n_small != n_large:
        results.append(c["diverse-offline-helps"].evaluate(curve(off_g), curve(g(f"offline{n_large}")),
                                                           floor=teacher))
    xtok = lambda m: curve(run.values(f"xtok_{m}_bpc_curve"))  # noqa: E731
    return results + [
        c["capacity-gap-u-shape"].evaluate(relative_u_depth(run.values("capacity_student_golden"))),
        c["alm-beats-uld"].evaluate(xtok("uld"), xtok("alm"), floor=oracle_bpc),
        c["alm-beats-next-token"].evaluate(xtok("ntp"), xtok("alm"), floor=oracle_bpc),
    ]


def record_health(run: Run) -> None:
    """The test-bed health table: every teacher against the exact oracle."""
    run.health("imperfect teacher (§1-2)", "golden KL, nats/symbol", "teacher_golden", lower_is_better=True,
               references={"exact oracle": 0.0},
               note="the floor of the teacher-hacking students' golden KL: a student distils towards it")
    run.health("widest capacity teacher (§3)", "golden KL, nats/symbol", "capacity_widest_teacher_golden",
               lower_is_better=True,
               references={"exact oracle": 0.0, "narrowest teacher": "capacity_narrowest_teacher_golden"},
               note="wider teachers must be better for the capacity-gap sweep to mean anything")
    run.health("BPE teacher (§4)", "bits per character", "xtok_teacher_bpc", lower_is_better=True,
               references={"oracle entropy rate": "oracle_bits_per_char"},
               note="from the teacher's canonical-token probabilities, the targets ALM matches")


def _arm_label(arm) -> str:
    name, regime, size, source = arm
    if regime == "offline":
        return f"offline, {size} strings" + (", oracle as teacher" if source == "oracle" else "")
    return {"online": "online (fresh teacher samples)", "on_policy": "on-policy (own samples)"}[regime]


def summary_markdown(run: Run, bed: Bed, results: list[dict]) -> str:
    """What this run measured, in sentences built from its numbers and verdicts."""
    p = run.params
    v = {r["id"]: r["verdict"] for r in results}

    def ms(values, digits=3) -> str:
        x = np.asarray(values, dtype=float)
        return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}"

    teacher_g = np.asarray(run.values("capacity_teacher_golden"))
    student_g = np.asarray(run.values("capacity_student_golden"))
    best = p.capacity_teacher_dims[int(np.argmin(student_g.mean(axis=0)))]
    zoo = np.asarray(run.values("zoo_golden")).mean(axis=0)
    valid = np.asarray(run.values("zoo_valid_share")).mean(axis=0)
    return "\n".join([
        f"Over {len(run.seeds)} seeds (profile `{run.profile}`); KL in nats per symbol:",
        "",
        f"- the oracle's entropy rate is {bed.entropy_rate:.3f} nats/symbol; the imperfect teacher's golden KL is "
        f"{ms(run.values('teacher_golden'))};",
        f"- divergence zoo: the lowest golden KL comes from `{p.zoo_divergences[int(np.argmin(zoo))]}` "
        f"({zoo.min():.3f}), the most valid samples from `{p.zoo_divergences[int(np.argmax(valid))]}` "
        f"({100 * valid.max():.0f}% valid, teacher {100 * np.mean(run.values('teacher_valid_share')):.0f}%);",
        f"- teacher hacking, final golden KL (mean of the last {WINDOW} evaluations): "
        + ", ".join(f"{_arm_label(arm)} {ms(_final(run.values(f'hacking_{arm[0]}_golden')))}"
                    for arm in hacking_arms(p))
        + f"; offline U-shape *{v['offline-golden-turns-up']}*, with the proxy still falling "
        f"*{v['proxy-falls-while-golden-rises']}*;",
        f"- capacity gap: teachers' golden KL from width {p.capacity_teacher_dims[0]} to {p.capacity_teacher_dims[-1]}: "
        + ", ".join(f"{g:.3f}" for g in teacher_g.mean(axis=0))
        + f"; the width-{p.capacity_student_dim} student's: " + ", ".join(f"{g:.3f}" for g in student_g.mean(axis=0))
        + f" (best teacher width {best}, {best / p.capacity_student_dim:g}× the student's; "
        f"U-shape *{v['capacity-gap-u-shape']}*);",
        f"- cross-tokenizer, bits per character at the end (mean of the last {WINDOW} evaluations; oracle {np.mean(run.values('oracle_bits_per_char')):.3f}, BPE teacher "
        f"{ms(run.values('xtok_teacher_bpc'))}): next-token {ms(_final(run.values('xtok_ntp_bpc_curve')))}, ULD "
        f"{ms(_final(run.values('xtok_uld_bpc_curve')))}, ALM {ms(_final(run.values('xtok_alm_bpc_curve')))} (validation picked ALM's tau = "
        + ", ".join(f"{t:g}" for t in run.values("xtok_alm_tau")) + " and ULD's weight = "
        + ", ".join(f"{w:g}" for w in run.values("xtok_uld_weight")) + " across seeds).",
    ])


def glue_numbers(run: Run, bed: Bed) -> dict[str, float]:
    """The run's numbers that the chapter's prose quotes (glued into the page, never typed)."""
    p = run.params
    m = lambda name: float(np.mean(run.values(name)))  # noqa: E731
    small, large = p.offline_sizes[0], p.offline_sizes[-1]
    excess = np.asarray(run.values("capacity_student_excess"), dtype=float).mean(axis=0)
    gains = -np.diff(np.asarray(run.values("capacity_teacher_golden"), dtype=float).mean(axis=0))
    return {
        "entropy_rate": bed.entropy_rate,
        "teacher_golden": m("teacher_golden"),
        "gap_offline_small": m(f"hacking_offline{small}_gap_to_teacher"),
        "gap_offline_large": m(f"hacking_offline{large}_gap_to_teacher"),
        "gap_oracle_control": m(f"hacking_oracle{small}_gap_to_teacher"),
        "gap_online": m("hacking_online_gap_to_teacher"),
        "gap_on_policy": m("hacking_on_policy_gap_to_teacher"),
        "capacity_excess_narrowest": float(excess[0]),
        "capacity_excess_widest": float(excess[-1]),
        "capacity_largest_teacher_gain": float(gains.max()),
        "capacity_smallest_teacher_gain": float(gains.min()),
        "xtok_teacher_bpc": m("xtok_teacher_bpc"),
        "oracle_bpc": m("oracle_bits_per_char"),
        "alm_minus_ntp_bpc": float(np.mean(_final(run.values("xtok_alm_bpc_curve"))
                                           - _final(run.values("xtok_ntp_bpc_curve")))),
    }


# ---------------------------------------------------------------- figures


def plot_divergence_zoo(run: Run):
    import pandas as pd
    import seaborn as sns

    names = run.params.zoo_divergences
    rows = []
    for metric, label in (("zoo_golden", "golden KL(oracle‖student), nats"), ("zoo_proxy", "proxy KL(teacher‖student), nats"),
                          ("zoo_valid_share", "valid samples (share)")):
        for per_seed in run.values(metric):
            rows += [{"divergence": n, "value": v, "metric": label} for n, v in zip(names, per_seed)]
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
    for ax, (label, part) in zip(axes, df.groupby("metric", sort=False)):
        sns.pointplot(data=part, x="divergence", y="value", errorbar="sd", linestyle="none", capsize=0.2, ax=ax)
        ax.set_ylabel(label)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=45)
    axes[2].axhline(np.mean(run.values("teacher_valid_share")), color="k", linestyle=":", label="teacher")
    axes[2].legend(fontsize=8)
    fig.suptitle("One student per divergence, same offline teacher samples (mean ± std over seeds)")
    return fig


def plot_teacher_hacking(run: Run):
    steps = run.values("hacking_steps")[0]
    arms = hacking_arms(run.params)
    fig, axes = plt.subplots(2, len(arms), figsize=(2.9 * len(arms), 6.5), sharex=True, sharey="row",
                             layout="constrained", squeeze=False)
    for col, arm in enumerate(arms):
        name = arm[0]
        mean_std_band(axes[0, col], steps, run.values(f"hacking_{name}_golden"), label="golden", color="C3",
                      marker=None)
        mean_std_band(axes[1, col], steps, run.values(f"hacking_{name}_proxy"), label="proxy", color="C0",
                      marker=None)
        axes[0, col].set_title(_arm_label(arm).replace(", oracle", ",\noracle"), fontsize=10)
        axes[1, col].set_xlabel("distillation step")
        axes[1, col].set_yscale("log")
    axes[0, 0].set_ylabel("golden KL(oracle‖student)\n(nats/symbol)")
    axes[1, 0].set_ylabel("proxy KL(teacher‖student)\n(nats/symbol, log scale)")
    golden = np.concatenate([np.asarray(run.values(f"hacking_{arm[0]}_golden"))[:, 2:] for arm in arms])
    axes[0, 0].set_ylim(golden.min() * 0.9, golden.max() * 1.1)
    fig.suptitle("Teacher hacking: golden and proxy metrics over distillation (mean ± std over seeds)")
    return fig


def plot_capacity_gap(run: Run):
    p = run.params
    ratio = [d / p.capacity_student_dim for d in p.capacity_teacher_dims]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    mean_std_band(ax, ratio, run.values("capacity_teacher_golden"), label="teacher", color="C7", linestyle="--")
    mean_std_band(ax, ratio, run.values("capacity_student_golden"), label=f"student (width {p.capacity_student_dim})",
                  color="C3")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ratio, [f"{r:g}" for r in ratio])
    ax.set_xlabel("teacher width / student width")
    ax.set_ylabel("golden KL(oracle‖model), nats/symbol")
    ax.set_title("Capacity gap: the same student, teachers of growing width")
    ax.legend(fontsize=8)
    return fig


def plot_cross_tokenizer(run: Run):
    steps = run.values("xtok_steps")[0]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for method, label, color in (("ntp", "next-token on the transfer set", "C7"), ("uld", "ULD (+ next-token)", "C1"),
                                 ("alm", "ALM (distillation only)", "C0")):
        mean_std_band(ax, steps, run.values(f"xtok_{method}_bpc_curve"), label=label, color=color, marker=None)
    ax.axhline(np.mean(run.values("xtok_teacher_bpc")), color="k", linestyle="--", label="BPE teacher")
    ax.axhline(np.mean(run.values("oracle_bits_per_char")), color="k", linestyle=":", label="oracle (entropy rate)")
    ax.set_xlabel("student training step")
    ax.set_ylabel("held-out bits per character")
    ax.set_title("Cross-tokenizer distillation into a character-level student")
    ax.legend(fontsize=8)
    return fig
