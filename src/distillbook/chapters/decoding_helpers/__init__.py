"""Distilled helpers for fast decoding: DistillSpec (79), SwiftKV (28), dParallel (36), Deco-G (73).

Four small systems, each trained from scratch:

1. **DistillSpec** on the ``grammar`` HMM language: a 2-layer GPT-2 target and a 1-layer draft. The draft
   is pre-trained on data, then trained further either on data (the undistilled control) or by
   distillation with forward KL on data (offline), or with TVD / JSD on its own samples (on-policy).
   The acceptance rate alpha = E sum_v min(p, q) is measured on the target's samples; the block
   efficiency at ``gamma`` both from alpha and by running speculative sampling (``methods/speculative.py``).
2. **SwiftKV** on the same language: a 6-layer Llama whose first ``kv_local`` layers attend to their own
   position only, so that prompt tokens are mixed in the later layers. Rewiring (later layers read
   the prompt's KV from layer k) is compared with rewiring plus distillation of the later layers'
   q/k/v projections (T^2 KL at T = 2). Quality: agreement of the model's arg-max with the oracle's
   next token after the prompt; cost: prefill FLOPs.
3. **dParallel** on "write any permutation of these digits": a bidirectional masked-diffusion model
   (BERT config) is genuinely uncertain about which digit goes where, so threshold decoding unmasks
   about one token per step. On its own correct trajectories it is fine-tuned with CE alone or with
   CE + entropy (certainty forcing).
4. **Deco-G** on "a + b =" with answers in three formats, one of them the required one: an HMM fitted by
   EM to the LM's samples and the format's DFA reweight the LM's next tokens, against hard masking.

The target, SwiftKV and dParallel base models are trained once per run (first seed); the seeds vary
everything trained after them and every evaluation draw.

``params`` holds the parameters, ``experiment`` the tasks, beds and arms, ``claims`` the claims and every text
built from the run's numbers, ``figures`` the plots; the methods live in ``distillbook.methods``
(``speculative``, ``swiftkv``, ``masked_diffusion``, ``constrained``).
"""

from . import figures
from .claims import (claims, evaluate_claims, glue_values, record_health, setup_facts, setup_facts_markdown,
                     summary_markdown)
from .experiment import build_bed, run_seed
from .params import CHAPTER, Params

__all__ = ["CHAPTER", "Params", "build_bed", "claims", "evaluate_claims", "figures", "glue_values", "record_health",
           "run_seed", "setup_facts", "setup_facts_markdown", "summary_markdown"]
