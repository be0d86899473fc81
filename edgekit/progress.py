"""Progress display for long work: a rich spinner per step on stderr, with each step's time.

In a terminal each finished step stays as a "done" line; when stderr is not a terminal nothing is
drawn, so scripts and failures see only the result or the one-line error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Progress, messages and errors go to stderr, so a result printed on stdout (--json) stays parseable.
err = Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def steps() -> Iterator[Callable[[str], ContextManager[None]]]:
    """Yield `step(label)`, a context manager that shows `label` with a spinner until it finishes."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )

    @contextlib.contextmanager
    def step(label: str) -> Iterator[None]:
        task = progress.add_task(label, total=1)
        start = time.perf_counter()
        yield
        progress.remove_task(task)
        if err.is_terminal:
            progress.console.print(f"[green]✓[/green] {label} [dim]{time.perf_counter() - start:.1f}s[/dim]")

    with progress:
        yield step


def bar(*extra: Any) -> Progress:
    """A progress bar with counts and times on stderr (hidden when stderr is not a terminal)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra,
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
