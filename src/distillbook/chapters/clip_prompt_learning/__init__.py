"""Prompt learning for CLIP-style models: CoOp, PromptSRC (41), BiomedCoOp (16), with the survey (34) as the map.

A tiny CLIP (transformers' ``CLIPModel`` from config) is pretrained contrastively in the chapter on the
``captioned`` test bed: mostly "photos", with a small share of "sketches" and "scans" whose captions usually
name their style. Prompts are then learned on a frozen CLIP from a few labelled images of the *base* classes of
a shifted domain and evaluated on base and on *novel* classes (never seen in prompt training):

1. Forgetting, on two splits side by side: zero-shot (one template, a template ensemble) and CoOp at 16 shots
   (sketch) on the ``checkerboard`` split (novel classes recombine base shapes and colours) and on the
   ``halves`` split (novel classes carry shapes no base class has).
2. PromptSRC against IVLP (deep vision and text prompts) on the halves split, with GPA's aggregate against the
   same training's last prompts, and a diagnosis with the L1 weights rescaled to the feature width.
3. BiomedCoOp on the halves split's medical-like domain: CoOp, and BiomedCoOp with and without outlier pruning
   at the paper's weight and a pre-registered sweep, with a share of wrong descriptions (of shapes and colours
   no class has) and a control without them.

Each learner trains for its paper's recipe (CoOp's epochs by shot count at batch 32; PromptSRC's 20 epochs at
batch 4), a learning rate that decays to zero by a cosine. Every prompt learner is evaluated on the base and novel test sets ``prompt_evals`` times during training; the
claims read those curves (the mean of the last evaluations, and whether they still move), not the last step.
The chapter also records what tests its explanations (the loss parts, the context's drift from its initial
words, GPA's distance from the last prompts, how selectively pruning removes the wrong descriptions) and a
test-bed health reference per domain: a prototype classifier (each base class's mean image feature from labelled target images) on the frozen features.

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
