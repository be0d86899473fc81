"""One-shot chat generation with torch: the chat template, streaming, and honest timings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.errors import UsageError


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    ttft_ms: float  # prompt processing plus the first new token
    ms_per_token: float  # steady-state decode: tokens after the first
    tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


def build_prompt_ids(tokenizer: Any, prompt: str, system: str | None = None) -> Any:
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    else:  # base models without a template get the raw text
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    return ids


def generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 64,
    system: str | None = None,
    temperature: float = 0.0,
    on_text: Callable[[str], None] | None = None,
) -> GenerationResult:
    import torch
    from transformers.generation.streamers import BaseStreamer

    ids = build_prompt_ids(tokenizer, prompt, system).to(model.device)
    stamps: list[float] = []
    pieces: list[int] = []
    printed = 0

    class _Stream(BaseStreamer):
        def put(self, value: Any) -> None:
            nonlocal printed
            if not stamps and value.numel() == ids.numel():
                stamps.append(time.perf_counter())  # the prompt echo, not a new token
                return
            stamps.append(time.perf_counter())
            pieces.extend(value.reshape(-1).tolist())
            if on_text:
                text = tokenizer.decode(pieces, skip_special_tokens=True)
                # Hold back a trailing replacement char: it is half of a multi-byte character.
                if not text.endswith("\ufffd") and len(text) > printed:
                    on_text(text[printed:])
                    printed = len(text)

        def end(self) -> None:
            pass

    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": 0.95}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            streamer=_Stream(),
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            **sampling,
        )
    new = out[0, ids.shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    if on_text and len(text) > printed:
        on_text(text[printed:])
    token_stamps = stamps[1:]
    ttft = (token_stamps[0] - start) * 1000 if token_stamps else 0.0
    decode = (token_stamps[-1] - token_stamps[0]) / (len(token_stamps) - 1) * 1000 if len(token_stamps) > 1 else ttft
    return GenerationResult(
        text=text.strip(),
        prompt_tokens=ids.shape[1],
        new_tokens=len(new),
        ttft_ms=ttft,
        ms_per_token=decode,
        tokens_per_s=1000 / decode if decode else 0.0,
    )
