"""The application layer: jobs that combine the floors below it.

- :func:`label` — batch labelling of new archives (ingest -> extract -> predict -> reason);
- :func:`similar` — similar clips for a clip id, a stored path or a new media file
  (extracted on the fly with the index's encoders);
- :func:`ask` — the LLM's answer for a clip id or a new media file.

Only ``cli.py`` / ``commands`` (and the web app) sit above this package.
"""

from __future__ import annotations

from featurestore.lazy import lazy_attributes

__all__ = ["label", "LabelConfig", "LabelReport", "find_similar", "similar", "ask"]

_LAZY = {
    "label": "label",
    "LabelConfig": "label",
    "LabelReport": "label",
    "find_similar": "similar",
    "similar": "similar",
    "ask": "ask",
}


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
