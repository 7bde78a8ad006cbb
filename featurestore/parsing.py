"""Small parsers for values users type (flags, config fields), shared by every floor."""

from __future__ import annotations

from .errors import InputError

__all__ = ["csv_list"]


def csv_list(value: str | None, flag: str = "this option") -> list[str]:
    """Parse a comma-separated value; None, '' and 'none' give an empty list.

    Raises:
        InputError: an empty item (``"a,,b"``), naming ``flag``.
    """
    if value is None or value.strip().lower() in ("", "none"):
        return []
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise InputError(f"{flag} takes a comma-separated list without empty items (got {value!r})")
    return items
