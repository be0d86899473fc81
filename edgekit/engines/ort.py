"""ONNX Runtime GenAI: its model builder compiles the subnet, its generator runs it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edgekit.engines.base import Sampling
from edgekit.errors import EdgekitError, MissingDependencyError, UsageError

PACKAGES = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")
PRECISIONS = {"cpu": ["int4", "fp32"], "cuda": ["int4", "fp16", "fp32"]}
# The builder needs the hub token only to download; a local folder must never ask for one.
BASE_OPTIONS = {"hf_token": "false"}


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


class OrtEngine:
    name = "ort"

    def check(self) -> None:
        try:
            import onnxruntime_genai  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "runtime 'ort' needs ONNX Runtime GenAI: pip install onnxruntime-genai onnx-ir "
                "(onnxruntime-genai-cuda on an NVIDIA GPU)"
            ) from None
        try:
            import onnx_ir  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "the ONNX Runtime GenAI model builder needs onnx-ir: pip install onnx-ir"
            ) from None

    def versions(self) -> dict[str, str]:
        found = {p: v for p in (*PACKAGES, "onnxruntime", "onnxruntime-gpu", "onnx-ir") if (v := _version(p))}
        return found

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
        extra = {**BASE_OPTIONS, **(options or {})}
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edgekit-ort-cache-") as cache:
            proc = subprocess.run(builder_command(hf_dir, out, precision, device, extra, Path(cache)),
                                  capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0 or not (out / "genai_config.json").is_file():
            raise EdgekitError(f"ONNX Runtime GenAI's builder failed: {_last_error(proc.stderr + proc.stdout)}")
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
        extra = {**BASE_OPTIONS, **(options or {})}
        return [shlex.join(builder_command(hf_dir, out, precision, device, extra, Path("<cache>")))]

    def open(self, folder: Path, device: str = "cpu") -> OrtSession:
        self.check()
        return OrtSession(folder, device)


def builder_command(
    hf_dir: Path, out: Path, precision: str, device: str, extra: dict[str, str], cache: Path
) -> list[str]:
    return [
        sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
        "-p", precision, "-e", device, "-c", str(cache), "--extra_options", *(f"{k}={v}" for k, v in extra.items()),
    ]  # fmt: skip


def _last_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.lstrip().startswith("Saving ")]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


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

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        gen = self._generator(len(ids), Sampling(max_new_tokens=1, min_new_tokens=1))
        start = time.perf_counter()
        gen.append_tokens(ids)
        prefilled = time.perf_counter()
        gen.generate_next_token()
        gen.get_next_tokens()
        return prefilled - start, time.perf_counter() - start
