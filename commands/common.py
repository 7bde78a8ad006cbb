"""What every command module shares: the error mapping, the option aliases, the printers.

An option used by more than one command is written once here as an ``Annotated`` alias
(``store: StoreOpt = None``), so its flag, help text and env var read the same everywhere.
Nothing here imports a heavy library at module level: ``import cli`` stays cheap.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from featurestore.errors import EmofsError, InputError
from featurestore.parsing import csv_list

__all__ = [
    "EmofsGroup",
    "sub_app",
    "StoreOpt",
    "WhereOpt",
    "FormatOpt",
    "JsonOpt",
    "DeviceOpt",
    "EncoderBatchOpt",
    "FORMATS",
    "csv_list",
    "check_format",
    "open_store",
    "echo_json",
    "print_frame",
    "print_rows",
]


class EmofsGroup(TyperGroup):
    """Maps emofs' typed exceptions, and a full disk anywhere, to one line on stderr and
    exit code 1.

    Also shows the library's log lines and progress bars for the invocation
    (:mod:`commands.console`). ``EMOFS_DEBUG=1`` re-raises, so the traceback shows.
    """

    def invoke(self, ctx):  # noqa: D401 - click API
        from . import console

        console.attach()
        _OPENED.clear()
        try:
            return super().invoke(ctx)
        except EmofsError as exc:
            if os.environ.get("EMOFS_DEBUG") == "1":
                raise
            typer.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            # A full disk in a write the library does not map itself (Lance's commits):
            # one line naming the store, like every other error emofs knows.
            if _is_click_flow(exc) or os.environ.get("EMOFS_DEBUG") == "1" or not _disk_full(exc):
                raise
            from featurestore.diskspace import disk_full_error

            typer.echo(f"error: {disk_full_error(_written_path(exc))}", err=True)
            ctx.exit(1)
        finally:
            console.detach()


def _is_click_flow(exc: BaseException) -> bool:
    """click's own control flow (exit, abort, usage errors; Typer's bundled click or the
    package): never an error to map."""
    return any("click" in cls.__module__ or cls.__module__.startswith("typer") for cls in type(exc).__mro__)


def _disk_full(exc: BaseException) -> bool:
    from featurestore.diskspace import is_disk_full

    return is_disk_full(exc)


#: The store the running command opened (:func:`open_store`): where its writes go.
_OPENED: list[str] = []


def _written_path(exc: BaseException) -> str:
    """What a failed write was writing: the file the error names, else the command's store."""
    filename = getattr(exc, "filename", None)
    if filename:
        return str(filename)
    if _OPENED:
        return _OPENED[-1]
    return os.path.abspath(os.environ.get("EMOFS_STORE") or "emofs-store")


def sub_app(help: str | None = None) -> typer.Typer:
    """A command group (``emofs index ...``) with the same error mapping as the root."""
    return typer.Typer(cls=EmofsGroup, no_args_is_help=True, help=help)


# ------------------------------------------------------------------ shared options
StoreOpt = Annotated[
    Optional[str],
    typer.Option(
        "--store",
        envvar="EMOFS_STORE",
        help="Store directory or object-store URI. [default: ./emofs-store]",
        show_default=False,
    ),
]
WhereOpt = Annotated[
    Optional[str],
    typer.Option("--where", help="SQL filter on clip columns, e.g. \"label = 'sad'\"."),
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Output format: table, json or csv.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
EncoderBatchOpt = Annotated[int, typer.Option("--batch-size", help="Clips per encoder batch and commit.")]
FORMATS = ("table", "json", "csv")


# ------------------------------------------------------------------ flag parsing
def check_format(value: str) -> str:
    """``--format`` must be one of :data:`FORMATS`."""
    if value not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)} (got {value!r})")
    return value


def open_store(store: str | None, *, create: bool = False):
    """The :class:`featurestore.Store` a ``--store`` value names (default ./emofs-store)."""
    from featurestore import Store

    opened = Store(store, create=create)
    _OPENED[:] = [opened.uri]
    return opened


# ------------------------------------------------------------------ printers
def echo_json(value: Any) -> None:
    """One JSON document on stdout (dates, paths and the like as strings)."""
    typer.echo(json.dumps(value, default=str))


def print_frame(frame, fmt: str, *, default_columns: list[str]) -> None:
    """Print a polars DataFrame as a rich table, JSON array or CSV on stdout."""
    if fmt == "json":
        echo_json(frame.to_dicts())
        return
    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
        return
    shown = [c for c in default_columns if c in frame.columns] or frame.columns
    _print_table(shown, frame.select(shown).iter_rows())
    typer.echo(f"{frame.height} rows", err=True)


def print_rows(rows: list[dict[str, Any]], columns: list[str], fmt: str, *,
               default_columns: list[str]) -> None:
    """:func:`print_frame` for a list of row dicts (no DataFrame library loaded).

    Args:
        rows: one dict per row.
        columns: every column, in order (the JSON and CSV output keep them all).
        fmt: table, json or csv.
        default_columns: the columns the table shows.
    """
    if fmt == "json":
        echo_json([{c: r.get(c) for c in columns} for r in rows])
        return
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if r.get(c) is None else r.get(c) for c in columns] for r in rows])
        sys.stdout.write(buf.getvalue())
        return
    shown = [c for c in default_columns if c in columns] or columns
    _print_table(shown, ([r.get(c) for c in shown] for r in rows))
    typer.echo(f"{len(rows)} rows", err=True)


#: Characters of one table cell shown (json / csv keep whole values): a long free-text
#: value (a description, a 4 KiB subtitle) would otherwise fill the screen and take rich
#: seconds to wrap.
CELL_CHARS = 200


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


def _print_table(shown: list[str], rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in shown:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(v) for v in row])
    # Piped into a file or a pager, a table wrapped at rich's default 80 columns is
    # unreadable: give it room (a terminal keeps its own width).
    Console(width=None if sys.stdout.isatty() else 160).print(table)
