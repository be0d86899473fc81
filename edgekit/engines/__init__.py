"""Inference runtimes behind one interface: probe, compile a subnet folder, open it, stream tokens."""

from __future__ import annotations

from edgekit.engines.base import Engine, RuntimeInfo, Sampling, Session
from edgekit.errors import UsageError

__all__ = ["ENGINES", "Engine", "RuntimeInfo", "Sampling", "Session", "get_engine", "probe_all"]

ENGINES = ("ort", "torch", "tvm", "mlc", "llamacpp")


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
    if name == "llamacpp":
        from edgekit.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine()
    raise UsageError(f"unknown runtime '{name}'; known: {', '.join(ENGINES)}")


def probe_all() -> list[RuntimeInfo]:
    """Every runtime edgekit knows, as found on this machine."""
    return [get_engine(name).probe() for name in ENGINES]
