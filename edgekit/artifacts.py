"""Atomic artifact folders and their manifests: build in a temporary sibling, hash, rename into place."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgekit.errors import IntegrityError

PARTIAL_PREFIX = ".partial-"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stat_cached(path: Path, store: str, compute: Callable[[Path], Any]) -> Any:
    """compute(path), remembered in EDGEKIT_HOME/<store> per (path, inode, size, mtime, ctime) as git's index
    remembers file hashes: re-verifying an unchanged 500 MB model costs a stat, not a read. The change time is
    in the stamp because a write followed by `touch -d` (os.utime) puts the mtime back but never the ctime."""
    from edgekit.paths import home

    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    cache_path = home() / store
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("stamp") == stamp:
        return hit["value"]
    value = compute(path)
    cache[key] = {"stamp": stamp, "value": value}
    tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache))
    os.replace(tmp, cache_path)
    return value


def sha256_cached(path: Path) -> str:
    return stat_cached(path, "file-hashes.json", sha256_file)


def hash_tree(root: Path, skip: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under root, keyed by POSIX relative path."""
    skip = skip or set()
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in skip:
            continue
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def verify_files(root: Path, files: dict[str, dict[str, Any]], what: str) -> None:
    """Raise IntegrityError naming the first file that is missing, resized or altered."""
    for rel, meta in files.items():
        path = root / rel
        if not path.is_file():
            raise IntegrityError(f"{what} is incomplete: {rel} is missing")
        if path.stat().st_size != meta["size"]:
            raise IntegrityError(f"{what} is corrupt: {rel} has the wrong size")
    for rel, meta in files.items():
        if sha256_cached(root / rel) != meta["sha256"]:
            raise IntegrityError(f"{what} is corrupt: {rel} does not match its manifest hash")


def check_writable(out: Path) -> None:
    """Refuse, before any work, a destination whose folder cannot be written (read-only, or not a folder): the
    artifact is built beside it and renamed into place, so that folder must take new entries."""
    from edgekit.errors import UsageError

    parent = Path(out).expanduser().absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {out}: {parent} is not a folder")
    # a probe file, not os.access: root passes every permission check, but not a read-only mount
    try:
        fd, probe = tempfile.mkstemp(prefix=PARTIAL_PREFIX + "probe-", dir=parent)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {parent} is not writable ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def remove_stale_partials(parent: Path, name: str) -> list[Path]:
    """Delete temporary folders left by an interrupted build of `name` (they are never loaded)."""
    removed = []
    for stale in parent.glob(f"{PARTIAL_PREFIX}{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; on success it becomes `final` in one rename.

    On any exception (Ctrl-C included) the temporary folder is removed and `final` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{final.name}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the artifact should read like any other folder
    try:
        yield tmp
        for path in tmp.rglob("*"):  # some writers (safetensors) create files private; artifacts are shared
            if path.is_file():
                path.chmod(path.stat().st_mode | 0o644)
        if final.exists():
            if not replace:
                raise IntegrityError(f"{final} appeared while it was being built; nothing was replaced")
            # Move the old one aside first so there is no instant with neither in place.
            old = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{final.name}-old-", dir=final.parent))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_format_json(path: Path, kind: str, what: str, fix: str = "", **context: Any) -> dict[str, Any]:
    """A JSON artifact file of format `kind`, in its current form (older versions upgraded, see
    edgekit.formats): missing, unreadable or foreign is an IntegrityError saying which (and `fix`, how to
    get a good one)."""
    from edgekit.formats import upgrade

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise IntegrityError(f"{what} is incomplete: no {path.name}{fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IntegrityError(f"{what} is corrupt: {path.name} is not valid JSON{fix}") from None
    return upgrade(kind, data, what, **context)


def utc_now() -> str:
    """Now, as every edgekit file records a time: ISO 8601 in UTC, to the second."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
