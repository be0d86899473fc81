"""llama.cpp through llama-cpp-python: the subnet written as GGUF (edgekit.export.gguf), quantized, and run by
llama.cpp's own CPU (or offloaded GPU) kernels. The compiled folder is `model.gguf` plus the tokenizer files,
so edgekit renders the chat template as for every runtime and llama.cpp only sees token ids."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.engines.base import RuntimeInfo, Sampling
from edgekit.errors import MissingDependencyError, UsageError, first_line
from edgekit.export.gguf import GGUF_WRITES, LLAMA_QUANTIZES, quantize_with_llama_cpp, write_gguf
from edgekit.models.weights import TOKENIZER_FILES
from edgekit.packages import installed_version

INSTALL = "pip install llama-cpp-python (builds llama.cpp from source: a few minutes)"
# q4_1 first: edgekit's GPTQ weights fit its blocks exactly (a scale and a minimum per 32), so the calibrated
# 4-bit weights deploy builds for ONNX Runtime reach llama.cpp unchanged; q4_k_m is llama.cpp's own quantizer
PRECISIONS = ["q4_1", "q4_k_m", "q4_0", "q8_0", "f16", "f32"]
MODEL_FILE = "model.gguf"


def probe() -> RuntimeInfo:
    _, ver = installed_version("llama-cpp-python")
    info = RuntimeInfo("llamacpp", "llama-cpp-python", ver is not None, ver)
    if not info.installed:
        info.note = INSTALL
        return info
    try:
        import llama_cpp

        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        info.offers = ["cpu"] + (["gpu offload"] if gpu else [])
        info.gpu = gpu
    except Exception as exc:
        info.note = f"installed but not importable: {first_line(exc)}"
    return info


class LlamaCppEngine:
    name = "llamacpp"

    def probe(self) -> RuntimeInfo:
        return probe()

    def check(self) -> None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise MissingDependencyError(f"runtime 'llamacpp' needs llama-cpp-python: {INSTALL}") from None

    def versions(self) -> dict[str, str]:
        _, ver = installed_version("llama-cpp-python")
        return {"llama-cpp-python": ver} if ver else {}

    def precisions(self, device: str) -> list[str]:
        return list(PRECISIONS)

    def compile(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """model.gguf in `precision`: written directly for F32/F16/Q8_0/Q4_0/Q4_1, through an f16 file and
        llama.cpp's quantizer for the K-quants. The tokenizer comes from the pulled model's GGUF where there is
        one (the base model's source file, named in the subnet's manifest)."""
        quant = build_quantization(precision, options)
        start = time.perf_counter()
        source = source_gguf(hf_dir)
        target = out / MODEL_FILE
        if quant is not None:  # our GPTQ (or round-to-nearest) weights, written as their exact Q4_1 blocks
            from edgekit.quantize import quantize_folder

            _, weights, made = quantize_folder(hf_dir, quant)
            record = {**write_gguf(hf_dir, target, precision, source, weights), "quantization": made}
        elif precision in GGUF_WRITES:
            record = write_gguf(hf_dir, target, precision, source)
        else:
            self.check()
            f16 = out / "model-f16.gguf"
            record = write_gguf(hf_dir, f16, "f16", source)
            quantize_with_llama_cpp(f16, target, precision)
            f16.unlink()
            record["quantizer"] = "llama.cpp (llama_model_quantize)"
        for name in (*TOKENIZER_FILES, "config.json", "generation_config.json"):  # the context length, the EOS
            if (hf_dir / name).is_file():
                shutil.copy2(hf_dir / name, out / name)
        return {**record, "precision": precision, "device": device, "tokenizer_from": "source GGUF" if source
                else "tokenizer.json", "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip

    def trial_options(self, precision: str, options: dict[str, str] | None) -> dict[str, str] | None:
        """A GPTQ build's file with its weights rounded to nearest: the same tensors and types, the same speed."""
        quant = build_quantization(precision, options)
        return None if quant is None or quant.method != "gptq" else {**(options or {}), "quant": "rtn"}

    def describe(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> list[str]:
        quant = build_quantization(precision, options)
        how = f" (weights by {quant.method.upper()}, exact Q4_1 blocks)" if quant is not None else ""
        lines = [f"edgekit: write {hf_dir} as GGUF ({'f16' if precision in LLAMA_QUANTIZES else precision}) "
                 f"with the gguf package's writer{how} -> {out / MODEL_FILE}"]  # fmt: skip
        if precision in LLAMA_QUANTIZES:
            lines.append(f"llama_cpp.llama_model_quantize(model-f16.gguf, {MODEL_FILE}, {precision})")
        return lines

    def open(self, folder: Path, device: str = "cpu") -> LlamaCppSession:
        self.check()
        return LlamaCppSession(folder, device)


def build_quantization(precision: str, options: dict[str, str] | None) -> Any:
    """How q4_1's weights are made (edgekit.quantize settings; GPTQ by default, quant=rtn|gguf), or None where the
    gguf package or llama.cpp quantizes by itself. Other options are refused: llama.cpp builds take no more."""
    from edgekit.quantize import OPTIONS, settings_from_options

    if precision not in PRECISIONS:
        raise UsageError(f"llama.cpp builds {', '.join(PRECISIONS)}, not {precision}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"llama.cpp builds take {', '.join(OPTIONS)}, not {', '.join(unknown)}")
    if precision != "q4_1" or options.get("quant") == "gguf":
        if options and options.get("quant") not in (None, "gguf"):
            raise UsageError(f"quant={options['quant']} applies to q4_1 builds, not {precision}")
        return None
    return settings_from_options(options, head_bits=8)


def source_gguf(hf_dir: Path) -> Path | None:
    """The GGUF the subnet's base model was pulled from, when it came from one and is still in the cache."""
    import json

    from edgekit.elastic.extract import SUBNET_MANIFEST

    manifest = hf_dir / SUBNET_MANIFEST
    if not manifest.is_file():
        return None
    from edgekit.models.store import entry_dir

    name = (json.loads(manifest.read_text()).get("base_model") or {}).get("name") or ""
    folder = entry_dir(name) / "gguf" if name and "/" not in name else None
    found = sorted(folder.glob("*.gguf")) if folder is not None and folder.is_dir() else []
    return found[0] if found else None


class LlamaCppSession:
    runtime = "llamacpp"

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import json

        import llama_cpp

        path = folder / MODEL_FILE
        if not path.is_file():
            raise UsageError(f"{folder} has no {MODEL_FILE}: not a llama.cpp build")
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        self.context_length = int(config.get("max_position_embeddings", 2048))
        self.device = device
        self.llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=self.context_length, n_threads=os.cpu_count() or 1, logits_all=True,
            n_gpu_layers=-1 if device == "cuda" else 0, verbose=False,
        )  # fmt: skip
        eos = config.get("eos_token_id", self.llm.token_eos())
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        self.llm.reset()
        if sampling.seed is not None:
            self.llm.set_seed(sampling.seed)
        import numpy as np
        from llama_cpp import LogitsProcessorList

        def hold_eos(input_ids: Any, scores: Any) -> Any:
            # min_new_tokens: a measured run must make exactly the tokens it asked for
            if len(input_ids) - len(ids) < sampling.min_new_tokens:
                scores[list(self.eos_ids)] = -np.inf
            return scores

        greedy = sampling.temperature <= 0
        tokens = self.llm.generate(ids, temp=0.0 if greedy else sampling.temperature,
                                   top_p=1.0 if greedy else sampling.top_p, top_k=0, repeat_penalty=1.0, reset=True,
                                   logits_processor=LogitsProcessorList([hold_eos]))  # fmt: skip
        for made, token in enumerate(tokens, 1):
            yield int(token)
            if token in self.eos_ids or made >= sampling.max_new_tokens or len(ids) + made >= self.context_length:
                return

    def sequence_logits(self, ids: list[int]) -> Any:
        """Logits at every position of `ids` ([len, vocab]) as llama.cpp computes them."""
        import numpy as np
        import torch

        if len(ids) >= self.context_length:
            raise UsageError(f"{len(ids)} tokens do not fit the model's context of {self.context_length}")
        self.llm.reset()
        self.llm.eval(ids)
        return torch.from_numpy(np.array(self.llm.scores[: len(ids)], dtype=np.float32))

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(ids)
        prefilled = time.perf_counter()
        int(self.llm.scores[len(ids) - 1].argmax())  # the greedy pick of the first token
        return prefilled - start, time.perf_counter() - start
