"""One-step diffusion distillation by distribution matching: DMD2 (50), SwiftBrush (19), SiD (58), SIM (86).

A teacher diffusion model is trained from scratch; a one-step generator, initialised as a copy of the
teacher that reads pure noise as if it were x_t at ``generator_timestep``, is then trained *without data* so that its samples' diffused
distribution matches the teacher's. A *fake* denoiser, also initialised from the teacher, is fitted
online to the generator's samples; the generator's update comes from the two denoisers' disagreement
(``methods/distribution_matching.py``).

Two test beds:

- ``ring2d``: 8 Gaussians on a circle with a deliberately under-trained MLP teacher. DMD with one fake
  update per generator update, DMD2's two-time-scale rule (``ttur_ratio`` fake updates per generator
  update), DMD2 with its GAN term (the only arm that sees data), SiD and SIM; then DMD, SiD and SIM
  (all one fake update per generator update) again at ``lr_multiplier`` times the learning rates. Metrics: sliced Wasserstein distance (SW) to fresh
  data and modes covered.
- ``digits``: 8x8 class-conditional digits with an MLP teacher (diffusers' ``UNet2DModel`` at gpu) and
  classifier-free guidance. SwiftBrush (VSD with a LoRA fake score) and its SDS ablation; SiD with
  CFG, Zero-CFG and Anti-CFG, and a 4-step SiD generator. Metrics on the features of a digit
  classifier trained here: Fréchet distance to real digits (cFID), class accuracy of conditional
  samples, precision and recall.

One teacher per test bed and run (trained with the first seed), as the papers distil one given teacher;
the seeds vary the students, their data streams and the evaluation noise. Students are evaluated through
an EMA of the generator's weights, as in the papers' code.
"""

from distillbook.chapters.dmd_one_step import figures
from distillbook.chapters.dmd_one_step.claims import (claims, evaluate_claims, glue_values, measurements_markdown,
                                                      record_health, summary_markdown)
from distillbook.chapters.dmd_one_step.experiment import Bed, build_bed, run_seed
from distillbook.chapters.dmd_one_step.params import CHAPTER, Params

__all__ = ["CHAPTER", "Bed", "Params", "build_bed", "claims", "evaluate_claims", "figures", "glue_values",
           "measurements_markdown", "record_health", "run_seed", "summary_markdown"]
