"""Which inference runtimes are installed, their versions and what each offers on this host."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any


@dataclass
class RuntimeInfo:
    name: str  # the runtime id used on the command line: ort, torch, mlc, llamacpp, tvm
    package: str
    installed: bool
    version: str | None = None
    offers: list[str] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dist_version(*names: str) -> tuple[str | None, str | None]:
    for name in names:
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return None, None


def _ort() -> RuntimeInfo:
    dist, ver = _dist_version("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")
    info = RuntimeInfo("ort", dist or "onnxruntime-genai", ver is not None, ver)
    if not info.installed:
        info.note = "pip install onnxruntime-genai (CPU) or onnxruntime-genai-cuda"
        return info
    try:
        import onnxruntime

        info.offers = list(onnxruntime.get_available_providers())
    except Exception as exc:  # the genai wheel normally brings onnxruntime; say so if it did not
        info.note = f"onnxruntime not importable: {exc}"
    return info


def _torch() -> RuntimeInfo:
    _, ver = _dist_version("torch")
    info = RuntimeInfo("torch", "torch", ver is not None, ver)
    if not info.installed:
        return info
    import torch

    info.offers = ["cpu"]
    if torch.cuda.is_available():
        info.offers.append(f"cuda ({torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda})")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        info.offers.append("mps")
    return info


def _mlc() -> RuntimeInfo:
    dist, ver = _dist_version("mlc-llm", "mlc-llm-nightly", "mlc-llm-nightly-cu122", "mlc-llm-cu122")
    if ver is None and importlib.util.find_spec("mlc_llm") is not None:
        # Jetson containers build mlc_llm from source, so there is no dist metadata to read.
        mod = importlib.import_module("mlc_llm")
        dist, ver = "mlc_llm (source build)", getattr(mod, "__version__", "unknown")
    info = RuntimeInfo("mlc", dist or "mlc-llm", ver is not None, ver)
    if not info.installed:
        info.note = "no PyPI wheels: use a jetson-containers MLC image or MLC's own wheel index"
    return info


def _llamacpp() -> RuntimeInfo:
    _, ver = _dist_version("llama-cpp-python")
    info = RuntimeInfo("llamacpp", "llama-cpp-python", ver is not None, ver)
    if not info.installed:
        info.note = "pip install llama-cpp-python"
    else:
        try:
            import llama_cpp

            info.offers = ["cpu"] + (["gpu offload"] if llama_cpp.llama_supports_gpu_offload() else [])
        except Exception as exc:
            info.note = f"installed but not importable: {exc}"
    return info


def _tvm() -> RuntimeInfo:
    dist, ver = _dist_version("apache-tvm", "tlcpack", "mlc-ai-nightly")
    info = RuntimeInfo("tvm", dist or "apache-tvm", ver is not None, ver)
    if not info.installed:
        info.note = "pip install apache-tvm"
    else:
        try:
            import tvm
            from tvm.target import codegen

            info.offers = [f"llvm ({codegen.llvm_get_system_cpu()})"]
            gpu = tvm.cuda(0)
            if gpu.exist:
                info.offers.append(f"cuda ({gpu.device_name}, sm_{gpu.compute_version.replace('.', '')})")
        except Exception as exc:
            info.note = f"installed but not importable: {exc}"
    return info


PROBES = (_ort, _torch, _mlc, _llamacpp, _tvm)


def detect_runtimes() -> list[RuntimeInfo]:
    return [probe() for probe in PROBES]
