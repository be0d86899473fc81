"""ONNX Runtime GenAI: its model builder compiles the subnet, its generator runs it."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit import shell
from edgekit.engines.base import RuntimeInfo, Sampling
from edgekit.errors import ExternalToolError, MissingDependencyError, UsageError, first_line
from edgekit.packages import installed_version, versions
from edgekit.shell import Command

PACKAGES = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")
PRECISIONS = {"cpu": ["int4", "int4-mixed", "fp32"], "cuda": ["int4", "int4-mixed", "fp16", "fp32"]}
# precisions that are builder settings: (the builder's -p, the options they add). int4-mixed keeps the LM head
# and the most quantization-sensitive matmuls in int8 (k-quant): 1.10x the fp32 perplexity against 1.31x for
# plain int4 on SmolLM2-135M, at 0.61x the speed on the 2-core VM (bench/quantization.py)
VARIANTS = {"int4-mixed": ("int4", {"algo_config": "k_quant",
                                    "matmul_mixed_precision": "last_matmul:int8,mixed_layers:int8"})}  # fmt: skip
# The builder needs the hub token only to download; a local folder must never ask for one.
BASE_OPTIONS = {"hf_token": "false"}


INSTALL = "pip install onnxruntime-genai onnx-ir (onnxruntime-genai-cuda on an NVIDIA GPU)"
JETSON_CUDA = "install onnxruntime-gpu and onnxruntime-genai from https://pypi.jetson-ai-lab.io/jp6/cu126"


class OrtEngine:
    name = "ort"

    def probe(self) -> RuntimeInfo:
        dist, ver = installed_version(*PACKAGES)
        info = RuntimeInfo("ort", dist or PACKAGES[0], ver is not None, ver)
        if not info.installed:
            info.note, info.gpu, info.gpu_detail = INSTALL, False, "onnxruntime-genai is not installed"
            return info
        try:
            import onnxruntime
        except Exception as exc:  # the genai wheel normally brings onnxruntime; say so if it did not
            info.note = f"onnxruntime not importable: {first_line(exc)}"
            info.gpu, info.gpu_detail = False, info.note
            return info
        info.offers = list(onnxruntime.get_available_providers())
        info.gpu, info.gpu_detail = _cuda(onnxruntime.__version__, info.offers)
        return info

    def check(self) -> None:
        try:
            import onnxruntime_genai  # noqa: F401
        except ImportError:
            raise MissingDependencyError(f"runtime 'ort' needs ONNX Runtime GenAI: {INSTALL}") from None
        try:
            import onnx_ir  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "the ONNX Runtime GenAI model builder needs onnx-ir: pip install onnx-ir"
            ) from None

    def versions(self) -> dict[str, str]:
        return versions(*PACKAGES, "onnxruntime", "onnxruntime-gpu", "onnx-ir")

    def precisions(self, device: str) -> list[str]:
        return PRECISIONS.get(device, ["int4"])

    def compile(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        self.check()
        if precision not in self.precisions(device):
            raise UsageError(
                f"ONNX Runtime GenAI builds {', '.join(self.precisions(device))} for {device}, not {precision}"
            )
        built_as, extra = build_settings(precision, options)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edgekit-ort-cache-") as cache:
            argv = builder_command(hf_dir, out, built_as, device, extra, Path(cache))
            done = shell.capture(Command(tuple(argv), "build the ONNX model"), timeout=None)
        if not done.ok or not (out / "genai_config.json").is_file():
            raise ExternalToolError(f"ONNX Runtime GenAI's builder failed: {done.error_line(skip=('Saving ',))}")
        return {
            "tool": "onnxruntime_genai.models.builder",
            "precision": precision,
            "device": device,
            "options": extra,
            "seconds": round(time.perf_counter() - start, 2),
        }

    def describe(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> list[str]:
        built_as, extra = build_settings(precision, options)
        return [shlex.join(builder_command(hf_dir, out, built_as, device, extra, Path("<cache>")))]

    def open(self, folder: Path, device: str = "cpu") -> OrtSession:
        self.check()
        return OrtSession(folder, device)


def _cuda(ort_version: str, providers: list[str]) -> tuple[bool, str]:
    """Whether ONNX Runtime GenAI runs on the GPU here: ONNX Runtime must offer CUDA, and the genai package
    must be a CUDA build (PyPI's aarch64 wheels are CPU-only, so a Jetson needs the jetson-ai-lab ones)."""
    if "CUDAExecutionProvider" not in providers:
        offers = ", ".join(providers)
        return False, f"onnxruntime {ort_version} offers {offers}: {JETSON_CUDA} (PyPI's aarch64 wheels are CPU-only)"
    detail = f"onnxruntime {ort_version} with CUDAExecutionProvider"
    try:
        import onnxruntime_genai as og
    except ImportError:
        return True, detail + " (onnxruntime-genai not installed)"
    if hasattr(og, "is_cuda_available") and not og.is_cuda_available():
        return False, detail + ", but onnxruntime-genai was built without CUDA"
    return True, detail


def build_settings(precision: str, options: dict[str, str] | None) -> tuple[str, dict[str, str]]:
    """The builder's precision and extra options for one of ours: a variant's options, then the user's."""
    built_as, adds = VARIANTS.get(precision, (precision, {}))
    return built_as, {**BASE_OPTIONS, **adds, **(options or {})}


def builder_command(
    hf_dir: Path, out: Path, precision: str, device: str, extra: dict[str, str], cache: Path
) -> list[str]:
    return [
        sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
        "-p", precision, "-e", device, "-c", str(cache), "--extra_options", *(f"{k}={v}" for k, v in extra.items()),
    ]  # fmt: skip


class OrtSession:
    runtime = "ort"

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import onnxruntime_genai as og

        self._og = og
        config = og.Config(str(folder))
        config.clear_providers()
        if device == "cuda":
            config.append_provider("cuda")
        self.model = og.Model(config)
        self.device = device
        meta = json.loads((folder / "genai_config.json").read_text())["model"]
        self.context_length = int(meta.get("context_length", 2048))
        eos = meta.get("eos_token_id", [])
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    def _generator(self, prompt: int, sampling: Sampling) -> Any:
        params = self._og.GeneratorParams(self.model)
        total = min(prompt + sampling.max_new_tokens, self.context_length)
        # min_length masks EOS until then, so a measured run makes exactly the tokens it asked for
        search: dict[str, Any] = {"max_length": total, "min_length": min(prompt + sampling.min_new_tokens, total)}
        if sampling.temperature > 0:
            search.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            if sampling.seed is not None:
                search["random_seed"] = sampling.seed
        else:
            search.update(do_sample=False)
        params.set_search_options(**search)
        return self._og.Generator(self.model, params)

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        gen = self._generator(len(ids), sampling)
        gen.append_tokens(ids)
        made = 0
        while made < sampling.max_new_tokens and len(ids) + made < self.context_length:
            gen.generate_next_token()
            token = int(gen.get_next_tokens()[0])
            made += 1
            yield token
            if token in self.eos_ids or gen.is_done():
                return

    def sequence_logits(self, ids: list[int]) -> Any:
        """Logits at every position of `ids` ([len, vocab]) as the built model computes them (int4 included):
        the generator's logits output after one prompt pass holds every position."""
        import numpy as np
        import torch

        if len(ids) >= self.context_length:
            raise UsageError(f"{len(ids)} tokens do not fit the model's context of {self.context_length}")
        gen = self._generator(len(ids), Sampling(max_new_tokens=1))
        gen.append_tokens(ids)
        logits = np.asarray(gen.get_output("logits"))
        return torch.from_numpy(logits.reshape(-1, logits.shape[-1])[-len(ids) :].astype(np.float32))

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        gen = self._generator(len(ids), Sampling(max_new_tokens=1, min_new_tokens=1))
        start = time.perf_counter()
        gen.append_tokens(ids)
        prefilled = time.perf_counter()
        gen.generate_next_token()
        gen.get_next_tokens()
        return prefilled - start, time.perf_counter() - start
