"""Inference runtimes behind one interface: compile a subnet folder, open it, stream tokens."""

from __future__ import annotations

from edgekit.engines.base import Engine, Sampling, Session
from edgekit.errors import MissingDependencyError, UsageError

__all__ = ["Engine", "Sampling", "Session", "get_engine", "ENGINES"]

# Runtimes named in target descriptors that this edgekit cannot drive yet say so plainly.
ENGINES = ("ort", "torch", "tvm", "mlc")
LATER = {
    "llamacpp": "llama.cpp is compared in bench/ only; deploy with ort or torch",
}


def get_engine(name: str) -> Engine:
    if name == "ort":
        from edgekit.engines.ort import OrtEngine

        return OrtEngine()
    if name == "torch":
        from edgekit.engines.torch_engine import TorchEngine

        return TorchEngine()
    if name == "tvm":
        from edgekit.engines.tvm_engine import TvmEngine

        return TvmEngine()
    if name == "mlc":
        from edgekit.engines.mlc import MlcEngine

        return MlcEngine()
    if name in LATER:
        raise MissingDependencyError(f"runtime '{name}': {LATER[name]}")
    raise UsageError(f"unknown runtime '{name}'; known: {', '.join(ENGINES)}")
