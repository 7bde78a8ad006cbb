"""Lazy package attributes: ``import heads`` stays cheap, torch loads on first use."""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, where: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``name`` from ``package.<where[name]>`` on first use.

    Args:
        package: the package's ``__name__``.
        where: ``{attribute: submodule}``.
        namespace: the package's ``globals()`` (the value is cached there).
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
