"""Score distillation for 3-D, the gradient fixes: VSD (60), ESD (14), Consistent3D (49), PlacidDreamer (68),
TV-3DG (12), ScaleDreamer (15).

A 2-D diffusion prior, trained here on renders of the ``voxel3d`` scenes, is the only source of 3-D knowledge.
A voxel grid is optimised so that its renders from random cameras look likely to the prior: each render x is
diffused, the prior's noise predictions give an image-space gradient g, and g flows into the grid through the
differentiable renderer. Every method's gradient, VSD's fake-score fit and the surrogate loss are in
:mod:`distillbook.methods.score_distillation`; this package holds the experiment (``params``, ``experiment``,
``claims``, ``figures``).

- **The prior** is a denoiser over flat 16x16 renders (an MLP at cpu, diffusers' ``UNet2DModel`` at gpu),
  conditioned on a prompt and on DreamFusion's view word (front / side / back / none), with a null label
  for classifier-free guidance. Prompts name a shape and a colour ("a green cube"), only a shape ("a cube",
  trained on every colour), or one of two Janus probes whose front differs from their back. Its training
  views are front-biased, as web photos are: that bias is what makes Janus objects.
- **Single objects.** SDS at low and high guidance, SDS without the view word, VSD (one particle, and several
  particles for diversity and for the Janus diagnosis) with a fake score (a copy of the prior fine-tuned
  online, camera-conditioned by the view word), ESD (the fake score guided over the camera), CDS (fixed noise,
  one ODE step), BSD (min-norm mix of the classifier and denoising terms), CSD (the classifier term alone) and
  CSM (the classifier term at DDIM-inverted noise); beside a reconstruction from ground-truth renders (the
  ceiling). Which objects, probes and arms a profile runs is in its parameters (the `cpu` profile drops arms,
  never steps, to hold its time budget).
- **Amortised.** A prompt -> grid generator trained by ASD or by VSD with a shared fake score, on 4 and on
  16 prompts (ScaleDreamer's scaling claim).

Seeds vary the grids' initialisation, the cameras, the noise and the fake scores; the prior is trained once
per run with the first seed, as the papers distil one given prior.

Claims are judged per object (and per Janus probe): a verdict holds only if every object agrees. PSNR arms are
read off their optimisation curves (the mean of the last ``CURVE_WINDOW`` evaluations, with the convergence
rule), against the reconstruction from ground-truth renders as their ceiling; chroma lies in [0, 1].
"""

from distillbook.chapters.sds_3d_gradients import figures
from distillbook.chapters.sds_3d_gradients.claims import (claims, evaluate_claims, fidelity_caption, glue_values,
                                                          record_health, scope_markdown, summary_markdown,
                                                          tables_markdown)
from distillbook.chapters.sds_3d_gradients.experiment import Bed, build_bed, run_seed
from distillbook.chapters.sds_3d_gradients.params import CHAPTER, Params

__all__ = ["CHAPTER", "Bed", "Params", "build_bed", "claims", "evaluate_claims", "fidelity_caption", "figures",
           "glue_values", "record_health", "run_seed", "scope_markdown", "summary_markdown", "tables_markdown"]
