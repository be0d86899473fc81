"""One model's side of speculative decoding: feed tokens, read their logits, cut the cache back.

A decoder is made per reply and keeps that reply's KV cache. Two kinds: a transformers model with its Cache
(torch), and an ONNX Runtime GenAI generator (append_tokens reads a chunk in one pass and its logits output
holds every position of the chunk; rewind_to cuts the cache back). Both give float32 torch logits on the CPU,
so the acceptance rule is one piece of code for every runtime.
"""

from __future__ import annotations

from typing import Any, Protocol


class Decoder(Protocol):
    length: int  # positions in the cache

    def feed(self, tokens: list[int], every: bool) -> Any:
        """Read `tokens` after what is cached; their logits, [len(tokens), vocab] with `every`, else the last
        one's [1, vocab]."""
        ...

    def rewind(self, length: int) -> None:
        """Forget every position from `length` on."""
        ...


class TorchDecoder:
    def __init__(self, model: Any, device: str) -> None:
        self.model, self.device, self.cache, self.length = model, device, None, 0

    def feed(self, tokens: list[int], every: bool) -> Any:
        import torch

        from edgekit.engines.torch_engine import cache_kwargs, cache_of

        x = torch.tensor([tokens], device=self.device)
        out = self.model(input_ids=x, use_cache=True, logits_to_keep=0 if every else 1,
                         **cache_kwargs(self.model, self.cache))  # fmt: skip
        self.cache = cache_of(out)
        self.length += len(tokens)
        return out.logits[0].float().cpu()

    def rewind(self, length: int) -> None:
        if length < self.length:
            # a negative crop removes that many from the end: the form every recent transformers takes
            self.cache.crop(length - self.length)
            self.length = length


class OrtDecoder:
    """An ONNX Runtime GenAI generator driven token chunk by token chunk: the generator's own search is never
    run (the acceptance rule picks the tokens), only its model pass and KV cache."""

    def __init__(self, og: Any, model: Any, max_length: int) -> None:
        params = og.GeneratorParams(model)
        # the KV cache is sized by max_length up front: a reply's bound, not the model's whole context
        params.set_search_options(max_length=max_length, do_sample=False)
        self.generator = og.Generator(model, params)
        self.max_length, self.length = max_length, 0

    def feed(self, tokens: list[int], every: bool) -> Any:
        import numpy as np
        import torch

        self.generator.append_tokens(tokens)
        self.length += len(tokens)
        logits = np.asarray(self.generator.get_output("logits"))
        logits = logits.reshape(-1, logits.shape[-1])[-len(tokens) if every else -1 :]
        return torch.from_numpy(logits.astype(np.float32, copy=True))

    def rewind(self, length: int) -> None:
        if length < self.length:
            self.generator.rewind_to(length)
            self.length = length


def decoder_for(model: Any, device: str, max_length: int) -> Decoder:
    """A decoder over a transformers model, or one a session makes (TorchSession, OrtSession)."""
    import torch

    if isinstance(model, torch.nn.Module):
        return TorchDecoder(model, device)
    return model.decoder(max_length)
