"""Recorded Jetson files shared by the hardware tests: the L4T release line and jtop recordings (tests/data)."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent.parent / "data"
L4T_LINE = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
)


def recording(name: str) -> dict:
    return json.loads((DATA / name).read_text())
