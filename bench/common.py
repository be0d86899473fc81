"""Shared by the benchmarks: the machine description, result files, data paths."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SHARED_DATA = Path(os.environ.get("EDGEKIT_SHARED_DATA", ROOT.parent.parent / "shared" / "data"))
WIKITEXT = SHARED_DATA / "wikitext-2" / "valid.txt"
PIQA = SHARED_DATA / "piqa" / "dev.jsonl"
PIQA_LABELS = SHARED_DATA / "piqa" / "dev-labels.lst"


def machine() -> dict[str, Any]:
    """What the numbers were measured on: host, threads and library versions."""
    import torch
    import transformers

    from edgekit import __version__
    from edgekit.hardware.host import detect_host

    host = detect_host().to_dict()
    return {
        "host": host,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "edgekit": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
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
        raise SystemExit(f"benchmark data missing: {missing[0]} (set EDGEKIT_SHARED_DATA to the shared/data folder)")
