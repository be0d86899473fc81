"""PyTorch eager through transformers: the reference runtime, and the one that can reshape live."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.engines.base import RuntimeInfo, Sampling, pick_token, sampling_generator
from edgekit.errors import UsageError
from edgekit.models.weights import TOKENIZER_FILES
from edgekit.packages import versions

PRECISIONS = {"cpu": ["fp32", "bf16"], "cuda": ["bf16", "fp16", "fp32"], "mps": ["fp16", "fp32"]}
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")
MARKER = "edgekit-torch.txt"  # the precision to load in, written by compile


def cache_of(out: Any) -> Any:
    """A forward's KV cache: `cache` from transformers 5 on (reading `past_key_values` there prints a
    deprecation line into the chat), `past_key_values` before."""
    return out["cache"] if "cache" in out else out.past_key_values  # noqa: SIM401 (.get would read both)


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword that passes a KV cache back in, by the installed transformers' own signature."""
    import inspect

    return {"cache": cache} if "cache" in inspect.signature(model.forward).parameters else {"past_key_values": cache}


class TorchEngine:
    name = "torch"

    def probe(self) -> RuntimeInfo:
        import torch  # a dependency of edgekit itself

        info = RuntimeInfo("torch", "torch", True, torch.__version__, ["cpu"])
        if torch.cuda.is_available():
            info.offers.append(f"cuda ({torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda})")
            info.gpu, info.gpu_detail = True, info.offers[-1]
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            info.offers.append("mps")
        return info

    def check(self) -> None:
        import torch  # noqa: F401  (a dependency of edgekit itself)

    def versions(self) -> dict[str, str]:
        return versions("torch", "transformers")

    def precisions(self, device: str) -> list[str]:
        return PRECISIONS.get(device, ["fp32"])

    def compile(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Nothing to compile: the subnet folder is what transformers loads; the dtype is chosen at load."""
        if precision not in self.precisions(device):
            raise UsageError(f"torch runs {', '.join(self.precisions(device))} on {device}, not {precision}")
        start = time.perf_counter()
        for name in (*MODEL_FILES, *TOKENIZER_FILES):
            if (hf_dir / name).is_file():
                shutil.copy2(hf_dir / name, out / name)
        (out / MARKER).write_text(precision + "\n")
        return {
            "tool": "copy",
            "precision": precision,
            "device": device,
            "seconds": round(time.perf_counter() - start, 2),
        }

    def describe(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> list[str]:
        return [f"copy the subnet's safetensors, config and tokenizer {hf_dir} -> {out}; "
                f"transformers loads it in {precision} on {device} at run time"]  # fmt: skip

    def open(self, folder: Path, device: str = "cpu") -> TorchSession:
        import torch
        from transformers import AutoModelForCausalLM

        marker = folder / MARKER
        precision = marker.read_text().strip() if marker.is_file() else "fp32"
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        from edgekit.elastic.skip import apply_skips

        model = apply_skips(AutoModelForCausalLM.from_pretrained(folder, dtype=dtype))
        return TorchSession(model.to(device).eval(), device)


class TorchSession:
    """A loaded transformers model, decoding one token at a time with its KV cache."""

    runtime = "torch"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.device = device
        self.model = model
        config = self.model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 2048))
        eos = self.model.generation_config.eos_token_id or config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        import torch

        x = torch.tensor([ids], device=self.device)
        made = 0
        generator = sampling_generator(sampling)
        with torch.inference_mode():
            out = self.model(input_ids=x, use_cache=True, logits_to_keep=1)
            while made < sampling.max_new_tokens and len(ids) + made < self.context_length:
                logits = out.logits[0, -1]
                if made < sampling.min_new_tokens:
                    for eos in self.eos_ids:
                        logits[eos] = -float("inf")
                token = pick_token(logits.cpu(), sampling, generator)
                made += 1
                yield token
                if token in self.eos_ids or made >= sampling.max_new_tokens:
                    return
                x = torch.tensor([[token]], device=self.device)
                out = self.model(input_ids=x, use_cache=True, **cache_kwargs(self.model, cache_of(out)))

    def decoder(self, max_length: int) -> Any:
        """A decoder for speculative decoding (edgekit.speculative.decoders) with its own KV cache."""
        from edgekit.speculative.decoders import TorchDecoder

        return TorchDecoder(self.model, self.device)

    def sequence_logits(self, ids: list[int]) -> Any:
        """Logits at every position of `ids` ([len, vocab]): what perplexity and the chat metrics read."""
        import torch

        with torch.inference_mode():
            return self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float().cpu()

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        import torch

        x = torch.tensor([ids], device=self.device)
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.model(input_ids=x, use_cache=True, logits_to_keep=1)
            if self.device == "cuda":
                torch.cuda.synchronize()
            prefilled = time.perf_counter()
            pick_token(out.logits[0, -1], Sampling())
            return prefilled - start, time.perf_counter() - start


class ElasticTorchSession(TorchSession):
    """A torch session on an elastic model that can change shape in place: every shape is a slice of
    the same loaded weights (with its SMOL mix merged), so reshaping builds a new small module from
    tensors already in memory instead of reading a checkpoint."""

    def __init__(self, elastic: Any, plan: Any, base_config: dict[str, Any], shape: Any, device: str = "cpu") -> None:
        self.elastic, self.plan, self.base_config = elastic, plan, base_config
        self.shape, self.device = shape, device
        super().__init__(self._build(shape), device)

    def _build(self, shape: Any) -> Any:
        import torch

        from edgekit.elastic.extract import elastic_state, hf_model

        self.plan.check_shape(shape)
        from edgekit.elastic.skip import subnet_skips

        layers = self.plan.layer_sets[shape.depth]
        with torch.no_grad():
            state = elastic_state(self.elastic.eval(), shape)
        skip = subnet_skips(layers, self.plan.skips_at(shape.depth))
        return hf_model(self.base_config, self.plan.geometry, shape, layers, state, skip).to(self.device)

    def reshape(self, shape: Any) -> float:
        """Switch to `shape`; return the seconds it took."""
        start = time.perf_counter()
        self.model = self._build(shape)
        self.shape = shape
        return time.perf_counter() - start
