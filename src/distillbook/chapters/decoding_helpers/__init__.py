"""Distilled helpers for fast decoding: DistillSpec (79), SwiftKV (28), dParallel (36), Deco-G (73).

Four small systems, each trained from scratch by every seed (the target, the SwiftKV base, the masked-diffusion
base and the Deco-G language model included, so the intervals carry their variance):

1. **DistillSpec** on the ``grammar`` HMM language: a 2-layer GPT-2 target and a 1-layer draft. The draft
   is pre-trained on data, then trained further for the same number of steps either on data (the undistilled
   control) or by distillation: forward KL on data (offline), forward KL on its own samples (on-policy) and TVD
   on its own samples, so that each compared pair changes one thing. The acceptance rate
   alpha = E sum_v min(p, q) is measured on the target's samples during training; the block efficiency at
   ``gamma`` both from alpha and by running speculative sampling (``methods/speculative.py``).
2. **SwiftKV** on the same language: a Llama whose first ``kv_local`` layers attend to their own position
   only, so that prompt tokens are mixed in the later layers. Rewiring (later layers read the prompt's KV from
   layer ``kv_k``) is compared with rewiring plus distillation of the later layers' q/k/v projections
   (T^2 KL at T = 2), evaluated as it trains. Quality: agreement of the model's arg-max with the oracle's
   next token after the prompt; cost: prefill FLOPs (a configuration constant, stated in prose).
3. **dParallel** on "write these digits reversed, each mapped to 3d + 1 mod 10": a bidirectional
   masked-diffusion model (BERT config) trained on answers whose token noise grows along the answer, so it is
   right by arg-max but unsure, and threshold decoding unmasks few tokens per step. On its own correct answers
   it is fine-tuned with CE alone or with CE + entropy (certainty forcing), at the same budget.
4. **Deco-G** on "write the digit d, n times" (n in {1, 2}) in a format of ``A``, fillers, digits, ``.``
   within a 5-token budget: the instructed LM prefers two leading fillers, which the format allows but which
   leave no room for a second digit. An HMM fitted by EM to the LM's prompts and answers and the format's DFA
   reweight the LM's next tokens, against hard masking, prompting alone and an answer-only HMM. Every distinct
   prompt (20) is decoded greedily and scored once.

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
