"""The application layer: jobs that combine the floors below it.

- :func:`label` — batch labelling of new archives (ingest -> extract -> predict -> reason);
- :func:`similar` — similar clips for a clip id, a stored path or a new media file
  (extracted on the fly with the index's encoders);
- :func:`ask` — the LLM's answer for a clip id or a new media file.

Only ``cli.py`` / ``commands`` (and the web app) sit above this package.
"""

from __future__ import annotations

__all__ = ["label", "LabelConfig", "LabelReport", "find_similar", "similar", "ask"]

_LAZY = {
    "label": "label",
    "LabelConfig": "label",
    "LabelReport": "label",
    "find_similar": "similar",
    "similar": "similar",
    "ask": "ask",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
