"""llama.cpp (llama-cpp-python): probed here so `doctor` reports it; edgekit compares against it in bench/
on the same GGUF the default model is pulled from, but does not compile or deploy to it yet."""

from __future__ import annotations

from edgekit.engines.base import RuntimeInfo
from edgekit.errors import first_line
from edgekit.packages import installed_version

NOT_YET = "llama.cpp is compared in bench/ only; deploy with ort, tvm, torch or mlc"


def probe() -> RuntimeInfo:
    _, ver = installed_version("llama-cpp-python")
    info = RuntimeInfo("llamacpp", "llama-cpp-python", ver is not None, ver)
    if not info.installed:
        info.note = "pip install llama-cpp-python (builds from source)"
        return info
    try:
        import llama_cpp

        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        info.offers = ["cpu"] + (["gpu offload"] if gpu else [])
        info.gpu = gpu
    except Exception as exc:
        info.note = f"installed but not importable: {first_line(exc)}"
    return info
