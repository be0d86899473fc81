"""Sliding-window perplexity, following Hugging Face's "Perplexity of fixed-length models" recipe, on any
model that maps input ids to logits (a cut subnet, a shape of an elastic model, the full model)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.errors import UsageError
from edgekit.evaluation.model_io import IGNORE, accepts, bos, context_length, device_of, encode, logits_of, progress_bar


@dataclass
class PerplexityResult:
    ppl: float
    nll: float  # mean negative log-likelihood per scored token, in nats
    tokens: int  # tokens in the evaluated stream (after the max_tokens budget)
    tokens_scored: int
    windows: int
    max_length: int
    stride: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 2)}


def perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    max_length: int = 512,
    stride: int = 256,
    max_tokens: int | None = None,
    progress: bool = True,
    batch_size: int = 4,
    skip_tokens: int = 0,
) -> PerplexityResult:
    """Sliding-window perplexity; every token after the first is scored once, with up to max_length of context.

    `skip_tokens` drops the text's first tokens (e.g. those a plan was calibrated on) before windowing."""
    start = time.perf_counter()
    if not text.strip():
        raise UsageError("the text to score is empty")
    ids = bos(tokenizer) + encode(tokenizer, text)[skip_tokens:]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < max_length:
        budget = f" (max_tokens {max_tokens})" if max_tokens is not None and max_tokens < max_length else ""
        raise UsageError(f"the text has {len(ids)} tokens{budget}, fewer than one window of {max_length}")
    return perplexity_of_ids(model, ids, max_length, stride, progress, batch_size, start)


def perplexity_of_ids(
    model: Any,
    ids: list[int],
    max_length: int = 512,
    stride: int = 256,
    progress: bool = False,
    batch_size: int = 4,
    start: float | None = None,
) -> PerplexityResult:
    """`perplexity` on a token stream already encoded (many models scored on one text tokenize it once)."""
    import torch
    import torch.nn.functional as F

    start = time.perf_counter() if start is None else start
    if not 1 <= stride <= max_length:
        raise UsageError(f"stride must be between 1 and max_length ({max_length}), got {stride}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    context = context_length(model)
    if context is not None and max_length > context:
        raise UsageError(f"max_length {max_length} is longer than the model's context of {context} tokens")
    if len(ids) < max_length:
        raise UsageError(f"the text has {len(ids)} tokens, fewer than one window of {max_length}")

    windows = _windows(len(ids), max_length, stride)
    stream = torch.tensor(ids, dtype=torch.long)
    device = device_of(model)
    keep_arg = accepts(model, "logits_to_keep")
    nll_sum, scored = 0.0, 0
    with progress_bar(progress, "perplexity", len(windows)) as advance, torch.inference_mode():
        for batch in _same_length_batches(windows, batch_size):
            length = batch[0][1] - batch[0][0]
            # Only the last `keep` positions predict scored tokens (plus the final one, which predicts past the
            # window): asking the model for just those skips most of the vocabulary projection on overlaps.
            keep = max(end - first for _, end, first in batch) + 1
            input_ids = torch.stack([stream[b:e] for b, e, _ in batch]).to(device)
            labels = torch.full((len(batch), keep), IGNORE, dtype=torch.long)
            for row, (begin, end, first) in enumerate(batch):
                # logits at window position p predict token begin+p+1; the kept logits start at length-keep
                labels[row, first - begin - 1 - (length - keep) : keep - 1] = stream[first:end]
            logits = logits_of(model, input_ids, keep if keep_arg else None)[:, -keep:]
            nll = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.to(logits.device).reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
            nll_sum += nll.item()
            scored += int((labels != IGNORE).sum())
            advance(len(batch))
    mean = nll_sum / scored
    return PerplexityResult(
        ppl=math.exp(mean),
        nll=mean,
        tokens=len(ids),
        tokens_scored=scored,
        windows=len(windows),
        max_length=max_length,
        stride=stride,
        seconds=time.perf_counter() - start,
    )


def _windows(n: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) per window, exactly the HF recipe's loop."""
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        # A window's first token has no context inside it, so it can never be scored there; with
        # stride == max_length that token is simply never scored, as in the recipe.
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return out


def _same_length_batches(windows: list[tuple[int, int, int]], size: int) -> Iterator[list[tuple[int, int, int]]]:
    # All windows are full-length except possibly the last, so consecutive grouping needs no padding.
    batch: list[tuple[int, int, int]] = []
    for w in windows:
        if batch and (len(batch) == size or w[1] - w[0] != batch[0][1] - batch[0][0]):
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch
