"""Format-constrained decoding: an HMM distilled from LM samples, a format automaton, and their product.

Deco-G (paper 73), after Ctrl-G: the output format is a deterministic finite automaton (DFA) over tokens.
An HMM fitted by EM to samples of the language model approximates the LM's distribution over whole
strings, and so tells how likely a format is to be satisfied from any prefix. At step t,

    p(x_t = v) ∝ p_LM(v | x_<t) * P_HMM(format | x_<t, v),

with P_HMM(format | x_<=t) computed exactly by a backward pass over the product of the HMM's hidden
states and the DFA's states. Hard masking, the baseline, keeps p_LM and zeroes only the tokens from
which the format can no longer be reached.

:func:`decode` appends tokens to prompts, free, under hard masking or under Deco-G.

The HMM is ``testbeds.grammar.HMMLanguage`` (x_t emitted by z_t, then z_{t+1} ~ A[z_t]); its
log-likelihood is cross-checked against ``hmmlearn`` in the tests, and the format probabilities against
brute-force enumeration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distillbook.testbeds.grammar import HMMLanguage

DEAD = -1
METHODS = {
    "format automaton (DFA over tokens)": ("DFA", None),
    "HMM distilled from LM samples (Baum-Welch EM)": ("fit_hmm", 73),
    "format probability under HMM x DFA (backward pass)": ("format_backward", 73),
    "Deco-G next-token reweighting p_LM(v) P_HMM(format | prefix, v)": ("constrained_probs", 73),
    "hard format masking (reachable tokens only)": ("reachable", None),
    "format-constrained decoding (free, hard masking or Deco-G)": ("decode", 73),
}


@dataclass(frozen=True)
class DFA:
    """``transition[s, v]`` is the next state (``DEAD`` rejects for good); ``accepting[s]`` ends a valid string."""

    transition: torch.Tensor  # (S, V) long
    accepting: torch.Tensor   # (S,) bool
    start: int = 0

    @property
    def n_states(self) -> int:
        return self.transition.shape[0]

    def run(self, tokens) -> int:
        state = self.start
        for v in tokens:
            if state == DEAD:
                return DEAD
            state = int(self.transition[state, int(v)])
        return state

    def accepts(self, tokens) -> bool:
        state = self.run(tokens)
        return state != DEAD and bool(self.accepting[state])


def fit_hmm(x: torch.Tensor, n_states: int, vocab_size: int, iterations: int, generator: torch.Generator,
            smoothing: float = 1e-3) -> tuple[HMMLanguage, list[float]]:
    """Baum-Welch on token strings ``x`` (n, T); returns the HMM and the data's mean log-likelihood under the
    parameters each iteration starts from (so the returned HMM's own likelihood is one step beyond the list).

    Scaled forward-backward in float64; ``smoothing`` is added to the expected counts so that every
    transition and emission keeps positive probability (the format probabilities then never vanish by
    accident).
    """
    if x.ndim != 2 or x.min() < 0 or x.max() >= vocab_size:
        raise ValueError(f"x must be (n, T) token ids in [0, {vocab_size})")
    n, length = x.shape

    def normalise(t):
        return t / t.sum(-1, keepdim=True)

    initial = normalise(torch.rand(n_states, generator=generator, dtype=torch.float64) + 0.5)
    transition = normalise(torch.rand(n_states, n_states, generator=generator, dtype=torch.float64) + 0.5)
    emission = normalise(torch.rand(n_states, vocab_size, generator=generator, dtype=torch.float64) + 0.5)
    history = []
    for _ in range(iterations):
        b = emission[:, x].permute(1, 2, 0)                                    # (n, T, K) = B[k, x_t]
        alpha = torch.empty(n, length, n_states, dtype=torch.float64)
        scale = torch.empty(n, length, dtype=torch.float64)
        a = initial * b[:, 0]
        for t in range(length):
            if t > 0:
                a = (alpha[:, t - 1] @ transition) * b[:, t]
            scale[:, t] = a.sum(1)
            alpha[:, t] = a / scale[:, t, None]
        beta = torch.ones(n, length, n_states, dtype=torch.float64)
        for t in range(length - 2, -1, -1):
            beta[:, t] = ((b[:, t + 1] * beta[:, t + 1]) @ transition.T) / scale[:, t + 1, None]
        history.append(scale.log().sum(1).mean().item())
        gamma = alpha * beta                                                    # P(z_t | x)
        # xi_t(k, k') = alpha_t(k) A[k, k'] B[k', x_{t+1}] beta_{t+1}(k') / scale_{t+1}
        xi = (alpha[:, :-1, :, None] * transition[None, None] * (b[:, 1:] * beta[:, 1:])[:, :, None, :]
              / scale[:, 1:, None, None]).sum((0, 1))
        initial = normalise(gamma[:, 0].sum(0) + smoothing)
        transition = normalise(xi + smoothing)
        counts = torch.zeros(n_states, vocab_size, dtype=torch.float64)
        counts.index_add_(1, x.reshape(-1), gamma.reshape(-1, n_states).T)
        emission = normalise(counts + smoothing)
    return HMMLanguage(initial, transition, emission, length), history


def format_backward(hmm: HMMLanguage, dfa: DFA, length: int) -> torch.Tensor:
    """beta[t, k, s] = P(x_t .. x_{length-1} drive the DFA from s to acceptance | z_t = k), (length + 1, K, S).

    beta[length, k, s] = accepting[s]; beta[t, k, s] = sum_v B[k, v] sum_k' A[k, k'] beta[t+1, k', delta(s, v)],
    the sum over k' replaced by beta[length] itself at the last position. The dead state contributes 0.
    """
    K, S, V = hmm.n_states, dfa.n_states, hmm.vocab_size
    beta = torch.zeros(length + 1, K, S, dtype=torch.float64)
    beta[length] = dfa.accepting.double()[None].expand(K, S)
    nxt = dfa.transition                                                        # (S, V)
    alive = (nxt != DEAD).double()
    safe = nxt.clamp_min(0)
    for t in range(length - 1, -1, -1):
        # given z_t, before x_{t+1}: sum_k' A[k, k'] beta[t+1, k', s] (at t + 1 = length, beta[length] is the same for
        # every k', and A's rows sum to 1, so the same formula holds)
        after = hmm.transition @ beta[t + 1]                                    # (K, S)
        # value of emitting v from z_t = k in DFA state s: after[k, delta(s, v)]
        reach = after[:, safe] * alive[None]                                    # (K, S, V)
        beta[t] = (reach * hmm.emission[:, None, :]).sum(-1)
    return beta


def format_weights(hmm: HMMLanguage, dfa: DFA, beta: torch.Tensor, prefix: torch.Tensor,
                   context: torch.Tensor | None = None) -> torch.Tensor:
    """P_HMM(format | context, prefix, x_t = v) for every v (V,), with t = len(prefix) the position in the formatted
    part. ``context`` (the prompt) is read by the HMM before the prefix but is not under the format: an HMM fitted
    on prompt + answer strings then knows what the prompt asks for (the instruction-aware HMM)."""
    t, length = len(prefix), beta.shape[0] - 1
    if t >= length:
        raise ValueError(f"prefix of {t} tokens leaves nothing to decode in a string of {length}")
    belief = hmm.initial.clone()
    read = prefix.tolist() if context is None else context.tolist() + prefix.tolist()
    for v in read:
        joint = belief * hmm.emission[:, v]
        belief = (joint / joint.sum()) @ hmm.transition
    state = dfa.run(prefix.tolist())
    if state == DEAD:
        return torch.zeros(hmm.vocab_size, dtype=torch.float64)
    after = hmm.transition @ beta[t + 1]                                       # (K, S)
    nxt = dfa.transition[state]                                                 # (V,)
    reach = after[:, nxt.clamp_min(0)] * (nxt != DEAD).double()[None]           # (K, V)
    joint = belief[:, None] * hmm.emission                                     # P(z_t = k, x_t = v | prefix)
    return (joint * reach).sum(0) / joint.sum(0).clamp_min(1e-300)


def reachable(dfa: DFA, length: int) -> torch.Tensor:
    """ok[t, s]: from DFA state s with length - t tokens left, some continuation is accepted (hard masking)."""
    ok = torch.zeros(length + 1, dfa.n_states, dtype=torch.bool)
    ok[length] = dfa.accepting
    nxt, alive = dfa.transition.clamp_min(0), dfa.transition != DEAD
    for t in range(length - 1, -1, -1):
        ok[t] = (ok[t + 1][nxt] & alive).any(dim=1)
    return ok


def constrained_probs(lm_probs: torch.Tensor, prefix: torch.Tensor, dfa: DFA, length: int, *,
                      hmm: HMMLanguage | None = None, beta: torch.Tensor | None = None,
                      ok: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
    """The next-token distribution under the format: Deco-G with ``hmm`` (``beta`` from :func:`format_backward`,
    computed when not given; ``context``: tokens the HMM reads before ``prefix``), else hard masking (``ok`` from
    :func:`reachable`, likewise)."""
    t = len(prefix)
    state = dfa.run(prefix.tolist())
    if state == DEAD:
        raise ValueError(f"the prefix {prefix.tolist()} already breaks the format")
    if hmm is not None:
        weights = format_weights(hmm, dfa, format_backward(hmm, dfa, length) if beta is None else beta, prefix,
                                 context)
    else:
        if ok is None:
            ok = reachable(dfa, length)
        nxt = dfa.transition[state]
        weights = ((nxt != DEAD) & ok[t + 1][nxt.clamp_min(0)]).double()
    # p(x_t = v) ∝ p_LM(v | x_<t) * weight(v)
    p = lm_probs.double() * weights
    if p.sum() <= 0:
        raise ValueError("no token keeps the format reachable from this prefix")
    return p / p.sum()


@torch.no_grad()
def decode(next_probs: Callable[[torch.Tensor], torch.Tensor], prompts: torch.Tensor, new_tokens: int,
           generator: torch.Generator | None = None, *, dfa: DFA | None = None, hmm: HMMLanguage | None = None,
           beta: torch.Tensor | None = None, ok: torch.Tensor | None = None, greedy: bool = False,
           hmm_reads_prompt: bool = False) -> torch.Tensor:
    """Append ``new_tokens`` tokens to every row of ``prompts`` (n, P) and return the rows (n, P + new_tokens).

    ``next_probs(x)`` gives the LM's next-token probabilities after each row of x, (n, V). Tokens are sampled
    with ``generator``, or taken by arg-max when ``greedy``. Without ``dfa`` the LM decodes freely; with it the
    new tokens follow the format, through :func:`constrained_probs`: Deco-G with ``hmm`` (and ``beta``), else
    hard masking (``ok``). ``hmm_reads_prompt``: the HMM (fitted on prompt + answer strings) reads each row's prompt
    before its answer, so its format probabilities depend on what the prompt asks for.
    """
    x = prompts.clone()
    start = prompts.shape[1]
    for _ in range(new_tokens):
        probs = next_probs(x)
        if dfa is not None:
            probs = torch.stack([constrained_probs(pr, row[start:], dfa, new_tokens, hmm=hmm, beta=beta, ok=ok,
                                                   context=row[:start] if hmm_reads_prompt else None)
                                 for pr, row in zip(probs, x)])
        nxt = probs.argmax(-1, keepdim=True) if greedy else torch.multinomial(probs, 1, generator=generator)
        x = torch.cat([x, nxt], 1)
    return x
