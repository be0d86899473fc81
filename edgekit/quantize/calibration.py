"""Calibration for GPTQ: token sequences, and the Hessian X^T X of every linear layer's inputs over them.

The shipped calibration file (edgekit/data/calibration/default.jsonl, made by scripts/calibration_data.py)
mixes general prose, technical text and chat turns, so an int4 build keeps both text and chat quality;
`--option calib=FILE` takes a user's own (a text file, or JSONL of {"text"} and {"prompt", "response"}).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import UsageError
from edgekit.evaluation.data import read_text

if TYPE_CHECKING:
    import torch

SEQ_LEN = 256
DEFAULT_TOKENS = 12_288  # about 48 sequences: within 1 % of 4x as many on SmolLM2-135M (docs/runtimes.md)


def default_file() -> Path:
    return Path(str(resources.files("edgekit.data") / "calibration" / "default.jsonl"))


@dataclass
class Calibration:
    """What a build was calibrated on: recorded in the build record and so in the deployment's manifest."""

    file: str
    sha256: str
    sequences: list[list[int]]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def record(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "sequences": len(self.sequences), "tokens": self.tokens}


def read_samples(path: Path) -> list[dict[str, str]]:
    """The file's samples: JSONL rows with "text" or "prompt"/"response", else the whole file as text."""
    raw = read_text(path, "calibration file")
    if path.suffix != ".jsonl":
        return [{"text": raw}]
    samples = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"calibration file {path} line {n} is not JSON") from None
        ok = isinstance(row, dict) and (isinstance(row.get("text"), str) or isinstance(row.get("prompt"), str))
        if not ok:
            raise UsageError(f'calibration file {path} line {n} has neither "text" nor "prompt"')
        samples.append(row)
    return samples


def sequences(tokenizer: Any, samples: list[dict[str, str]], tokens: int, seq_len: int = SEQ_LEN) -> list[list[int]]:
    """Token sequences of at most `seq_len`, `tokens` in all, taken round-robin from text and chat samples so a
    small budget still sees both. A long plain text is cut into several sequences."""
    from edgekit.chat.engine import render_ids

    texts, chats = [], []
    for s in samples:
        if "prompt" in s:
            ids = render_ids(tokenizer, [{"role": "user", "content": s["prompt"]}])
            reply = tokenizer(s.get("response", ""), add_special_tokens=False)["input_ids"]
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            chats.append((ids + list(reply) + eos)[:seq_len])
        else:
            ids = list(tokenizer(s["text"], add_special_tokens=False)["input_ids"])
            bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            texts.extend((bos + ids[i : i + seq_len - len(bos)]) for i in range(0, max(len(ids), 1), seq_len))
    out: list[list[int]] = []
    total = 0
    for i in range(max(len(texts), len(chats))):
        for seq in texts[i : i + 1] + chats[i : i + 1]:
            if len(seq) > 1 and total < tokens:
                out.append(seq)
                total += len(seq)
    return out


def load(tokenizer: Any, path: Path | None = None, tokens: int = DEFAULT_TOKENS) -> Calibration:
    from edgekit.artifacts import sha256_file

    path = path or default_file()
    seqs = sequences(tokenizer, read_samples(path), tokens)
    if not seqs:
        raise UsageError(f"calibration file {path} gives no token sequences")
    return Calibration(path.name, sha256_file(path), seqs)


def hessians(
    model: Any, seqs: list[list[int]], on_sequence: Callable[[int], None] | None = None
) -> dict[str, torch.Tensor]:
    """X^T X (summed over calibration tokens) of the input of every nn.Linear in `model`, keyed by module name.
    Layers that read the same tensor (q, k and v; gate and up) share one matrix, computed once. The LM head's
    comes from the decoder's final hidden states, so the 49k-wide logits are never computed."""
    import torch

    decoder = model.get_decoder()
    head_name = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
    acc: dict[str, torch.Tensor] = {}
    alias: dict[str, str] = {}
    # data_ptr of an input -> (first module that read it, the tensor): holding the tensor until the forward ends
    # keeps its memory from being reused by another input that would then look shared
    seen: dict[int, tuple[str, torch.Tensor]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(_module: Any, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
            x = inputs[0]
            first, _ = seen.setdefault(x.data_ptr(), (name, x))
            if first != name:
                alias[name] = first
                return
            flat = x.reshape(-1, x.shape[-1]).float()
            acc[name] = acc.get(name, 0) + flat.T @ flat

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n != head_name]  # fmt: skip
    try:
        with torch.no_grad():
            for i, seq in enumerate(seqs):
                seen.clear()
                hidden = decoder(torch.tensor([seq])).last_hidden_state
                flat = hidden.reshape(-1, hidden.shape[-1]).float()
                acc[head_name] = acc.get(head_name, 0) + flat.T @ flat
                if on_sequence:
                    on_sequence(i + 1)
    finally:
        for h in handles:
            h.remove()
    return {**acc, **{name: acc[first] for name, first in alias.items()}}
