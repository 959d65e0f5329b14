"""Foundations: classic knowledge distillation (Hinton, Vinyals & Dean, 2015) on sklearn's digits.

A small ConvNet teacher learns from every training label on jittered inputs (regularised, as the paper's
MNIST teacher was, in ways its students are not). Two unregularised students learn from it, each group trained as one vmapped stack:

- the **wide** student on every training label, alone or with soft targets at three temperatures: the
  paper's headline comparison (146 → 74 MNIST errors) and its "temperatures above 8 are alike"; and,
  with one digit removed from everything it sees, the paper's missing "3";
- the **small** student (the paper's 2×30 net) on every label at every temperature of a sweep (its
  "T in 2.5–4 works best for small nets"); and on a few labels per class alone, with soft targets on them
  (the regulariser of the paper's Table 5), or with the teacher's soft or arg-max targets on every
  training image (semi-supervised transfer, and the control that separates soft targets from the labels
  they imply).

Each claim uses a temperature fixed in advance from the paper (no selection on the data, so no arm
wins by being the best of several draws); the figures show every temperature. Only the omitted digit's
bias shift is chosen, on the validation split, as the paper tuned it. Every seed redraws the test split.
"""

from distillbook.chapters.foundations import figures
from distillbook.chapters.foundations.claims import (claims, evaluate_claims, glue_values, learning_curves_markdown,
                                                     record_health, resolution_markdown, summary_markdown)
from distillbook.chapters.foundations.experiment import Bed, build_bed, run_seed
from distillbook.chapters.foundations.params import CHAPTER, Params

__all__ = ["CHAPTER", "Bed", "Params", "build_bed", "claims", "evaluate_claims", "figures", "glue_values",
           "learning_curves_markdown", "record_health", "resolution_markdown", "run_seed", "summary_markdown"]
