"""Depth selection: AmoebaLLM's dynamic programme over layers, and the layer-dropping baselines.

DP (scanning from the deepest layer towards the first): d[n][m] is the best calibration score when
the last n layers have been considered and m of them removed, S[n][m] its removed set. The candidate
for (n, m) is S[n-1][m-1] plus layer L-n; it replaces S[n-1][m] if it scores better. Every candidate
keeps all layers before L-n, so the hidden states entering layer L-n are the full model's and are
computed once: a scorer call only runs the changed suffix.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from edgekit.elastic.model import ElasticModel

DEPTH_METHODS = ("amoeba", "shortgpt", "angular", "last")
SCORERS = ("ppl", "angular", "block-influence")


@dataclass
class DepthPlan:
    layer_sets: dict[int, list[int]]
    scores: dict[int, float]
    method: str
    scorer: str
    scorer_calls: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Calibration:
    """The full model's hidden states entering every layer on the calibration tokens, computed once."""

    def __init__(self, model: ElasticModel, ids: torch.Tensor) -> None:
        self.model, self.ids = model, ids
        with torch.inference_mode():
            x = F.embedding(ids, model.embed)
            self.cos, self.sin = model.rope(x)
            self.inputs = []
            for i in range(model.geometry.num_layers):
                self.inputs.append(x)
                x = model.block(i, x, self.cos, self.sin, model.full_shape)
            self.final = x

    def run_from(self, start: int, removed: set[int]) -> torch.Tensor:
        x = self.inputs[start]
        with torch.inference_mode():
            for i in range(start, self.model.geometry.num_layers):
                if i not in removed:
                    x = self.model.block(i, x, self.cos, self.sin, self.model.full_shape)
        return x

    def perplexity(self, hidden: torch.Tensor) -> float:
        """Perplexity on the second half of every sequence: each scored token has at least half a
        sequence of context, and the 49k-vocabulary head (most of a call's cost) runs on half the tokens."""
        start = self.ids.shape[1] // 2
        with torch.inference_mode():
            logits = self.model.head(hidden[:, start:-1])
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), self.ids[:, start + 1 :].reshape(-1))
        return math.exp(nll.item())

    def block_influence(self) -> list[float]:
        """ShortGPT's BI per layer: 1 - mean cosine similarity between its input and output."""
        outs = self.inputs[1:] + [self.final]
        return [(1 - F.cosine_similarity(a, b, dim=-1).mean()).item() for a, b in zip(self.inputs, outs, strict=True)]

    def angular_distance(self, a: torch.Tensor, b: torch.Tensor) -> float:
        cos = F.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
        return (torch.arccos(cos) / math.pi).mean().item()


def make_scorer(calib: Calibration, name: str) -> Callable[[int, set[int]], float]:
    """score(start, removed) for a candidate that keeps every layer before `start`; lower is better."""
    if name == "ppl":
        return lambda start, removed: calib.perplexity(calib.run_from(start, removed))
    if name == "angular":
        return lambda start, removed: calib.angular_distance(calib.run_from(start, removed), calib.final)
    if name == "block-influence":
        bi = calib.block_influence()
        return lambda start, removed: sum(bi[i] for i in removed)
    raise ValueError(f"unknown scorer {name}; choose from {', '.join(SCORERS)}")


def dp_select(
    num_layers: int,
    min_depth: int,
    score: Callable[[int, set[int]], float],
    protected: set[int],
    on_call: Callable[[], None] | None = None,
) -> tuple[dict[int, list[int]], dict[int, float], int]:
    """AmoebaLLM's DP; returns kept layers and score per depth, and the number of scorer calls."""
    max_remove = num_layers - min_depth
    full = score(0, set())
    calls = 1
    prev: dict[int, tuple[float, frozenset[int]]] = {0: (full, frozenset())}
    for n in range(1, num_layers + 1):
        layer = num_layers - n
        cur: dict[int, tuple[float, frozenset[int]]] = {0: (full, frozenset())}
        for m in range(1, min(n, max_remove) + 1):
            best = prev.get(m)
            base = prev.get(m - 1)
            if base is not None and layer not in protected:
                removed = base[1] | {layer}
                cand = score(layer, set(removed))
                calls += 1
                if on_call:
                    on_call()
                if best is None or cand < best[0]:
                    best = (cand, removed)
            if best is not None:
                cur[m] = best
        prev = cur
    sets = {num_layers - m: sorted(set(range(num_layers)) - set(rem)) for m, (_, rem) in prev.items()}
    scores = {num_layers - m: sc for m, (sc, _) in prev.items()}
    return sets, scores, calls


def dp_calls(num_layers: int, min_depth: int, protected: set[int]) -> int:
    """How many scorer calls dp_select will make (for the progress bar)."""
    count, reachable = 1, {0}
    for n in range(1, num_layers + 1):
        layer = num_layers - n
        nxt = {0}
        for m in range(1, min(n, num_layers - min_depth) + 1):
            if (m - 1) in reachable and layer not in protected:
                count += 1
                nxt.add(m)
            elif m in reachable:
                nxt.add(m)
        reachable = nxt
    return count


def baseline_select(calib: Calibration, method: str, min_depth: int, protected: set[int]) -> dict[int, list[int]]:
    n = calib.model.geometry.num_layers
    sets: dict[int, list[int]] = {}
    if method == "last":
        # The deepest layers go first, except protected ones: dropping the final layer itself wrecks any
        # model (perplexity in the millions), which would make this baseline a straw man.
        order = [i for i in reversed(range(n)) if i not in protected]
        return {d: sorted(set(range(n)) - set(order[: n - d])) for d in range(min_depth, n + 1)}
    if method == "shortgpt":
        bi = calib.block_influence()
        order = sorted((i for i in range(n) if i not in protected), key=lambda i: bi[i])
        return {d: sorted(set(range(n)) - set(order[: n - d])) for d in range(min_depth, n + 1)}
    if method == "angular":
        # Gromov et al.: drop the contiguous block [l, l+k) whose input and output are most alike.
        reps = calib.inputs + [calib.final]
        for d in range(min_depth, n + 1):
            k = n - d
            starts = [s for s in range(n - k + 1) if not protected & set(range(s, s + k))]
            best = min(starts, key=lambda s: calib.angular_distance(reps[s], reps[s + k]))
            sets[d] = sorted(set(range(n)) - set(range(best, best + k)))
        return sets
    raise ValueError(f"unknown depth method {method}; choose from {', '.join(DEPTH_METHODS)}")


def select_depth(
    model: ElasticModel,
    ids: torch.Tensor,
    method: str = "amoeba",
    scorer: str = "ppl",
    min_depth: int | None = None,
    protect_first: bool = True,
    on_call: Callable[[], None] | None = None,
    calib: Calibration | None = None,
) -> DepthPlan:
    """Layer sets per depth; `calib` reuses hidden states already computed for the same model and ids."""
    start = time.perf_counter()
    n = model.geometry.num_layers
    min_depth = min_depth or math.ceil(n / 2)
    protected = {n - 1} | ({0} if protect_first else set())
    calib = calib or Calibration(model, ids)
    if method == "amoeba":
        sets, _, calls = dp_select(n, min_depth, make_scorer(calib, scorer), protected, on_call)
    else:
        sets, calls = baseline_select(calib, method, min_depth, protected), 0
    # Every depth's calibration perplexity, with the same evaluator whatever chose the layers.
    scores = {d: calib.perplexity(calib.run_from(0, set(range(n)) - set(kept))) for d, kept in sets.items()}
    return DepthPlan(sets, scores, method, scorer if method == "amoeba" else "-", calls, time.perf_counter() - start)
