"""Training data as fixed-length token sequences: a text file, JSONL instruction/response pairs
(rendered with the model's chat template), or a Hugging Face dataset name where a hub is reachable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edgekit.errors import UsageError, first_line

PROMPT_KEYS = ("instruction", "prompt", "question", "input")
RESPONSE_KEYS = ("response", "output", "answer", "completion")


def _pairs(path: Path) -> list[tuple[str, str, bool]]:
    """(prompt, response, finished) per row; `finished: false` marks a reply cut at the token limit."""
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path}:{n} is not valid JSON") from None
        prompt = next((row[k] for k in PROMPT_KEYS if k in row), None)
        response = next((row[k] for k in RESPONSE_KEYS if k in row), None)
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise UsageError(
                f"{path}:{n} needs a prompt ({'/'.join(PROMPT_KEYS)}) and a response ({'/'.join(RESPONSE_KEYS)})"
            )
        pairs.append((prompt, response, row.get("finished", True) is not False))
    return pairs


def chat_ids(tokenizer: Any, prompt: str, response: str, finished: bool = True) -> list[int]:
    """A user turn and the assistant's reply in the model's chat template. A reply that was cut off gets no
    end of turn, so training never teaches a shape to stop where the teacher had not."""
    if finished:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    head = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    return list(head) + list(tokenizer(response, add_special_tokens=False)["input_ids"])


def token_stream(source: str, tokenizer: Any, fmt: str = "auto", max_tokens: int | None = None) -> torch.Tensor:
    path = Path(source).expanduser()
    if not path.is_file():
        if "/" in source and not source.startswith((".", "/", "~")) and not path.suffix:
            return _hub_stream(source, tokenizer, max_tokens)
        raise UsageError(f"training data not found: {source}")
    if fmt == "auto":
        fmt = "jsonl" if path.suffix in (".jsonl", ".json") else "text"
    eos = tokenizer.eos_token_id
    if fmt == "jsonl":
        ids: list[int] = []
        for prompt, response, finished in _pairs(path):
            ids += chat_ids(tokenizer, prompt, response, finished)
            if max_tokens is not None and len(ids) >= max_tokens:
                break
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path} is not UTF-8 text") from None
        if max_tokens is not None:
            text = text[: max_tokens * 8]  # tokens are rarely shorter than a character on average
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return torch.tensor(ids, dtype=torch.long)


def _hub_stream(name: str, tokenizer: Any, max_tokens: int | None) -> torch.Tensor:
    try:
        from datasets import load_dataset
    except ImportError:
        from edgekit.errors import MissingDependencyError

        raise MissingDependencyError(f"'{name}' looks like a hub dataset: pip install datasets") from None
    try:
        ds = load_dataset(name, split="train", streaming=True)
    except Exception as exc:  # offline or unknown dataset
        raise UsageError(f"could not open dataset '{name}': {first_line(exc)}") from None
    ids: list[int] = []
    for row in ds:
        text = row.get("text") or ""
        ids += list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if max_tokens is not None and len(ids) >= max_tokens:
            break
    return torch.tensor(ids[:max_tokens] if max_tokens else ids, dtype=torch.long)


class Sequences:
    """Non-overlapping sequences of a token stream, visited in a seeded order that depends only on the step,
    so a resumed run sees exactly the batches it would have seen."""

    def __init__(self, stream: torch.Tensor, seq_len: int, batch_size: int, seed: int, source: str) -> None:
        rows = stream.numel() // seq_len
        if rows < batch_size:
            raise UsageError(
                f"training data {source} is too small: {stream.numel():,} tokens make {rows} sequences of "
                f"{seq_len}; a batch needs {batch_size}"
            )
        self.data = stream[: rows * seq_len].view(rows, seq_len)
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return self.data.shape[0]

    def rows(self, step: int) -> torch.Tensor:
        per_epoch = len(self) // self.batch_size
        epoch, offset = divmod(step, per_epoch)
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return order[offset * self.batch_size : (offset + 1) * self.batch_size]

    def batch(self, step: int) -> torch.Tensor:
        return self.data[self.rows(step)]

    def mixed(self, other: Sequences, fraction: float) -> MixedSequences:
        return MixedSequences(self, other, fraction)


class MixedSequences(Sequences):
    """Two sources in every batch: `round(batch x fraction)` sequences of the second, the rest of the first,
    each walked in its own seeded order (an epoch of the small source is shorter), still a function of the
    step alone so resume stays exact."""

    def __init__(self, main: Sequences, extra: Sequences, fraction: float) -> None:
        self.main, self.extra = main, extra
        self.data = torch.cat([main.data, extra.data])
        self.batch_size, self.seed = main.batch_size, main.seed
        self.take = min(main.batch_size - 1, max(1, round(main.batch_size * fraction)))

    def rows(self, step: int) -> torch.Tensor:
        main = self.main.rows(step)[: self.batch_size - self.take]
        n = len(self.extra)
        picked = []
        for position in range(step * self.take, (step + 1) * self.take):
            epoch, offset = divmod(position, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.extra.seed * 7919 + epoch))
            picked.append(int(order[offset]))
        return torch.cat([main, torch.tensor(picked) + len(self.main)])
