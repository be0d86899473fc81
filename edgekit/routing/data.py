"""Routing data: held-apart prompts, the full model's replies to them, and how well each menu shape predicts
those replies, with each prompt's features.

The prompts are the dev part of a chat prompt file (never trained on), split by a stable hash into the router's
part, which it is fitted and calibrated on, and the evaluation part, which neither the checkpoint nor the
router sees; prompts the checkpoint's own chat reference holds (its predictors were fitted on them) are left
out of the evaluation part too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError

ROUTER_SHARE = 0.6  # of the dev prompts: the router's; the rest are for evaluation
REPLY_TOKENS = 96


def part_of(prompt: str) -> str:
    """'router' or 'eval', from a hash of the prompt: stable across runs and files."""
    h = int(hashlib.sha256(f"edgekit-route:{prompt}".encode()).hexdigest()[:8], 16)
    return "router" if h / 2**32 < ROUTER_SHARE else "eval"


def routing_prompts(path: Path, part: str, exclude: set[str] | None = None, limit: int | None = None) -> list[str]:
    """The dev prompts of `path` in the given part ('router' or 'eval'), minus `exclude`, at most `limit`."""
    from edgekit.elastic.teacher_data import read_prompts, split_prompts

    if part not in ("router", "eval"):
        raise ValueError(part)
    dev = split_prompts(read_prompts(path), "dev")
    if not dev:
        raise UsageError(f"{path} has no dev prompts to route on (the dev part is a stable tenth of the file)")
    chosen = [p for p in dict.fromkeys(dev) if part_of(p) == part and p not in (exclude or set())]
    return chosen[:limit] if limit else chosen


def reference(source: Any, path: Path, part: str, limit: int | None, exclude: set[str] | None = None,
              on_prompt: Callable[[int], None] | None = None, reply_tokens: int = REPLY_TOKENS) -> Any:  # fmt: skip
    """The full base model's greedy replies to that part's prompts (cached like every chat reference)."""
    from edgekit.artifacts import sha256_file
    from edgekit.evaluation.chat import cached_reference

    if not path.is_file():
        raise UsageError(f"chat prompts not found: {path}")
    sha = sha256_file(path)
    skip = hashlib.sha256("\n".join(sorted(exclude or ())).encode()).hexdigest()[:12]
    key = f"{source.plan.model.digest}|{sha}|route-{part}|{limit}|{skip}|{reply_tokens}"
    record = {"file": path.name, "sha256": sha, "part": f"dev, {part}"}
    chosen = lambda: routing_prompts(path, part, exclude, limit)  # noqa: E731
    return cached_reference(source.base_folder(), source.plan.model.digest, key, chosen, record, reply_tokens,
                            on_prompt)  # fmt: skip


@dataclass
class RoutingData:
    prompts: list[str]
    menu: list[str]
    features: np.ndarray  # [n, F]
    loss: np.ndarray  # [n, S] mean NLL of the full model's reply under each menu shape


def collect(source: Any, menu: list[Any], ref: Any, extractor: Any,
            on_step: Callable[[str], None] | None = None) -> RoutingData:  # fmt: skip
    """Features of every prompt and every menu shape's loss on every reply (fp32, SMOL merged). Prompts whose
    reference reply is empty are dropped: there is nothing to score."""
    from edgekit.evaluation.chat import prompt_losses
    from edgekit.evaluation.model_io import sequence_logits

    say = on_step or (lambda _text: None)
    elastic = source.load().eval()
    columns = []
    for shape in menu:
        say(f"scoring {shape.name} on {len(ref.prompts)} replies")
        columns.append(prompt_losses(sequence_logits(elastic.at(shape)), ref))
    keep = [i for i in range(len(ref.prompts)) if all(c[i] is not None for c in columns)]
    say(f"features of {len(keep)} prompts")
    features = np.stack([extractor.features(ref.prompt_ids[i]) for i in keep])
    loss = np.array([[c[i] for c in columns] for i in keep], dtype=np.float64)
    return RoutingData([ref.prompts[i] for i in keep], [s.name for s in menu], features, loss)
