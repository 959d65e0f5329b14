"""Prompt learning for CLIP-style models: CoOp, PromptSRC (41), BiomedCoOp (16), with the survey (34) as the map.

A tiny CLIP (transformers' ``CLIPModel`` from config) is pretrained contrastively in the chapter on the
``captioned`` test bed: mostly "photos", with a small share of "sketches" and "scans" whose captions usually
name their style. Prompts are then learned on a frozen CLIP from a few labelled images of the *base* classes of
a shifted domain and evaluated on base and on *novel* classes (never seen in prompt training):

1. Zero-shot with one hand-written template, with a template ensemble, and CoOp at 1, 4 and 16 shots (sketch).
2. PromptSRC built up from IVLP (deep vision and text prompts) one component at a time: the L1 feature terms,
   the KL term to the zero-shot logits, Gaussian prompt aggregation (sketch, 16 shots).
3. BiomedCoOp on the medical-like domain: CoOp, CoOp + the ensemble MSE, BiomedCoOp without and with outlier
   pruning, at 1, 4 and 16 shots, with a share of deliberately wrong descriptions, and a control without them.
4. A diagnosis on the ``halves`` split (novel classes with shapes no base class has): zero-shot, CoOp, IVLP and
   PromptSRC at the largest shot count, where forgetting novel classes is possible.

Every prompt learner is evaluated on the base and novel test sets ``prompt_evals`` times during training; the
claims read those curves (the mean of the last evaluations, and whether they still move), not the last step.
The chapter also records what tests its explanations (the loss parts, GPA's distance from the last prompts,
how selectively pruning removes the wrong descriptions) and a test-bed health reference per domain: a
prototype classifier (each base class's mean image feature from labelled target images) on the frozen features.

The CLIP is pretrained once per run with the first seed (the papers adapt one given CLIP); the seeds vary the
few-shot sets, prompt initialisation and batches, and the test images.

Modules: ``params`` (``Params``), ``experiment`` (the bed, test sets and arms of one seed), ``claims`` (claims,
verdicts, health, glued numbers, generated text), ``figures``. The methods (CoOp, IVLP, PromptSRC with GPA,
BiomedCoOp, and their training recipe) live in :mod:`distillbook.methods.prompt_learning`; the tiny CLIP in
:mod:`distillbook.models.clip`; the test bed in :mod:`distillbook.testbeds.captioned`.
"""

from distillbook.chapters.clip_prompt_learning import figures
from distillbook.chapters.clip_prompt_learning.claims import (claims, evaluate_claims, glue_values, nearest_words,
                                                              reading_markdown, record_health, summary_markdown)
from distillbook.chapters.clip_prompt_learning.experiment import build_bed, run_seed
from distillbook.chapters.clip_prompt_learning.params import CHAPTER, Params

__all__ = ["CHAPTER", "Params", "build_bed", "claims", "evaluate_claims", "figures", "glue_values", "nearest_words",
           "reading_markdown", "record_health", "run_seed", "summary_markdown"]
