"""The elastic checkpoint: a plan, the SMOL weights trained on it, the recipe, and an accuracy table.

    CKPT/plan/                 the plan (plan.json, permutations.safetensors), copied
    CKPT/smol.safetensors      SMOL experts and gate (fp16 when shipped, to stay small)
    CKPT/smol.json             SMOL config and the width grid the gate encodes
    CKPT/recipe.yaml           the recipe that made it
    CKPT/accuracy.json         per shape: dev perplexities and PIQA accuracy
    CKPT/accuracy-predictor.json  perplexity of any shape, fitted on this checkpoint (what `deploy` ranks by)
    CKPT/manifest.json         model identity, training summary, and every file's sha256

The base weights are not copied: the plan's digest names them and every load verifies it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from edgekit import __version__
from edgekit.artifacts import (
    PARTIAL_PREFIX,
    atomic_dir,
    hash_tree,
    read_format_json,
    verify_files,
    write_json_atomic,
    write_manifest,
)
from edgekit.elastic.plan import Plan, load_plan
from edgekit.elastic.smol import Smol, SmolConfig
from edgekit.errors import IntegrityError, UsageError
from edgekit.formats import tag

FORMAT = tag("edgekit-elastic")
SMOL_FORMAT = tag("edgekit-smol")
MANIFEST = "manifest.json"
SMOL_JSON = "smol.json"
ACCURACY = "accuracy.json"


@dataclass
class ElasticCheckpoint:
    path: Path
    plan: Plan
    smol_config: SmolConfig
    widths: list[int]
    manifest: dict[str, Any]
    accuracy: dict[str, Any] | None

    @property
    def name(self) -> str:
        return self.path.name


def shipped_dir() -> Path:
    from edgekit.data import shipped

    return shipped("checkpoints")


def write_checkpoint(
    out: Path,
    plan: Plan,
    smol: Smol,
    recipe: dict[str, Any],
    training: dict[str, Any],
    accuracy: dict[str, Any] | None = None,
    half: bool = False,
    force: bool = False,
    domain: dict[str, Any] | None = None,
) -> Path:
    import torch
    from safetensors.torch import save_file

    if plan.path is None:
        raise UsageError("an elastic checkpoint copies its plan's folder: save the plan first")
    with atomic_dir(out, replace=force) as tmp:
        shutil.copytree(plan.path, tmp / "plan", ignore=shutil.ignore_patterns(".partial-*"))
        dtype = torch.float16 if half else torch.float32
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in smol.state_dict().items()}
        save_file(tensors, str(tmp / "smol.safetensors"), metadata={"format": FORMAT})
        smol_meta = {"format": SMOL_FORMAT, "config": smol.config.to_dict(), "widths": smol.widths,
                     "parameters": smol.num_parameters()}  # fmt: skip
        write_json_atomic(tmp / SMOL_JSON, smol_meta)
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        if accuracy is not None:
            write_json_atomic(tmp / ACCURACY, accuracy)
        manifest = {
            "format": FORMAT,
            "model": plan.model.__dict__,
            "plan": {"depth": plan.depth.method, "width": plan.width.method, "depths": plan.depths},
            "training": training,
            **({"kind": "domain", "domain": domain} if domain else {"kind": "general"}),
            "edgekit_version": __version__,
            "files": hash_tree(tmp),
        }
        write_manifest(tmp / MANIFEST, manifest)
    return out


def set_accuracy(ckpt: ElasticCheckpoint, accuracy: dict[str, Any]) -> None:
    """Add or replace the accuracy table, keeping the manifest's hashes true (both files replaced atomically)."""
    set_file(ckpt, ACCURACY, accuracy)
    ckpt.accuracy = accuracy


def set_file(ckpt: ElasticCheckpoint, name: str, data: dict[str, Any]) -> None:
    """Add or replace one JSON file of the checkpoint and rehash the manifest (each file replaced atomically)."""
    write_json_atomic(ckpt.path / name, data)
    manifest = dict(ckpt.manifest)
    manifest["files"] = hash_tree(ckpt.path, skip={MANIFEST})
    write_manifest(ckpt.path / MANIFEST, manifest)
    ckpt.manifest = manifest


def checkpoint_dir(ref: str | Path) -> Path:
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    shipped = shipped_dir() / str(ref)
    if (shipped / MANIFEST).is_file():
        return shipped
    names = ", ".join(sorted(p.name for p in shipped_dir().glob("*") if (p / MANIFEST).is_file()))
    shipped = f"or a shipped one ({names})" if names else "(none ships with this edgekit yet)"
    raise UsageError(f"no elastic checkpoint at '{ref}': give a folder from `edgekit elastic train` {shipped}")


def load_checkpoint(ref: str | Path, verify: bool = True) -> ElasticCheckpoint:
    folder = checkpoint_dir(ref)
    what = f"elastic checkpoint {folder}"
    manifest = read_format_json(folder / MANIFEST, "edgekit-elastic", what)
    if verify:
        verify_files(folder, manifest.get("files") or {}, what)
    smol_meta = read_format_json(folder / SMOL_JSON, "edgekit-smol", what)
    plan = load_plan(folder / "plan")
    accuracy = None
    if (folder / ACCURACY).is_file():
        accuracy = read_format_json(folder / ACCURACY, "edgekit-accuracy", what, geometry=asdict(plan.geometry))
    try:
        config = SmolConfig(**smol_meta["config"])
        widths = [int(w) for w in smol_meta["widths"]]
    except (TypeError, ValueError, KeyError) as exc:
        raise IntegrityError(f"{what} is corrupt: {SMOL_JSON} ({exc})") from None
    return ElasticCheckpoint(folder, plan, config, widths, manifest, accuracy)


def load_smol(ckpt: ElasticCheckpoint, device: str = "cpu") -> Smol:
    from safetensors.torch import load_file

    smol = Smol(ckpt.plan.geometry, ckpt.smol_config, ckpt.widths)
    state = {k: v.float() for k, v in load_file(str(ckpt.path / "smol.safetensors")).items()}
    try:
        smol.load_state_dict(state)
    except RuntimeError as exc:
        raise IntegrityError(f"elastic checkpoint {ckpt.path}: SMOL weights do not fit its config ({exc})") from None
    return smol.to(device).eval()


@dataclass
class CheckpointEntry:
    path: Path
    origin: str  # shipped | user
    manifest: dict[str, Any] | None  # None: the manifest is unreadable (the checkpoint is broken)

    @property
    def kind(self) -> str:
        """general (one-for-all, every shape of a space) or domain (trimmed on one domain, its depths only)."""
        return str((self.manifest or {}).get("kind", "general"))

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest or {}
        return {
            "path": str(self.path),
            "name": self.path.name,
            "origin": self.origin,
            "kind": self.kind,
            "domain": (m.get("domain") or {}).get("name"),
            "model": m.get("model", {}).get("name"),
            "steps": m.get("training", {}).get("steps"),
            "has_accuracy": ACCURACY in m.get("files", {}),
            "ok": self.manifest is not None,
        }


def list_checkpoints(extra_dirs: list[Path]) -> list[CheckpointEntry]:
    """Shipped checkpoints, then those found under `extra_dirs`; a broken one is listed with no manifest."""
    found = []
    for origin, root in [("shipped", shipped_dir())] + [("user", d) for d in extra_dirs]:
        if not root.is_dir():
            continue
        for manifest_path in sorted(p for p in root.rglob(MANIFEST) if PARTIAL_PREFIX not in str(p)):
            try:
                manifest = json.loads(manifest_path.read_text())
                if manifest.get("format") != FORMAT:
                    continue
            except (OSError, json.JSONDecodeError):
                manifest = None
            found.append(CheckpointEntry(manifest_path.parent, origin, manifest))
    return found


def data_notes(ckpt: ElasticCheckpoint, files: dict[str, dict[str, str]]) -> list[str]:
    """Where the data files a recipe names now differ from those the checkpoint recorded (training and
    evaluation): figures made with them will not be the checkpoint's."""
    recorded = (ckpt.manifest.get("training") or {}).get("data") or {}
    notes = []
    for key, now in files.items():
        was = recorded.get(key)
        if was is not None and now["sha256"] != "not a file" and was.get("sha256") != now["sha256"]:
            notes.append(f"{key} {now['name']} is not the file {ckpt.name} was made with "
                         f"(sha256 {now['sha256'][:12]}, it recorded {was['sha256'][:12]})")  # fmt: skip
    return notes


def user_dirs() -> list[Path]:
    """Where `elastic list` looks for the user's checkpoints: $EDGEKIT_HOME/elastic and ./runs."""
    from edgekit.paths import home

    return [home() / "elastic", Path.cwd() / "runs"]
