"""Foundations: classic knowledge distillation (Hinton, Vinyals & Dean, 2015) on sklearn's digits.

A teacher MLP learns from every training label. A small student sees labels
for only ``labelled_per_class`` images per class and learns

- from those labels alone (``label-only``);
- from the teacher's soft targets at temperature T on the same labelled
  images (``soft, labelled only``: Hinton's soft targets as a regulariser);
- from soft targets on the whole training set, labelled and unlabelled
  (``soft, + unlabelled``: the transfer set of the paper);
- from the teacher's arg-max labels on that transfer set (``pseudo-labels``:
  the control that separates soft targets from the labels they imply);
- as ``soft, + unlabelled``, but with one digit removed from everything the
  student sees (``omitted digit``: the paper's missing "3").

Each claim uses a temperature fixed in advance from the paper (no selection
on the data, so no arm wins by being the best of several draws); the
figures show every temperature. Only the omitted digit's bias shift is
chosen, on the validation split, as the paper tuned it.
"""

from distillbook.chapters.foundations import figures
from distillbook.chapters.foundations.claims import (claims, evaluate_claims, glue_values, learning_curves_markdown,
                                                     record_health, summary_markdown)
from distillbook.chapters.foundations.experiment import Bed, build_bed, run_seed
from distillbook.chapters.foundations.params import CHAPTER, Params, ablation_settings, longest_ablation

__all__ = ["CHAPTER", "Bed", "Params", "ablation_settings", "build_bed", "claims", "evaluate_claims", "figures",
           "glue_values", "learning_curves_markdown", "longest_ablation", "record_health", "run_seed",
           "summary_markdown"]
