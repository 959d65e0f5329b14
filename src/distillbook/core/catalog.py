"""The book's map: parts, chapters and the 87 papers (``data/papers.tsv``).

A chapter is *written* when ``notebooks/<id>.ipynb`` exists; otherwise it is
*planned*. The foundations chapter sits before the parts and reproduces a
classic paper that is not one of the 87.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache

from distillbook.core.paths import NOTEBOOKS_DIR, PACKAGE_DIR


@dataclass(frozen=True)
class Part:
    letter: str
    title: str


@dataclass(frozen=True)
class Chapter:
    id: str
    part: str  # a Part letter, or "" for the foundations chapter
    title: str

    @property
    def notebook(self):
        return NOTEBOOKS_DIR / f"{self.id}.ipynb"

    @property
    def written(self) -> bool:
        return self.notebook.exists()

    @property
    def papers(self) -> list[int]:
        return [p.number for p in papers() if p.chapter == self.id]


@dataclass(frozen=True)
class Paper:
    number: int
    title: str
    date: str
    chapter: str


PARTS = (
    Part("A", "Language models"),
    Part("B", "Reasoning and agents"),
    Part("C", "Prompts and context"),
    Part("D", "Vision-language models"),
    Part("E", "Vision backbones"),
    Part("F", "Data"),
    Part("G", "Diffusion"),
    Part("H", "3D"),
    Part("I", "Prompted diffusion"),
)

CHAPTERS = (
    Chapter("foundations", "", "Foundations: knowledge distillation on digits"),
    Chapter("lm-kd-dynamics", "A", "How LM distillation behaves"),
    Chapter("feature-kd", "A", "Feature and privileged-information distillation"),
    Chapter("teacher-choice", "A", "Choosing teachers and distilling scores"),
    Chapter("decoding-helpers", "A", "Distilled helpers for fast decoding"),
    Chapter("reasoning-traces", "B", "Which reasoning traces to distill"),
    Chapter("negative-traces-rl", "B", "Negative traces and RL after distillation"),
    Chapter("tools-agents", "B", "Distilling programs, tools and agents"),
    Chapter("prompt-compression", "C", "Prompt compression and in-context distillation"),
    Chapter("soft-prompt-transfer", "C", "Soft-prompt transfer through distillation"),
    Chapter("prompt-optimization", "C", "Prompt optimization"),
    Chapter("guard-distillation", "C", "Guard-model distillation with data augmentation"),
    Chapter("clip-prompt-learning", "D", "Prompt learning for CLIP-style models"),
    Chapter("clip-prompt-distillation", "D", "Prompt distillation and frozen text teachers"),
    Chapter("mllm-distillation", "D", "Distilling multimodal LLMs"),
    Chapter("sam-distillation", "E", "Compressing segment-anything models"),
    Chapter("foundation-refinement", "E", "Refining task models with foundation models"),
    Chapter("backbone-distillation", "E", "Backbone distillation: teachers, labels, student choice"),
    Chapter("embedding-distillation", "E", "What to distill: embeddings and relations"),
    Chapter("dataset-distillation", "F", "Dataset distillation"),
    Chapter("dmd-one-step", "G", "One-step distillation by distribution matching"),
    Chapter("dmd-fixes", "G", "Fixing distribution matching"),
    Chapter("few-step-matching", "G", "Few-step and preference-aligned distribution matching"),
    Chapter("consistency-distillation", "G", "Trajectory, consistency and sampler distillation"),
    Chapter("sds-3d-gradients", "H", "Score distillation for 3D I: fixing the SDS gradient"),
    Chapter("sds-3d-priors", "H", "Score distillation for 3D II: image prompts, rewards, editing, video"),
    Chapter("prompted-diffusion", "I", "Controllable, prompted and inverted diffusion"),
)


@cache
def papers() -> tuple[Paper, ...]:
    with open(PACKAGE_DIR / "data" / "papers.tsv", newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t")
        return tuple(Paper(int(r["n"]), r["title"], r["date"], r["chapter"]) for r in rows)


def chapter(chapter_id: str) -> Chapter:
    """The chapter with this id; a clear error listing the ids otherwise."""
    for c in CHAPTERS:
        if c.id == chapter_id:
            return c
    known = ", ".join(c.id for c in CHAPTERS)
    raise ValueError(f"unknown chapter {chapter_id!r}; known chapters: {known}")


def written_chapters() -> list[Chapter]:
    return [c for c in CHAPTERS if c.written]

