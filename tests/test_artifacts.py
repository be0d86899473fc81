"""What holds when a writer is killed or has company (edgekit.artifacts, edgekit.shell): leftovers are swept by
the next writer, a second writer of one destination fails at once, a full disk is one line, and the programs
edgekit starts die with it."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgekit.artifacts import (
    PARTIAL_PREFIX,
    atomic_dir,
    check_free_space,
    destination_lock,
    sweep_partials,
    work_dir,
)
from edgekit.errors import ResourceError


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"  # killed, waiting for a parent that is not ours to reap it


def _run_and_kill(script: str, ready: Path) -> None:
    """Run `script` in a fresh interpreter, wait until it touches `ready`, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, "the writer exited before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()


def test_a_killed_writers_partial_folder_is_swept_by_the_next_writer(tmp_path: Path) -> None:
    final = tmp_path / "model"
    ready = tmp_path / "ready"
    _run_and_kill(
        f"""
        from pathlib import Path
        import time
        from edgekit.artifacts import atomic_dir, work_dir
        with work_dir(Path({str(tmp_path)!r}), "deploy") as scratch, atomic_dir(Path({str(final)!r})) as tmp:
            (scratch / "hf").mkdir()
            (tmp / "weights.bin").write_bytes(b"x" * 1000)
            Path({str(ready)!r}).touch()
            time.sleep(60)
        """,
        ready,
    )
    left = sorted(p.name for p in tmp_path.glob(f"{PARTIAL_PREFIX}*"))
    assert len(left) == 2 and not final.exists()  # SIGKILL runs no cleanup: a partial and a scratch folder
    with atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"y")
    assert not list(tmp_path.glob(f"{PARTIAL_PREFIX}*")) and (final / "weights.bin").read_bytes() == b"y"


def test_the_sweep_spares_a_live_writer_and_names_without_a_pid(tmp_path: Path) -> None:
    live = tmp_path / f"{PARTIAL_PREFIX}a-{os.getppid()}-abc123"  # our parent: alive
    dead = tmp_path / f"{PARTIAL_PREFIX}d24-f88-h3-work-{_dead_pid()}-xyz_9"
    unknown = tmp_path / f"{PARTIAL_PREFIX}b-abc123"
    for folder in (live, dead, unknown):
        folder.mkdir()
    assert sweep_partials(tmp_path) == [dead]
    assert live.is_dir() and unknown.is_dir() and not dead.exists()


def test_a_second_writer_of_one_destination_fails_at_once_in_one_line(tmp_path: Path) -> None:
    final = tmp_path / "deployment"
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        import time
        from edgekit.artifacts import destination_lock
        with destination_lock(Path({str(final)!r})):
            Path({str(ready)!r}).touch()
            time.sleep(60)
        """)])  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        start = time.monotonic()
        busy = rf"being written by another edgekit \(pid {holder.pid}\)"
        with pytest.raises(ResourceError, match=busy) as info, atomic_dir(final):
            pass
        assert time.monotonic() - start < 1 and "\n" not in str(info.value)
        assert not final.exists() and not list(tmp_path.glob(f"{PARTIAL_PREFIX}*"))
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the killed holder's lock: the next writer goes ahead
    with atomic_dir(final) as tmp:
        (tmp / "x").write_text("done")
    assert (final / "x").read_text() == "done"


def test_a_process_may_nest_its_own_lock(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with destination_lock(final), atomic_dir(final) as tmp:
        (tmp / "x").write_text("1")
    assert (final / "x").is_file()


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "extract"
    full = r"no space left on the disk holding .* MB free\); nothing was written"
    with pytest.raises(ResourceError, match=full), atomic_dir(final) as tmp:
        (tmp / "part").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not final.exists() and not list(tmp_path.glob(f"{PARTIAL_PREFIX}*"))
    with pytest.raises(ResourceError, match=r"extracting needs about \d+ MB and the disk holding"):
        check_free_space(tmp_path / "not" / "yet", 1 << 60, "extracting")
    check_free_space(tmp_path, 1, "a byte")


def test_a_scratch_folder_goes_with_its_block(tmp_path: Path) -> None:
    with work_dir(tmp_path, "profile") as scratch:
        assert scratch.parent == tmp_path and scratch.name.startswith(f"{PARTIAL_PREFIX}profile-work-{os.getpid()}-")
        (scratch / "f").write_text("x")
    assert not scratch.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_program_edgekit_started_dies_when_edgekit_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    _run_and_kill(
        f"""
        import sys
        from edgekit.shell import Command, capture
        capture(Command((sys.executable, "-c", {child!r}), "a long build"), timeout=None)
        """,
        pid_file,
    )
    deadline = time.monotonic() + 10
    pid = int(pid_file.read_text())
    while not _gone(pid):
        assert time.monotonic() < deadline, f"the child {pid} outlived the edgekit that started it"
        time.sleep(0.05)


def test_a_manifest_altered_after_it_was_written_is_refused(tmp_path: Path) -> None:
    from edgekit.artifacts import SEAL, read_format_json, write_manifest
    from edgekit.errors import IntegrityError

    path = tmp_path / "edgekit-subnet.json"
    write_manifest(path, {"format": "edgekit-subnet/1", "subnet": {"shape": "d24-f75-h3"}, "files": {}})
    assert read_format_json(path, "edgekit-subnet", "it")["subnet"]["shape"] == "d24-f75-h3"
    assert SEAL not in read_format_json(path, "edgekit-subnet", "it")  # checked, then out of the way
    path.write_text(path.read_text().replace("d24-f75-h3", "d31-f75-h3"))  # still valid JSON, one digit off
    with pytest.raises(IntegrityError, match="edgekit-subnet.json was altered after it was written"):
        read_format_json(path, "edgekit-subnet", "it")


def test_an_extracted_checkpoint_is_held_to_its_manifest_when_loaded(cli, tiny_subnet: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "subnet"
    shutil.copytree(tiny_subnet, folder)
    r = cli("generate", "--model", str(folder), "hi", "--max-new-tokens", "2", "--json")
    assert r.code == 0, r.err
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the mtime put back: the ctime still moved
    r = cli("generate", "--model", str(folder), "hi", "--max-new-tokens", "2")
    assert r.code == 3 and "model.safetensors does not match its manifest hash" in r.err and "\n" not in r.err.strip()


def test_rehash_ignores_remembered_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from edgekit.artifacts import REHASH_ENV, sha256_cached
    from edgekit.paths import home

    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(REHASH_ENV, raising=False)
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    first = sha256_cached(f)
    # a remembered hash that is wrong for the file's current bytes (as a forged or stale cache would be)
    cache = home() / "file-hashes.json"
    data = json.loads(cache.read_text())
    data[str(f.resolve())]["value"] = "0" * 64
    cache.write_text(json.dumps(data))
    assert sha256_cached(f) == "0" * 64
    monkeypatch.setenv(REHASH_ENV, "1")
    assert sha256_cached(f) == first
