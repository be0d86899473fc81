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
    return chat_ids_and_mask(tokenizer, prompt, response, finished)[0]


def chat_ids_and_mask(tokenizer: Any, prompt: str, response: str, finished: bool = True) -> tuple[list[int], list[int]]:
    """`chat_ids` and, per token, 1 where it belongs to the reply (the assistant's words and its end of turn):
    the tokens a `replies` loss learns to predict. The system and user turns, the same few hundred tokens of
    template in every row, are 0: learnt as targets they teach a shallow shape to recite them."""
    head = list(tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"])  # fmt: skip
    if finished:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    else:
        ids = head + list(tokenizer(response, add_special_tokens=False)["input_ids"])
    start = len(head) if ids[: len(head)] == head else _common_prefix(ids, head)
    return ids, [0] * start + [1] * (len(ids) - start)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def token_stream(source: str, tokenizer: Any, fmt: str = "auto", max_tokens: int | None = None) -> torch.Tensor:
    return token_stream_and_mask(source, tokenizer, fmt, max_tokens)[0]


def token_stream_and_mask(
    source: str, tokenizer: Any, fmt: str = "auto", max_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The source's tokens and, for instruction/response JSONL, which of them are replies (`chat_ids_and_mask`);
    None for plain text, where every token is a target."""
    path = Path(source).expanduser()
    if not path.is_file():
        if "/" in source and not source.startswith((".", "/", "~")) and not path.suffix:
            return _hub_stream(source, tokenizer, max_tokens), None
        raise UsageError(f"training data not found: {source}")
    if fmt == "auto":
        fmt = "jsonl" if path.suffix in (".jsonl", ".json") else "text"
    eos = tokenizer.eos_token_id
    mask: list[int] | None = None
    if fmt == "jsonl":
        ids: list[int] = []
        mask = []
        for prompt, response, finished in _pairs(path):
            row, row_mask = chat_ids_and_mask(tokenizer, prompt, response, finished)
            ids += row
            mask += row_mask
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
    as_mask = None if mask is None else torch.tensor(mask[: len(ids)], dtype=torch.bool)
    return torch.tensor(ids, dtype=torch.long), as_mask


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

    def __init__(
        self, stream: torch.Tensor, seq_len: int, batch_size: int, seed: int, source: str,
        mask: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        rows = stream.numel() // seq_len
        if rows < batch_size:
            raise UsageError(
                f"training data {source} is too small: {stream.numel():,} tokens make {rows} sequences of "
                f"{seq_len}; a batch needs {batch_size}"
            )
        self.data = stream[: rows * seq_len].view(rows, seq_len)
        # which tokens are targets of the loss (None: all of them)
        self.mask = None if mask is None else mask[: rows * seq_len].view(rows, seq_len)
        self.batch_size, self.seed = batch_size, seed

    def target_mask(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Which next-token targets of `rows` count in the loss ([rows, seq_len - 1]); None: every one."""
        return None if self.mask is None else self.mask[rows][:, 1:]

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
        masks = [m.mask if m.mask is not None else torch.ones_like(m.data, dtype=torch.bool) for m in (main, extra)]
        self.mask = None if main.mask is None and extra.mask is None else torch.cat(masks)
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
