"""How language-model distillation behaves: divergences, teacher hacking, the capacity gap, cross-tokenizer.

Everything runs on the ``grammar`` test bed's sparse HMM language, whose exact
next-token distribution makes the *golden* metric, KL(oracle || student),
exact at every position of a fixed set of held-out oracle strings. The
*proxy* metric is KL(teacher || student) on the teacher's own samples.

1. Divergence zoo: one student per divergence of ``methods/kd.py``, same data.
2. Teacher hacking (paper 43): oracle -> imperfect teacher -> student, with
   offline (fixed), online (fresh teacher samples) and on-policy data.
3. Capacity gap (paper 76): one student, teachers of growing width.
4. Cross-tokenizer (paper 70): a BPE teacher, a character student; next-token
   training, ULD and approximate likelihood matching (ALM).
"""

from distillbook.chapters.lm_kd_dynamics import figures
from distillbook.chapters.lm_kd_dynamics.claims import (KL_MARGIN, U_MARGIN, claims, evaluate_claims, glue_values,
                                                        proxy_fall_after_golden_minimum, record_health,
                                                        relative_u_depth, summary_markdown)
from distillbook.chapters.lm_kd_dynamics.experiment import (Bed, build_bed, oracle_targets, run_seed,
                                                            symbol_logits)
from distillbook.chapters.lm_kd_dynamics.params import CHAPTER, Params, hacking_arms

__all__ = ["CHAPTER", "KL_MARGIN", "U_MARGIN", "Bed", "Params", "build_bed", "claims", "evaluate_claims", "figures",
           "glue_values", "hacking_arms", "oracle_targets", "proxy_fall_after_golden_minimum", "record_health",
           "relative_u_depth", "run_seed", "summary_markdown", "symbol_logits"]
