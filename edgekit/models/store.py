"""The model cache: one folder per pulled model, valid only with a manifest whose hashes match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.artifacts import PARTIAL_PREFIX, read_format_json, verify_files
from edgekit.errors import IntegrityError
from edgekit.formats import tag
from edgekit.paths import models_dir

MANIFEST = "edgekit-model.json"
FORMAT = tag("edgekit-model")


def entry_dir(name: str) -> Path:
    return models_dir() / name


def read_entry(path: Path, verify: bool = True) -> dict[str, Any]:
    """The entry's manifest, after checking every file against it; IntegrityError if anything is off."""
    what = f"cached model {path.name}"
    fix = f": re-run `edgekit models pull {path.name} --force`"
    if not (path / MANIFEST).is_file():
        raise IntegrityError(f"{what} is incomplete (no manifest): re-run `edgekit models pull {path.name}`")
    try:
        manifest = read_format_json(path / MANIFEST, "edgekit-model", what)
        files = manifest["files"]
        if verify:
            verify_files(path, files, what)
    except (IntegrityError, KeyError, TypeError) as exc:
        problem = str(exc) if isinstance(exc, IntegrityError) else f"{what} has a corrupt manifest"
        raise IntegrityError(f"{problem}{fix}") from None
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


def catalog() -> list[dict[str, Any]]:
    """Every known model with its state in the cache (pulled, broken, not pulled), then any other cache entry."""
    from edgekit.models.registry import known_models

    pulled = {path.name: (path, manifest) for path, manifest in list_entries()}
    rows = []
    for spec in known_models():
        path, manifest = pulled.pop(spec.name, (entry_dir(spec.name), None))
        state = "pulled" if manifest else ("broken: pull again" if path.exists() else "not pulled")
        rows.append({
            "name": spec.name, "title": spec.title, "source": f"{spec.package}=={spec.package_version}",
            "hf_id": spec.hf_id, "state": state, "path": str(path) if path.exists() else None,
            "num_parameters": manifest["num_parameters"] if manifest else spec.num_parameters,
        })  # fmt: skip
    for name, (path, manifest) in pulled.items():
        rows.append({
            "name": name, "title": (manifest or {}).get("title", ""), "source": "cache",
            "hf_id": (manifest or {}).get("hf_id"), "state": "pulled" if manifest else "broken: pull again",
            "path": str(path), "num_parameters": (manifest or {}).get("num_parameters"),
        })  # fmt: skip
    return rows
