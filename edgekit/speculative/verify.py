"""Speculative decoding's acceptance rule (Leviathan et al. 2023; Chen et al. 2023), as pure functions.

A draft proposes k tokens; the verifier scores all of them in one forward pass, which gives its distribution at
each of the k positions and one more. Greedy: the draft's tokens are kept while they are the verifier's argmax,
and the first one that is not is replaced by the verifier's argmax, so the output is the verifier's greedy output.
Sampled: draft token x at a position is kept with probability min(1, p(x) / q(x)) (p the verifier's, q the draft's
distribution there); the first rejected one is replaced by a draw from norm(max(0, p - q)). Each position's output
is then distributed exactly as p, whatever the draft proposes. Either way, when all k are kept the verifier's
distribution at the position after them gives one more token for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """What one round adds: `accepted` draft tokens kept, then `extra` (the verifier's correction or bonus)."""

    accepted: int
    extra: int

    def tokens(self, draft: list[int]) -> list[int]:
        return [*draft[: self.accepted], self.extra]


def verify_greedy(draft: list[int], target_logits: Any) -> Verdict:
    """`target_logits` [len(draft) + 1, vocab]: the verifier's logits after the pending token and each draft
    token. Keep the longest prefix of the draft the verifier would have picked itself."""
    import torch

    best = torch.argmax(target_logits, dim=-1).tolist()
    n = 0
    while n < len(draft) and draft[n] == best[n]:
        n += 1
    return Verdict(n, int(best[n]))


def verify_sampled(draft: list[int], draft_probs: Any, target_probs: Any, generator: Any = None) -> Verdict:
    """`draft_probs` [k, vocab]: the distributions the draft tokens were drawn from; `target_probs` [k + 1,
    vocab]: the verifier's at the same positions and one more. Standard rejection sampling: the result is
    distributed as the verifier's own sampling (same temperature and top-p applied to both)."""
    import torch

    for i, token in enumerate(draft):
        p, q = float(target_probs[i, token]), float(draft_probs[i, token])
        u = float(torch.rand((), generator=generator))
        if q > 0 and u < min(1.0, p / q):
            continue
        residual = torch.clamp(target_probs[i] - draft_probs[i], min=0.0)
        total = float(residual.sum())
        # p == q everywhere leaves nothing to draw from; then p itself is the right distribution
        weights = residual / total if total > 0 else target_probs[i]
        return Verdict(i, int(torch.multinomial(weights, 1, generator=generator)))
    return Verdict(len(draft), int(torch.multinomial(target_probs[len(draft)], 1, generator=generator)))
