"""External programs edgekit drives (docker, ssh, pip): each is a Command that prints exactly as it runs.

Checks capture their output; long steps stream to the user's terminal; a pipeline (`docker save | ssh
... docker load`) is joined with an OS pipe, never through a shell, so nothing is re-quoted.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

NOT_FOUND = 127  # what a shell returns for a missing program; used here for the same case
TIMED_OUT = 124  # what timeout(1) returns
STDERR_FD = 2
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # resolved before any fork: the child only calls it


def die_with_parent() -> Any:
    """A preexec_fn that has the kernel SIGKILL the child when edgekit dies, however it dies (kill -9
    included): a model builder or measurement worker never outlives the deploy that started it. None where
    the kernel cannot (not Linux): there, a normal exit still waits for its children."""
    if _PRCTL is None:
        return None
    parent = os.getpid()

    def arm() -> None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will reap us
            os._exit(1)

    return arm


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    why: str
    pipe_into: tuple[str, ...] = ()  # a second program reading the first one's stdout
    interactive: bool = False  # needs the user's terminal (ssh -t ... docker run -it)

    def text(self) -> str:
        first = shlex.join(self.argv)
        return f"{first} | {shlex.join(self.pipe_into)}" if self.pipe_into else first

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.text(), "why": self.why}


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def last_error_line(self) -> str:
        """The line a failing program says why in, for most (ssh, pip): its last non-empty stderr line,
        else stdout's."""
        return self._error_line(-1)

    def error_line(self, skip: tuple[str, ...] = ()) -> str:
        """For programs that log as they go and end with a traceback (model builders, compilers): the last line
        that names an error, else the last line; lines starting with `skip` are progress, not reasons."""
        lines = [ln.strip() for ln in (self.err + "\n" + self.out).splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(skip)]
        named = [ln for ln in lines if "error" in ln.lower()]
        found = named[-1] if named else lines[-1] if lines else f"exit status {self.code}"
        return found[:300]

    def first_error_line(self) -> str:
        """For programs that say why first and add usage hints after (docker)."""
        return self._error_line(0)

    def _error_line(self, which: int) -> str:
        for text in (self.err, self.out):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[which]
        return f"exit status {self.code}"


def capture(cmd: Command, timeout: float | None = 60.0, env: dict[str, str] | None = None) -> Result:
    """Run a program and keep its output (a check, or a long step whose log only matters when it fails).
    A missing program or a timeout is a result, not an exception; `timeout=None` waits as long as it takes."""
    try:
        done = subprocess.run(
            list(cmd.argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
    except FileNotFoundError:
        return Result(NOT_FOUND, "", f"{cmd.argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Result(TIMED_OUT, "", f"{cmd.argv[0]} gave no answer within {timeout:g} s")
    return Result(done.returncode, done.stdout, done.stderr)


def stream(cmd: Command) -> Result:
    """Run a long step with its output shown as it comes: on stderr, where edgekit's progress goes, so a
    --json result on stdout stays parseable (an interactive command keeps the terminal). For a pipeline,
    the exit status of the first program that failed (a failed `docker save` is not a successful load)."""
    shown = None if cmd.interactive else STDERR_FD
    try:
        if not cmd.pipe_into:
            return Result(subprocess.call(list(cmd.argv), stdout=shown, preexec_fn=die_with_parent()), "", "")
        first = subprocess.Popen(list(cmd.argv), stdout=subprocess.PIPE, preexec_fn=die_with_parent())
        try:
            second = subprocess.Popen(list(cmd.pipe_into), stdin=first.stdout, stdout=shown,
                                      preexec_fn=die_with_parent())  # fmt: skip
        except FileNotFoundError:
            first.kill()
            first.wait()
            raise
        if first.stdout is not None:
            first.stdout.close()  # the reader holds the pipe now, so the writer sees SIGPIPE if it dies
        code_second = second.wait()
        code_first = first.wait()
    except FileNotFoundError as exc:
        return Result(NOT_FOUND, "", f"{exc.filename}: command not found")
    if code_first != 0:
        return Result(code_first, "", f"{cmd.argv[0]} exited with status {code_first}")
    return Result(code_second, "", "" if code_second == 0 else f"{cmd.pipe_into[0]} exited with status {code_second}")
