"""Check a ``--where`` filter before Lance evaluates it: the whole text must be one filter.

Lance parses a filter as ``SELECT 1 FROM t WHERE <filter>`` and stops at the end of the
first complete expression: ``label = 'sad'; DELETE FROM clips``, ``label = 'sad' garbage``
or ``label = 'sad') OR (1 = 1`` silently run as ``label = 'sad'``. A wrong answer with exit
code 0 is worse than an error, so :func:`validate_where` refuses a filter unless the parser
consumes all of it:

1. a scan outside quoted text (``'...'``, ``"..."`` and `````...````, quotes doubled to
   escape) refuses ``;``, a ``--`` comment, unbalanced or misnested parentheses and an
   unterminated quote;
2. with a schema, the filter is evaluated on an empty in-memory Lance dataset of that
   schema, as given (unknown columns, wrong types) and as ``(<filter>) AND true``: a tail
   the parser would have dropped now sits before the closing parenthesis and fails.

:meth:`featurestore.store.Store.table` calls it for every filter it runs.
"""

from __future__ import annotations

import functools
import uuid

import pyarrow as pa

from .errors import QueryError

__all__ = ["validate_where", "default_schema"]

_QUOTES = ("'", '"', "`")
_EXAMPLE = "e.g. --where \"label = 'sad' AND split = 'test'\""


def validate_where(where: str | None, schema: pa.Schema | None = None) -> None:
    """Raise :class:`QueryError` unless ``where`` is one whole SQL filter expression.

    Args:
        where: the filter (None or blank: nothing to check).
        schema: the columns it filters; when given, the filter is also evaluated (on no
            rows) so unknown columns and text the parser would drop are caught.

    Raises:
        QueryError: the filter holds ``;``, unbalanced parentheses or an unterminated
            quote, names an unknown column, or has text after its first expression.
    """
    if where is None or not where.strip():
        return
    _scan(where)
    if schema is not None:
        _evaluate(where, schema)


def default_schema(name: str) -> pa.Schema | None:
    """The schema a fixed dataset (``clips.lance``, ``errors.lance``) is created with, so a
    filter is checked even before the dataset exists; None for any other name."""
    from .schema import CLIPS, ERRORS, clips_schema, errors_schema

    return {CLIPS: clips_schema, ERRORS: errors_schema}.get(name, lambda: None)()


def _scan(where: str) -> None:
    """Refuse ``;``, bad parentheses and unterminated quotes outside quoted text."""
    depth = 0
    quote: str | None = None
    opened_at = 0
    i = 0
    while i < len(where):
        char = where[i]
        if quote is not None:
            if char == quote:
                if where[i + 1 : i + 2] == quote:  # doubled quote: an escaped one
                    i += 1
                else:
                    quote = None
        elif char in _QUOTES:
            quote, opened_at = char, i
        elif char == ";":
            raise QueryError(
                f"--where {where!r} is more than one filter: ';' at character {i + 1} would end "
                f"it and the rest would be ignored; pass a single condition ({_EXAMPLE})"
            )
        elif where.startswith("--", i):
            raise QueryError(
                f"--where {where!r} holds a '--' comment (character {i + 1}) that would hide the "
                "rest of the filter: remove it"
            )
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise QueryError(
                    f"--where {where!r} closes a parenthesis never opened (character {i + 1}); "
                    f"the text after it would be ignored: balance the parentheses"
                )
        i += 1
    if quote is not None:
        raise QueryError(
            f"--where {where!r} has an unterminated {quote} quote (character {opened_at + 1}): "
            f"close it (write a quote inside a string twice: 'it''s')"
        )
    if depth > 0:
        raise QueryError(
            f"--where {where!r} leaves {depth} parenthes{'is' if depth == 1 else 'es'} open: "
            "balance the parentheses"
        )


@functools.lru_cache(maxsize=256)
def _evaluate(where: str, schema: pa.Schema) -> None:
    """Run ``where`` and ``(where) AND true`` on an empty dataset of ``schema`` (cached:
    the same filter on the same columns is checked once per process)."""
    import lance

    columns = ", ".join(schema.names)
    example = _example(schema)
    try:
        ds = lance.write_dataset(schema.empty_table(), f"memory://emofs-filter-{uuid.uuid4().hex}")
    except (ValueError, OSError, TypeError, pa.ArrowException):  # a type Lance cannot hold
        return  # empty: the real query still evaluates the filter
    try:
        ds.to_table(filter=where, limit=1)
    except (ValueError, OSError) as exc:
        raise QueryError(
            f"cannot evaluate --where {where!r}: {_reason(exc)} (columns: {columns}); "
            f"quote strings with '...' ({example})"
        ) from exc
    try:
        ds.to_table(filter=f"({where}) AND true", limit=1)
    except (ValueError, OSError) as exc:
        raise QueryError(
            f"--where {where!r} is not one whole filter: the SQL parser would ignore part of it "
            f"({_reason(exc)}); join conditions with AND / OR ({example})"
        ) from exc


def _example(schema: pa.Schema) -> str:
    if "stage" in schema.names and "label" not in schema.names:  # errors.lance
        return "e.g. --where \"stage = 'ingest' AND uri LIKE '%.mp4'\""
    return _EXAMPLE


def _reason(exc: BaseException) -> str:
    """The useful part of a Lance error: no 'Invalid user input', no Rust source path."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = text.split(", /home/")[0].split(", /rust")[0]
    text = text.removeprefix("Invalid user input: ")
    if "(sql parser error: " in text:
        text = "sql parser: " + text.split("(sql parser error: ", 1)[1].rstrip(")")
    if "Valid fields are" in text:  # the columns are listed by the caller
        text = text.split(" Valid fields are")[0]
    return text
