"""Errors a user can act on. The CLI prints their message as one line and exits with their code."""

from __future__ import annotations


class EdgekitError(Exception):
    """A failure caused by input or environment, explained in one line; never shown as a traceback."""

    exit_code = 1  # only the subclasses below are raised; each has its own code (docs/errors.md)

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(EdgekitError):
    """The command line or a file named on it is wrong (unknown name, unparseable value)."""

    exit_code = 2


class IntegrityError(EdgekitError):
    """An artifact on disk is corrupt, incomplete or does not match its manifest."""

    exit_code = 3


class MissingDependencyError(EdgekitError):
    """A runtime or optional package needed for this path is not installed."""

    exit_code = 4


class ResourceError(EdgekitError):
    """The host cannot do this: not enough memory, no network to a registry."""

    exit_code = 5


class ExternalToolError(EdgekitError):
    """A program or runtime edgekit drives failed at its job (a model builder, a compiler, docker, pip, a
    measurement worker): its own reason is in the message."""

    exit_code = 6


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def utf8_text(text: str, what: str) -> str:
    """`text` unchanged, or a UsageError when it holds bytes that were not UTF-8: Python hands such bytes of
    argv and stdin over as lone surrogates (surrogateescape), which every encoder later refuses."""
    for i, ch in enumerate(text):
        if "\udc80" <= ch <= "\udcff":
            raise UsageError(f"{what} is not UTF-8 text (byte 0x{ord(ch) - 0xDC00:02x} at character {i})")
    return text
