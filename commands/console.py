"""What a person sees on stderr: warning lines and progress bars for the library's jobs.

The library only logs (``logging``) and announces progress
(:func:`featurestore.progress.track_progress`); :func:`attach` makes both visible for
one CLI invocation and :func:`detach` undoes it.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from featurestore.progress import Advance, progress_reporter

__all__ = ["attach", "detach", "LIBRARY_LOGGERS"]

#: The packages whose log records the CLI shows.
LIBRARY_LOGGERS = ("featurestore", "extractors", "heads", "llm", "workflows")
#: Jobs this small draw no bar when stderr is not a terminal (logs stay readable).
_QUIET_BELOW = 50


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class _LineHandler(logging.Handler):
    """Warnings as ``warning: ...`` lines, status lines as they are, on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                _console().print(f"[yellow]warning:[/yellow] {message}", markup=True, soft_wrap=True)
            else:
                _console().print(message, markup=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never break the job
            self.handleError(record)


@contextmanager
def _rich_bar(total: int | None, description: str, unit: str) -> Iterator[Advance]:
    """A rich progress bar with a ``unit``/s rate; small jobs off a terminal draw none."""
    if not sys.stderr.isatty() and (total or 0) < _QUIET_BELOW:
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

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=_console(), transient=False) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: int = 1) -> None:
            bar.advance(task, n)
            speed = bar.tasks[0].speed
            if speed:
                bar.update(task, rate=f"{speed:.1f} {unit}/s")

        yield advance


_handler = _LineHandler(level=logging.INFO)
_reporter = None


def attach() -> None:
    """Show the library's log lines and progress bars on stderr (idempotent)."""
    global _reporter
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _handler not in logger.handlers:
            logger.addHandler(_handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    if _reporter is None:
        _reporter = progress_reporter(_rich_bar)
        _reporter.__enter__()


def detach() -> None:
    """Undo :func:`attach` (a library caller in the same process sees no CLI output)."""
    global _reporter
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _handler in logger.handlers:
            logger.removeHandler(_handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    if _reporter is not None:
        _reporter.__exit__(None, None, None)
        _reporter = None
