"""The measuring stick: sliding-window perplexity and zero-shot multiple choice, on any HF-style causal LM.

Everything here needs only `model(input_ids)` returning logits (or an object with `.logits`) and a
Hugging Face tokenizer, so a cut subnet, a deployed shape or the full model are measured the same way.
Perplexity follows the Hugging Face "Perplexity of fixed-length models" recipe; multiple choice follows
lm-evaluation-harness's log-likelihood scoring (PIQA), so numbers can be compared with published ones.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgekit.cli.console import err
from edgekit.errors import IntegrityError, UsageError

IGNORE = -100  # the label value torch's cross-entropy skips


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


@dataclass
class MCItem:
    context: str  # the prompt exactly as the model sees it, e.g. "Question: ...\nAnswer:"
    choices: list[str]  # each is scored as the continuation " " + choice
    label: int


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


# ---------------------------------------------------------------------------------------------- data


def read_text(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"text file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise UsageError(f"{path} is empty")
    return text


def load_piqa(jsonl: Path, labels: Path | None = None, limit: int | None = None) -> list[MCItem]:
    """Items from PIQA's layout (goal/sol1/sol2 plus a labels file) or a generic one (context, choices, label)."""
    jsonl = Path(jsonl)
    if not jsonl.is_file():
        raise UsageError(f"multiple-choice file not found: {jsonl}")
    rows = _read_jsonl(jsonl)
    if not rows:
        raise UsageError(f"{jsonl} has no items")
    if labels is None:
        beside = jsonl.with_name(f"{jsonl.stem}-labels.lst")
        labels = beside if beside.is_file() else None
    elif not Path(labels).is_file():
        raise UsageError(f"labels file not found: {labels}")
    file_labels = _read_labels(Path(labels)) if labels is not None else None
    if file_labels is not None and len(file_labels) != len(rows):
        raise IntegrityError(f"{labels} has {len(file_labels)} labels but {jsonl} has {len(rows)} items")
    items = []
    for i, (line_no, row) in enumerate(rows):
        label = file_labels[i] if file_labels is not None else row.get("label")
        items.append(_to_item(row, label, f"{jsonl}:{line_no}"))
    return items[:limit] if limit is not None else items


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{line_no} is not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}:{line_no} is not a JSON object")
            rows.append((line_no, row))
    return rows


def _read_labels(path: Path) -> list[int]:
    out = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(int(line.strip()))
        except ValueError:
            raise UsageError(f"{path}:{line_no} is not an integer label: {line.strip()!r}") from None
    return out


def _to_item(row: dict[str, Any], label: Any, where: str) -> MCItem:
    if "goal" in row:
        if not isinstance(row.get("sol1"), str) or not isinstance(row.get("sol2"), str):
            raise UsageError(f"{where} has a goal but not both sol1 and sol2")
        # lm-evaluation-harness's PIQA prompt, so accuracies compare with its published numbers
        context, choices = f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]]
    elif "choices" in row and ("context" in row or "query" in row):
        context, choices = row.get("context", row.get("query")), row["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise UsageError(f"{where}: choices must be a list of at least two strings")
        if not isinstance(context, str):
            raise UsageError(f"{where}: context must be a string")
    else:
        raise UsageError(f"{where} has neither goal/sol1/sol2 (PIQA) nor context/choices/label")
    if label is None:
        raise UsageError(f"{where} has no label (and no labels file was found)")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise IntegrityError(f"{where}: label {label!r} is not the index of one of its {len(choices)} choices")
    return MCItem(context=context, choices=list(choices), label=label)


# ---------------------------------------------------------------------------------------- perplexity


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
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    if not 1 <= stride <= max_length:
        raise UsageError(f"stride must be between 1 and max_length ({max_length}), got {stride}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    context = _context_length(model)
    if context is not None and max_length > context:
        raise UsageError(f"max_length {max_length} is longer than the model's context of {context} tokens")
    if not text.strip():
        raise UsageError("the text to score is empty")
    ids = _bos(tokenizer) + _encode(tokenizer, text)[skip_tokens:]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < max_length:
        budget = f" (max_tokens {max_tokens})" if max_tokens is not None and max_tokens < max_length else ""
        raise UsageError(f"the text has {len(ids)} tokens{budget}, fewer than one window of {max_length}")

    windows = _windows(len(ids), max_length, stride)
    stream = torch.tensor(ids, dtype=torch.long)
    device = _device(model)
    keep_arg = _accepts(model, "logits_to_keep")
    nll_sum, scored = 0.0, 0
    with _progress(progress, "perplexity", len(windows)) as advance, torch.inference_mode():
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
            logits = _logits(model, input_ids, keep if keep_arg else None)[:, -keep:]
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


# ----------------------------------------------------------------------------------- multiple choice


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
    context_len = _context_length(model)
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
    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with _progress(progress, "multiple choice", len(requests)) as advance, torch.inference_mode():
        for b in range(0, len(requests), batch_size):
            batch = requests[b : b + batch_size]
            width = len(batch[0][2])
            input_ids = torch.tensor([r[2] + [pad] * (width - len(r[2])) for r in batch], dtype=torch.long)
            # Right padding needs no attention mask in a causal model: pads come after every real token, so no
            # real position can attend to them, and the padded rows' real logits equal the unpadded ones.
            logits = _logits(model, input_ids.to(device), None)
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
    context_ids = _encode(tokenizer, context)
    whole = _encode(tokenizer, context + continuation)
    if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
        continuation_ids = whole[len(context_ids) :]
    else:  # the tokenizer merged across the boundary: score the pieces as encoded separately
        continuation_ids = _encode(tokenizer, continuation)
    if not continuation_ids:
        raise UsageError(f"the choice {continuation.strip()!r} encodes to no tokens")
    prefix = _bos(tokenizer)
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


# ------------------------------------------------------------------------------------------- helpers


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _bos(tokenizer: Any) -> list[int]:
    """[BOS] if this tokenizer's own config adds it to every text, else []: the model was trained that way."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return [bos] if with_specials[:1] == [bos] and plain[:1] != [bos] else []


def _logits(model: Any, input_ids: Any, keep: int | None) -> Any:
    out = model(input_ids, logits_to_keep=keep) if keep is not None else model(input_ids)
    return out.logits if hasattr(out, "logits") else out


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(getattr(model, "forward", model)).parameters
    except (TypeError, ValueError):
        return False


def _device(model: Any) -> Any:
    import torch

    device = getattr(model, "device", None)
    if device is None:
        param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        device = param.device if param is not None else torch.device("cpu")
    return device


def _context_length(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


@contextmanager
def _progress(enabled: bool, label: str, total: int) -> Iterator[Any]:
    """Yield `advance(n)`; draws a bar on stderr only when asked and stderr is a terminal (never into --json)."""
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled or not err.is_terminal,
    )
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
