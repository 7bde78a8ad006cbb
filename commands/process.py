"""How the ``emofs`` process ends: Python's own clean-up, then no native teardown.

The native libraries under emofs keep thread pools alive until the process ends (Arrow's
CPU and I/O pools, Lance's and polars' runtimes, OpenMP in faiss). A normal interpreter
exit finalises Python while those threads still run, then runs the libraries' static
destructors; a native thread that reaches for the GIL or a pool being torn down in that
window ends in ``std::terminate`` (``terminate called without an active exception``,
exit 134) after the command had printed its result. :func:`run_and_exit` runs the
command, then does what the interpreter's exit does for Python (joins non-daemon threads,
runs ``atexit`` handlers, flushes the streams) and ends the process with ``os._exit``,
which runs no static destructor, with the command's exit code.

Only the process entry point does this (:func:`cli.main`, ``emofs`` itself); ``app()``
called from Python, and Typer's ``CliRunner``, behave as before.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
from typing import Callable, NoReturn

__all__ = ["run_and_exit", "exit_now"]


def run_and_exit(run: Callable[[], object]) -> NoReturn:
    """Call ``run`` (the CLI), then end the process with its exit code (:func:`exit_now`).

    ``SystemExit`` gives the code as ``sys.exit`` would (None: 0, a message: printed, 1);
    any other exception prints its traceback and exits 1 (130 for Ctrl+C).
    """
    try:
        run()
        code = 0
    except SystemExit as exc:
        code = _code(exc.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - what the interpreter would print, then exit 1
        traceback.print_exc()
        code = 1
    exit_now(code)


def _code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    try:
        print(value, file=sys.stderr)
    except Exception:  # noqa: BLE001
        pass
    return 1


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` after Python's clean-up, skipping native teardown.

    Non-daemon threads are joined and ``atexit`` handlers run (temporary directories,
    logging, Ray, multiprocessing), in the interpreter's own order; then Python's and C's
    output buffers are flushed and ``os._exit`` ends the process.
    """
    shutdown = getattr(threading, "_shutdown", None)
    try:
        if shutdown is not None:
            shutdown()  # what Py_Finalize does first: wait for non-daemon threads
    except BaseException:  # noqa: BLE001 - a thread that fails to join must not change the code
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - each handler's failure is already printed
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a reader that went away (`| head`), a closed stream
            pass
    _flush_c_stdio()
    os._exit(code)


def _flush_c_stdio() -> None:
    """``fflush(NULL)``: what a native library printed through C stdio, still buffered."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # noqa: BLE001 - no libc to ask: nothing buffered there we know of
        pass
