"""Progress display for long work: a rich spinner per step on stderr, with each step's time."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import ContextManager

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgekit.console import err


@contextlib.contextmanager
def steps() -> Iterator[Callable[[str], ContextManager[None]]]:
    """Yield `step(label)`, a context manager that shows `label` with a spinner until it finishes."""
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=err, transient=False)

    @contextlib.contextmanager
    def step(label: str) -> Iterator[None]:
        task = progress.add_task(label, total=1)
        start = time.perf_counter()
        try:
            yield
        finally:
            progress.update(task, completed=1,
                            description=f"{label} [dim]({time.perf_counter() - start:.1f}s)[/dim]")

    with progress:
        yield step
