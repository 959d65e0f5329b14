"""The chapter's parameters: the oracle language, the models and the four experiments' budgets."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from distillbook.core.params import ChapterParams
from distillbook.methods.kd import DIVERGENCES

CHAPTER = "lm-kd-dynamics"


class Params(ChapterParams):
    # the oracle language (fixed across seeds: it is the test bed)
    language_seed: int = Field(0, ge=0)
    n_states: int = Field(ge=2, le=512)
    vocab_size: int = Field(ge=2, le=26)
    length: int = Field(ge=4, le=256, description="symbols per string")
    branching: int = Field(ge=1, description="successor states per hidden state")
    emissions: int = Field(ge=1, description="symbols each hidden state can emit")
    golden_strings: int = Field(ge=16, description="held-out oracle strings for the golden metric")
    batch_size: int = Field(ge=1, le=4096)
    lr: float = Field(gt=0, le=1)
    # teacher and student of experiments 1-2
    teacher_golden_kl: float = Field(0.2, gt=0, description="the most KL(oracle || teacher), nats/symbol, that the "
                                                            "teacher's reversed states may cost")
    student_dim: int = Field(ge=4)
    student_layers: int = Field(1, ge=1)
    pretrain_strings: int = Field(ge=8, description="oracle strings the student is pre-trained on")
    pretrain_steps: int = Field(ge=1)
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
    capacity_teacher_steps: int = Field(ge=1, description="each teacher's cosine schedule, to convergence")
    capacity_student_dims: list[int] = Field(min_length=1, description="student widths (two test the constant ratio)")
    capacity_steps: int = Field(ge=1)
    # 4. cross-tokenizer
    bpe_vocab: int = Field(ge=8, description="BPE vocabulary of the cross-tokenizer teacher")
    xtok_train_strings: int = Field(ge=8)
    xtok_teacher_dim: int = Field(ge=4)
    xtok_teacher_layers: int = Field(1, ge=1)
    xtok_teacher_steps: int = Field(ge=1)
    xtok_student_dim: int = Field(ge=4)
    xtok_pretrain_strings: int = Field(ge=8, description="oracle strings the character student is pre-trained on")
    xtok_pretrain_steps: int = Field(ge=1)
    xtok_steps: int = Field(ge=1)
    xtok_val_strings: int = Field(ge=8, description="oracle strings that pick ALM's tau and ULD's weight")
    alm_temperatures: list[float] = Field([4.0, 16.0, 64.0], min_length=1,
                                          description="candidate taus of ALM's binarised chunk probabilities")
    uld_weights: list[float] = Field([0.03, 0.1], min_length=1,
                                     description="candidate weights of ULD's term next to cross-entropy")

    PRESETS: ClassVar[dict] = {
        "smoke": dict(seeds=[0, 1], n_states=8, vocab_size=6, length=8, branching=2, emissions=2, golden_strings=32,
                      batch_size=16, lr=3e-3, student_dim=8, pretrain_strings=16, pretrain_steps=4,
                      zoo_divergences=["forward_kl", "reverse_kl", "jsd"], zoo_offline_strings=32, zoo_steps=5,
                      offline_sizes=[4, 16], hacking_steps=12, eval_every=2, capacity_teacher_dims=[8, 16, 32],
                      capacity_teacher_layers=1, capacity_teacher_steps=10, capacity_student_dims=[4, 8],
                      capacity_steps=10, bpe_vocab=16, xtok_train_strings=32, xtok_teacher_dim=16,
                      xtok_teacher_steps=6, xtok_student_dim=8, xtok_pretrain_strings=16, xtok_pretrain_steps=4,
                      xtok_steps=6, xtok_val_strings=16),
        # Costs, one thread on one core (s per seed unless said): student pre-training 2, zoo 6 x 60 steps 4, hacking
        # 6 arms x 450 steps 35 (on-policy twice an offline arm), capacity ladder once per run 60, its 2 x 6
        # students 12, cross-tokenizer 12 students 16. Seeds run two at a time (one per core); the ladder trained
        # per seed would add 120 s of wall time. A run with 600 hacking steps, 300 capacity steps, a 1200-step
        # ladder and 16 cross-tokenizer students took 369 s, over the 300 s budget; these sizes are cut from it.
        "cpu": dict(seeds=[0, 1, 2, 3], n_states=16, vocab_size=12, length=16, branching=3, emissions=3,
                    golden_strings=256, batch_size=32, lr=3e-3, student_dim=32, pretrain_strings=128,
                    pretrain_steps=200, zoo_divergences=list(DIVERGENCES), zoo_offline_strings=256, zoo_steps=60,
                    offline_sizes=[128, 512], hacking_steps=450, eval_every=30,
                    capacity_teacher_dims=[8, 16, 32, 64, 112], capacity_teacher_layers=1, capacity_teacher_steps=1000,
                    capacity_student_dims=[16, 24], capacity_steps=250, bpe_vocab=48, xtok_train_strings=256,
                    xtok_teacher_dim=32, xtok_teacher_steps=300, xtok_student_dim=16, xtok_pretrain_strings=128,
                    xtok_pretrain_steps=150, xtok_steps=150, xtok_val_strings=128),
        # Larger language and models, longer training. Tiny transformers are launch-bound on a GPU (several ms a
        # step, like the CPU), so the budget is counted in steps. Not yet measured there.
        "gpu": dict(seeds=[0, 1, 2, 3], n_states=32, vocab_size=16, length=24, branching=3, emissions=3,
                    golden_strings=1024, batch_size=64, lr=2e-3, student_dim=64,
                    pretrain_strings=256, pretrain_steps=300, zoo_divergences=list(DIVERGENCES),
                    zoo_offline_strings=1024, zoo_steps=250, offline_sizes=[128, 512, 2048], hacking_steps=1200,
                    eval_every=40, capacity_teacher_dims=[16, 32, 64, 128, 256], capacity_teacher_layers=2,
                    capacity_teacher_steps=3000, capacity_student_dims=[16, 32], capacity_steps=800, bpe_vocab=96,
                    xtok_train_strings=512, xtok_teacher_dim=128, xtok_teacher_layers=2, xtok_teacher_steps=1500,
                    xtok_student_dim=32, xtok_pretrain_strings=512, xtok_pretrain_steps=500, xtok_steps=500,
                    xtok_val_strings=512),
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

    @field_validator("student_dim", "capacity_teacher_dims", "capacity_student_dims", "xtok_teacher_dim",
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


def hacking_arms(p: Params) -> list[tuple[str, str, int | None, str]]:
    """(name, regime, offline set size, teacher) of every teacher-hacking run.

    ``oracle{n}`` is the control of ``offline{n}``: the same offline regime and set size with the oracle itself
    as the teacher (its strings, its exact targets, the same sharpness), so a turn-up there is plain overfitting
    of a finite set, not hacking of a teacher's errors.
    """
    return ([(f"offline{n}", "offline", n, "teacher") for n in p.offline_sizes]
            + [(f"oracle{n}", "offline", n, "oracle") for n in p.offline_sizes]
            + [("online", "online", None, "teacher"), ("on_policy", "on_policy", None, "teacher")])
