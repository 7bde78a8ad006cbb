"""Progress bars and warning lines on stderr, shared by every long-running job."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["progress_bar", "warn", "info"]


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    """Print one warning line on stderr."""
    _console().print(f"[yellow]warning:[/yellow] {message}", markup=True, soft_wrap=True)


def info(message: str) -> None:
    """Print one status line on stderr."""
    _console().print(message, markup=False, soft_wrap=True)


@contextmanager
def progress_bar(
    total: int | None, description: str, *, enabled: bool = True, unit: str = "clips"
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (rate in ``unit``/s) on stderr; yields ``advance(n)``.

    Disabled (a no-op) when ``enabled`` is False or stderr is not a terminal and the
    job is small, so logs stay readable.
    """
    if not enabled or (not sys.stderr.isatty() and (total or 0) < 50):
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=_console(), transient=False) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: int = 1) -> None:
            bar.advance(task, n)
            speed = bar.tasks[0].speed
            if speed:
                bar.update(task, rate=f"{speed:.1f} {unit}/s")

        yield advance
