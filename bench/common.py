"""Shared by the benchmarks: the machine description, result files, data paths."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
# the benchmarks' datasets (wikitext-2/, piqa/, pydoc/, chat/): $EDGEKIT_DATASETS, else ../shared/data beside
# the repository, where this project's development machines keep them
SHARED_DATA = Path(os.environ.get("EDGEKIT_DATASETS") or ROOT.parent.parent / "shared" / "data")
WIKITEXT = SHARED_DATA / "wikitext-2" / "valid.txt"
PIQA = SHARED_DATA / "piqa" / "dev.jsonl"
PIQA_LABELS = SHARED_DATA / "piqa" / "dev-labels.lst"


def machine() -> dict[str, Any]:
    """What the numbers were measured on: the machine record every measured figure carries, the full host
    description, and the versions and threads of the libraries that ran."""
    import torch

    from edgekit import __version__
    from edgekit.artifacts import utc_now
    from edgekit.hardware.host import detect_host, machine_record
    from edgekit.packages import versions

    host = detect_host()
    return {
        "record": machine_record(host),
        "host": host.to_dict(),
        "python": platform.python_version(),
        **versions("torch", "transformers", "onnxruntime-genai", "apache-tvm", "llama-cpp-python"),
        "torch_threads": torch.get_num_threads(),
        "edgekit": __version__,
        "date": utc_now(),
    }


def describe(m: dict[str, Any]) -> str:
    host = m["host"]
    cpu = host.get("cpu") or {}
    return (
        f"{host['kind']} host: {cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} threads, "
        f"{host['memory_total_gb']} GB; torch {m['torch']} ({m['torch_threads']} threads)"
    )


def write_result(name: str, data: dict[str, Any]) -> Path:
    from edgekit.artifacts import write_json_atomic

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_json_atomic(path, data)
    return path


def require_data() -> None:
    missing = [p for p in (WIKITEXT, PIQA, PIQA_LABELS) if not p.is_file()]
    if missing:
        raise SystemExit(f"benchmark data missing: {missing[0]} (set EDGEKIT_DATASETS to the folder that holds it)")
