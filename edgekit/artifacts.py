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


REHASH_ENV = "EDGEKIT_REHASH"  # set (by `edgekit --rehash`): every hash is computed again, none remembered


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
    if isinstance(hit, dict) and hit.get("stamp") == stamp and not os.environ.get(REHASH_ENV):
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


def partial_name(name: str, kind: str = "") -> str:
    """The prefix of a temporary folder for `name`: it carries the writer's pid, so a later run can tell a
    folder whose writer was killed (swept) from one being written right now (left alone)."""
    return f"{PARTIAL_PREFIX}{name}-{kind}{os.getpid()}-"


def _owner(folder: Path) -> int | None:
    """The pid in a partial folder's name (None for a name from before pids were recorded)."""
    for part in reversed(folder.name.split("-")[:-1]):
        if part.isdigit():
            return int(part)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    # a zombie (killed, not yet reaped by its parent) has a pid but writes nothing
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def sweep_partials(parent: Path) -> list[Path]:
    """Delete the temporary folders in `parent` whose writer is gone (killed, even by SIGKILL, which no
    cleanup handler sees): every command that writes there calls this first, so leftovers last only until
    the next run. Folders of a writer still running are left alone; so is anything without a pid."""
    removed = []
    if not parent.is_dir():
        return removed
    for stale in parent.glob(f"{PARTIAL_PREFIX}*"):
        pid = _owner(stale)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def remove_stale_partials(parent: Path, name: str) -> list[Path]:
    """Delete temporary folders left by an interrupted build of `name` (they are never loaded); the caller
    holds `name`'s lock, so none of them is being written."""
    removed = []
    for stale in parent.glob(f"{PARTIAL_PREFIX}{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    return removed


LOCK_PREFIX = ".lock-"
_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth): a process may nest its own locks


@contextlib.contextmanager
def destination_lock(final: Path) -> Iterator[None]:
    """Hold `final`'s lock (an flock on `.lock-NAME` beside it) for the block: a second writer of the same
    destination, in another process, fails at once with one line instead of both reporting success while
    one result silently replaces the other. The kernel drops the lock when its holder dies, however it dies,
    so a killed writer never blocks the next one. Re-entrant within a process."""
    import fcntl

    from edgekit.errors import ResourceError

    final = Path(final).expanduser().absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f"{LOCK_PREFIX}{final.name}"
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ResourceError(
                f"{final} is being written by another edgekit (pid {holder}); wait for it, or write elsewhere"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held[path] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _held[path]
        if depth > 1:
            _held[path] = (fd, depth - 1)
        else:
            del _held[path]
            os.close(fd)  # closing the last descriptor releases the flock


@contextlib.contextmanager
def work_dir(parent: Path, name: str) -> Iterator[Path]:
    """A scratch folder for building `name` (extracted checkpoints, compiled candidates), in `parent`, where
    the result will go: one place to sweep, and on the same disk as the result. Removed at the end; if the
    process is killed, the next writer in `parent` sweeps it (sweep_partials)."""
    parent = Path(parent).expanduser().absolute()
    parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(parent)
    tmp = Path(tempfile.mkdtemp(prefix=partial_name(name, "work-"), dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; on success it becomes `final` in one rename.

    On any exception (Ctrl-C included) the temporary folder is removed and `final` is untouched; after a
    SIGKILL the next writer in the same folder removes it. `final`'s lock is held throughout.
    """
    final = Path(final)
    check_writable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with destination_lock(final):
        sweep_partials(final.parent)
        tmp = Path(tempfile.mkdtemp(prefix=partial_name(final.name), dir=final.parent))
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
                old = Path(tempfile.mkdtemp(prefix=partial_name(final.name, "old-"), dir=final.parent))
                os.replace(final, old / "x")
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise_if_disk_full(exc, final.parent)
            raise


def raise_if_disk_full(exc: BaseException, where: Path) -> None:
    """A full disk as one line (exit 5) naming the folder and what is free, instead of a traceback from
    whichever writer hit it."""
    import errno

    from edgekit.errors import ResourceError

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(where).free if where.exists() else 0
        raise ResourceError(f"no space left on the disk holding {where} ({free / 1e6:.0f} MB free); "
                            "nothing was written") from None  # fmt: skip


def check_free_space(where: Path, need: int, what: str) -> None:
    """Refuse, before any work, a job that will not fit on the disk holding `where`."""
    from edgekit.errors import ResourceError

    where = Path(where).expanduser().absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < need:
        raise ResourceError(f"{what} needs about {need / 1e6:.0f} MB and the disk holding {where} has "
                            f"{free / 1e6:.0f} MB free")  # fmt: skip


SEAL = "sealed_sha256"


def _canonical(data: dict[str, Any]) -> bytes:
    body = {k: v for k, v in data.items() if k != SEAL}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    """A manifest (the file that lists an artifact's hashes) written with a hash of its own content inside, so a
    changed field (a shape name, a budget, a file's recorded hash) is caught like a changed weight file. It
    guards against corruption and accidents, not against someone who rewrites the seal too: that takes a
    signature, which needs a key edgekit does not have."""
    plain = json.loads(json.dumps(data, default=str))  # the values as they will read back
    write_json_atomic(path, {**plain, SEAL: hashlib.sha256(_canonical(plain)).hexdigest()})


def check_seal(data: Any, path: Path, what: str, fix: str = "") -> None:
    """IntegrityError when a sealed manifest's content no longer matches its seal (files written before seals
    have none and are read as they are)."""
    if isinstance(data, dict) and SEAL in data and hashlib.sha256(_canonical(data)).hexdigest() != data[SEAL]:
        raise IntegrityError(f"{what} is corrupt: {path.name} was altered after it was written{fix}")


def read_format_json(path: Path, kind: str, what: str, fix: str = "", **context: Any) -> dict[str, Any]:
    """A JSON artifact file of format `kind`, in its current form (older versions upgraded, see
    edgekit.formats): missing, unreadable, altered (a sealed manifest) or foreign is an IntegrityError saying
    which (and `fix`, how to get a good one)."""
    from edgekit.formats import upgrade

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise IntegrityError(f"{what} is incomplete: no {path.name}{fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IntegrityError(f"{what} is corrupt: {path.name} is not valid JSON{fix}") from None
    check_seal(data, path, what, fix)
    if isinstance(data, dict):
        data.pop(SEAL, None)  # checked; the rest of the code sees the content only
    return upgrade(kind, data, what, **context)


def utc_now() -> str:
    """Now, as every edgekit file records a time: ISO 8601 in UTC, to the second."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
