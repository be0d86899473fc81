"""Zero-shot multiple choice scored as lm-evaluation-harness scores it (summed log-likelihood of each choice,
and per byte of the choice), so accuracies compare with its published numbers."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import UsageError
from edgekit.evaluation.data import MCItem
from edgekit.evaluation.model_io import bos, context_length, device_of, encode, logits_of, progress_bar


@dataclass
class MCResult:
    acc: float
    acc_norm: float
    n: int
    stderr: float  # of acc
    acc_norm_stderr: float
    seconds: float
    # Summed log-likelihood of each choice, per item: kept so two models can be compared item by item.
    loglikelihoods: list[list[float]] = field(default_factory=list, repr=False)

    def to_dict(self, per_item: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not per_item:
            data.pop("loglikelihoods")
        return {**data, "seconds": round(self.seconds, 2)}


def multiple_choice(
    model: Any, tokenizer: Any, items: list[MCItem], progress: bool = True, batch_size: int = 16
) -> MCResult:
    """Zero-shot accuracy: the choice whose continuation the model finds most likely (acc), or most likely per byte
    (acc_norm), as lm-evaluation-harness scores multiple_choice tasks."""
    import torch

    start = time.perf_counter()
    if not items:
        raise UsageError("no multiple-choice items to score")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    context_len = context_length(model)
    requests = []  # (item, choice, token ids, number of continuation tokens at their end)
    for i, item in enumerate(items):
        for j, choice in enumerate(item.choices):
            ids, n_cont = _encode_pair(tokenizer, item.context, " " + choice)
            if context_len is not None and len(ids) > context_len:
                ids = ids[-context_len:]  # keep the continuation and as much context as fits, like lm-eval
            requests.append((i, j, ids, n_cont))
    # Longest first, so each batch pads little and the slowest batch comes first (an early memory failure).
    requests.sort(key=lambda r: -len(r[2]))
    scores = [[0.0] * len(item.choices) for item in items]
    device = device_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with progress_bar(progress, "multiple choice", len(requests)) as advance, torch.inference_mode():
        for b in range(0, len(requests), batch_size):
            batch = requests[b : b + batch_size]
            width = len(batch[0][2])
            input_ids = torch.tensor([r[2] + [pad] * (width - len(r[2])) for r in batch], dtype=torch.long)
            # Right padding needs no attention mask in a causal model: pads come after every real token, so no
            # real position can attend to them, and the padded rows' real logits equal the unpadded ones.
            logits = logits_of(model, input_ids.to(device), None)
            for row, (i, j, ids, n_cont) in enumerate(batch):
                n = len(ids)
                logprobs = torch.log_softmax(logits[row, n - n_cont - 1 : n - 1].float(), dim=-1)
                target = torch.tensor(ids[n - n_cont :], device=logprobs.device)
                scores[i][j] = logprobs.gather(-1, target[:, None]).sum().item()
            advance(len(batch))

    correct = [_argmax(s) == item.label for s, item in zip(scores, items, strict=True)]
    # lm-eval's acc_norm divides by the length of the choice text (without the " " delimiter), here in UTF-8
    # bytes so non-ASCII choices are not favoured by being short in characters but long in tokens.
    correct_norm = [
        _argmax([ll / max(1, len(c.encode("utf-8"))) for ll, c in zip(s, item.choices, strict=True)]) == item.label
        for s, item in zip(scores, items, strict=True)
    ]
    acc, acc_norm = sum(correct) / len(items), sum(correct_norm) / len(items)
    return MCResult(
        acc=acc,
        acc_norm=acc_norm,
        n=len(items),
        stderr=_stderr(acc, len(items)),
        acc_norm_stderr=_stderr(acc_norm, len(items)),
        seconds=time.perf_counter() - start,
        loglikelihoods=scores,
    )


def _encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], int]:
    """Token ids of context+continuation and how many at the end are the continuation's (lm-eval's rules)."""
    # Trailing spaces of the context belong to the continuation: BPE tokenizers attach a space to the next word.
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = encode(tokenizer, context)
    whole = encode(tokenizer, context + continuation)
    if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
        continuation_ids = whole[len(context_ids) :]
    else:  # the tokenizer merged across the boundary: score the pieces as encoded separately
        continuation_ids = encode(tokenizer, continuation)
    if not continuation_ids:
        raise UsageError(f"the choice {continuation.strip()!r} encodes to no tokens")
    prefix = bos(tokenizer)
    if not context_ids and not prefix:
        # An empty context still needs a position to predict the first continuation token from.
        eos = tokenizer.eos_token_id
        if eos is None:
            raise UsageError("an empty context needs a BOS or EOS token, and the tokenizer has neither")
        prefix = [eos]
    return prefix + context_ids + continuation_ids, len(continuation_ids)


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda k: (values[k], -k))  # first on ties, like numpy's argmax


def _stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0
