"""The model cache: one folder per pulled model, valid only with a manifest whose hashes match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.artifacts import PARTIAL_PREFIX, verify_files
from edgekit.errors import IntegrityError
from edgekit.paths import models_dir

MANIFEST = "edgekit-model.json"


def entry_dir(name: str) -> Path:
    return models_dir() / name


def read_entry(path: Path, verify: bool = True) -> dict[str, Any]:
    """The entry's manifest, after checking every file against it; IntegrityError if anything is off."""
    what = f"cached model {path.name}"
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise IntegrityError(f"{what} is incomplete (no manifest): re-run `edgekit models pull {path.name}`")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise IntegrityError(
            f"{what} has a corrupt manifest: re-run `edgekit models pull {path.name} --force`"
        ) from None
    if verify:
        try:
            verify_files(path, files, what)
        except IntegrityError as exc:
            raise IntegrityError(f"{exc}: re-run `edgekit models pull {path.name} --force`") from None
    return manifest


def list_entries() -> list[tuple[Path, dict[str, Any] | None]]:
    """Every cache folder with its manifest, or None where the entry is broken (checked by size only)."""
    entries = []
    for path in sorted(models_dir().iterdir()):
        if not path.is_dir() or path.name.startswith(PARTIAL_PREFIX):
            continue
        try:
            entries.append((path, read_entry(path, verify=False)))
        except IntegrityError:
            entries.append((path, None))
    return entries
