"""One-step diffusion distillation by distribution matching: DMD2 (50), SwiftBrush (19), SiD (58), SIM (86).

A teacher diffusion model is trained from scratch; a one-step generator, initialised as a copy of the
teacher that reads pure noise as if it were x_t at ``generator_timestep``, is then trained *without data* so that its samples' diffused
distribution matches the teacher's. A *fake* denoiser, also initialised from the teacher, is fitted
online to the generator's samples; the generator's update comes from the two denoisers' disagreement
(``methods/distribution_matching.py``).

Three test beds:

- ``grid2d``: 25 Gaussians on a 5x5 grid whose 4 corners are rare, with an MLP teacher trained to near the
  exact-score oracle. DMD with one fake update per generator update against DMD2's two-time-scale rule
  (``ttur_ratio`` fake updates per generator update): stability, rare modes, recall, and DMD2 against the
  teacher's few- and many-step samplers. Metrics: sliced Wasserstein distance (SW) to data, modes covered,
  precision and recall.
- ``ring2d``: 8 Gaussians on a circle. SiD and SIM at two learning rates from a near-oracle teacher; DMD2 with
  and without its GAN term (the only arm that sees data) from a deliberately under-trained twin.
- ``digits``: 8x8 class-conditional digits with an MLP teacher (diffusers' ``UNet2DModel`` at gpu) and
  classifier-free guidance. SwiftBrush (VSD with a LoRA fake score) and its SDS ablation; SiD with
  CFG, Zero-CFG and Anti-CFG. Metrics on the features of a digit classifier trained here: Fréchet
  distance to real digits (cFID), class accuracy of conditional samples, precision and recall.

One teacher per test bed and run (trained with the first seed), as the papers distil one given teacher;
the seeds vary the students, their data streams and the evaluation noise. Students are evaluated through
an EMA of the generator's weights, as in the papers' code.
"""

from distillbook.chapters.dmd_one_step import figures
from distillbook.chapters.dmd_one_step.claims import (claims, evaluate_claims, few_steps, glue_values,
                                                      measurements_markdown, record_health, summary_markdown)
from distillbook.chapters.dmd_one_step.experiment import Bed, build_bed, run_seed
from distillbook.chapters.dmd_one_step.params import CHAPTER, Params

__all__ = ["CHAPTER", "Bed", "Params", "build_bed", "claims", "evaluate_claims", "few_steps", "figures", "glue_values",
           "measurements_markdown", "record_health", "run_seed", "summary_markdown"]
