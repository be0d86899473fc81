"""What the evaluators need from any HF-style causal LM and its tokenizer: token ids the way the model was
trained on them, logits, where it runs, its context, and a progress bar that never draws into --json."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgekit.progress import err

IGNORE = -100  # the label value torch's cross-entropy skips


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def bos(tokenizer: Any) -> list[int]:
    """[BOS] if this tokenizer's own config adds it to every text, else []: the model was trained that way."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return [bos] if with_specials[:1] == [bos] and plain[:1] != [bos] else []


def logits_of(model: Any, input_ids: Any, keep: int | None) -> Any:
    out = model(input_ids, logits_to_keep=keep) if keep is not None else model(input_ids)
    return out.logits if hasattr(out, "logits") else out


def sequence_logits(model: Any) -> Any:
    """`ids -> logits at every position ([len, vocab])` of any model the evaluators take: what chat_ppl reads."""
    import torch

    def logits(ids: list[int]) -> Any:
        with torch.inference_mode():
            return logits_of(model, torch.tensor([ids], device=device_of(model)), None)[0]

    return logits


def accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(getattr(model, "forward", model)).parameters
    except (TypeError, ValueError):
        return False


def device_of(model: Any) -> Any:
    import torch

    device = getattr(model, "device", None)
    if device is None:
        param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        device = param.device if param is not None else torch.device("cpu")
    return device


def context_length(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


@contextmanager
def progress_bar(enabled: bool, label: str, total: int) -> Iterator[Any]:
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


class SessionModel:
    """A runtime session (a deployed artifact: ORT GenAI int4, torch, ...) as the model the evaluators take:
    input ids in, logits at every position out, one row at a time. Perplexity, multiple choice and the chat
    metrics then measure the artifact a user runs, not the fp32 weights it was built from."""

    def __init__(self, session: Any) -> None:
        from types import SimpleNamespace

        import torch

        if not hasattr(session, "sequence_logits"):
            from edgekit.errors import UsageError

            raise UsageError(
                f"runtime {session.runtime} gives edgekit generated tokens, not logits: its perplexity and "
                "chat_ppl cannot be measured through it (its answer rate and agreement can: --chat alone)"
            )
        self.session = session
        self.device = torch.device("cpu")
        self.config = SimpleNamespace(max_position_embeddings=session.context_length)

    def eval(self) -> SessionModel:
        return self

    def __call__(self, input_ids: Any) -> Any:
        import torch

        return torch.stack([self.session.sequence_logits(row.tolist()) for row in input_ids.cpu()])
