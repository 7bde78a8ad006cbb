"""Values derived from a dataset, kept in memory per dataset version.

A long-running process (the analyst app, a notebook) asks the same store the same
questions many times. :func:`dataset_version` answers "has this dataset changed?" in
microseconds from an open handle (it sees commits by any process), and
:func:`per_version` rebuilds a derived value only when the answer is yes.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

from .store import Store

__all__ = ["dataset_version", "per_version"]

T = TypeVar("T")

_HANDLES: dict[str, Any] = {}
_VALUES: dict[tuple[str, str], tuple[int | None, Any]] = {}
_LOCK = threading.Lock()


def dataset_version(store: Store, name: str) -> int | None:
    """The latest version of dataset ``name`` (None when it does not exist), cheaply.

    The first call opens the dataset; later calls ask that open handle for the latest
    version (a look at the version files, no manifest read, microseconds), which sees
    every commit made since, by this process or another.
    """
    key = store.path(name)
    handle = _HANDLES.get(key)
    if handle is not None:
        try:
            return int(handle.latest_version)
        except Exception:  # noqa: BLE001 - dataset removed or unreadable: open it afresh
            _HANDLES.pop(key, None)
    handle = store.dataset(name)
    if handle is None:
        return None
    _HANDLES[key] = handle
    return int(handle.version)


def per_version(store: Store, name: str, what: str, build: Callable[[Any], T]) -> T:
    """``build(dataset)`` for the current version of dataset ``name``, cached per process.

    Args:
        store: the store.
        name: the dataset (e.g. ``clips.lance``).
        what: names the derived value, so several can be kept per dataset.
        build: turns the opened dataset (None when it does not exist) into the value.
    """
    key = (store.path(name), what)
    version = dataset_version(store, name)
    cached = _VALUES.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    with _LOCK:
        cached = _VALUES.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        handle = _HANDLES.get(store.path(name))  # opened by dataset_version: reuse it
        ds = handle if handle is not None and handle.version == version else store.dataset(name)
        value = build(ds)
        _VALUES[key] = (None if ds is None else ds.version, value)
        return value
