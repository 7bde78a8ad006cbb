"""Progress reporting for long jobs, without printing: the library announces work, the
caller (the CLI, a notebook, the web app) decides how to show it.

Library code wraps a loop in :func:`track_progress` and calls ``advance(n)``; nothing is
drawn unless a caller installed a reporter with :func:`progress_reporter`. Warnings and
status lines go through :mod:`logging` (``logging.getLogger(__name__)`` in each module).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, Optional

__all__ = ["Advance", "ProgressFactory", "track_progress", "progress_reporter"]

#: ``advance(n)``: n more units of work are done.
Advance = Callable[[int], None]
#: ``factory(total, description, unit)`` -> a context manager yielding ``advance``.
ProgressFactory = Callable[[Optional[int], str, str], ContextManager[Advance]]

_factory: ProgressFactory | None = None


def _ignore(n: int = 1) -> None:
    """The ``advance`` of a job nobody watches."""


@contextmanager
def track_progress(
    total: int | None, description: str, *, enabled: bool = True, unit: str = "clips"
) -> Iterator[Advance]:
    """Report progress of ``total`` units to the installed reporter; yields ``advance(n)``.

    A no-op when ``enabled`` is False or no reporter is installed.
    """
    if not enabled or _factory is None:
        yield _ignore
        return
    with _factory(total, description, unit) as advance:
        yield advance


@contextmanager
def progress_reporter(factory: ProgressFactory | None) -> Iterator[None]:
    """Install ``factory`` as the progress reporter for the duration of the block."""
    global _factory
    previous, _factory = _factory, factory
    try:
        yield
    finally:
        _factory = previous
