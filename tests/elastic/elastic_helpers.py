"""Helpers shared by the plan and extraction tests (tests/elastic)."""

from __future__ import annotations

from pathlib import Path


def _no_partials(parent: Path) -> bool:
    return not any(p.name.startswith(".partial-") for p in parent.iterdir())
