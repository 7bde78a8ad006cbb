"""The analyst app: a local web page (and JSON API) to search, listen, watch, filter,
map and correct the clips of one store (``emofs app``).

- :mod:`.config`: :class:`AppConfig` (host, port, token, read-only, upload limit);
- :mod:`.server`: :func:`create_app` (Starlette) and :func:`serve` (uvicorn);
- :mod:`.security`: Host / token / same-origin guard, errors as one-line JSON;
- :mod:`.queries`: clip filters, prediction-run filters, paging;
- :mod:`.api`: clips, similar, clip page; :mod:`.media`: media with HTTP ranges and
  face thumbnails; :mod:`.uploads`: search by a dropped file; :mod:`.corrections`;
  :mod:`.projection`: the map; :mod:`.runs`: metrics and confusion matrices;
- ``static/``: the page (plain HTML, CSS and JS; no build step, no CDN).

Starlette and uvicorn are imported only when an app is created.
"""

from __future__ import annotations

from featurestore.lazy import lazy_attributes

__all__ = ["AppConfig", "create_app", "serve"]

_LAZY = {"AppConfig": "config", "create_app": "server", "serve": "server"}

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
