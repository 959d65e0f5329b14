"""Dataset distillation: a few images per class that train a fresh network.

The cpu profile distils sklearn's digits with MLPs; the gpu profile distils 32x32 procedural ``shapes``
(50 classes) with the ConvNet-3 of the literature (``dataset``, ``architecture``).

- Subsets of real images: random, and herding (greedy: the running mean of the picked images tracks the
  class mean).
- Trajectory matching (MTT) and AST's smoother experts (paper 67): synthetic images and a learnable
  learning rate such that a few SGD steps on them land where an expert trained on real data went. The
  smooth experts carry AST's input-gradient penalty and its clipped-loss ramp.
- INFER (paper 78) against an SRe2L-like per-class synthesis: INFER adds one compensator per anchor
  slot, shared by every class, to real anchors, and stores one soft label per image (static);
  SRe2L synthesises each class from noise and needs the teacher's labels for every augmented batch
  of every step (dynamic). Label storage is counted in bytes.

Every distilled set is judged the same way: fresh networks trained on it by full-batch SGD with momentum
0.9 and an independent random ±``eval_shift``-pixel shift per image and step; the learning rate is
picked per arm on the validation split from ``eval_lrs`` (plus the learned rate for MTT/AST), and the
score is the picked nets' mean test accuracy on held-out real images.

The method code (experts, unroll, matching loss, herding, BN-statistics synthesis, soft labels) is in
:mod:`distillbook.methods.dataset_distillation`.
"""

from distillbook.chapters.dataset_distillation import figures
from distillbook.chapters.dataset_distillation.claims import (claims, evaluate_claims, evaluation_curves_markdown,
                                                              glue_values, matching_loss_markdown, record_health,
                                                              storage_markdown, summary_markdown)
from distillbook.chapters.dataset_distillation.experiment import Bed, build_bed, run_seed
from distillbook.chapters.dataset_distillation.params import CHAPTER, Params

__all__ = ["CHAPTER", "Bed", "Params", "build_bed", "claims", "evaluate_claims", "evaluation_curves_markdown",
           "figures", "glue_values", "matching_loss_markdown", "record_health", "run_seed", "storage_markdown", "summary_markdown"]
