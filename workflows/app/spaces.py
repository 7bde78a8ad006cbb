"""Search spaces: the store's indexes, a run's learned emotion space first.

An index over a feature set written by ``emofs embed`` (spec encoder
:data:`heads.embed.EMBED_ENCODER`) searches the space a trained head learned: neighbours
there share the query's emotion far more often than in raw eGeMAPS or Whisper space. The
page offers such a space first, searches it by default, and names the space of every
result list; ``POST /api/spaces {"run": NAME}`` builds one from a finished head run under
the runs folder (``emofs embed`` + ``emofs index build`` in one click).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from featurestore.errors import EmofsError, IndexCorruptError
from featurestore.features import feature_spec
from featurestore.index import index_names, shared_manifest
from featurestore.store import Store

from .errors import InputError, NotFoundError, PayloadError
from .rundirs import find_run_folder, is_finished_run, run_folders

__all__ = ["spaces", "describe_space", "default_index", "head_runs", "build_space",
           "spaces_route", "build_space_route", "SPACE_NAME"]

#: Default feature-set (and index) name of a learned space (as ``emofs embed RUN --name emotion``).
SPACE_NAME = "emotion"
_BUILDING = threading.Lock()
#: (store, index, manifest digest) -> its description (reading feature specs opens Lance).
_DESCRIBED: dict[tuple[str, str, Any], dict[str, Any]] = {}


def describe_space(store: Store, name: str, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"index", "kind": learned|raw, "label", "encoders", "run_id", "rows", "updated_at"}``
    of index ``name``."""
    from heads.embed import EMBED_ENCODER

    if manifest is None:
        try:
            manifest = shared_manifest(store, name) or {}
        except IndexCorruptError:
            manifest = {}
    key = (store.uri, name, (manifest.get("checksums") or {}).get("manifest") or manifest.get("updated_at"))
    cached = _DESCRIBED.get(key)
    if cached is not None:
        return dict(cached)
    encoders = list(manifest.get("encoders") or [name])
    specs = [feature_spec(store, enc) or {} for enc in encoders]
    learned = all(spec.get("encoder") == EMBED_ENCODER for spec in specs)
    run_id = specs[0].get("run_id") if learned and specs else None
    label = (f"emotion, learned by run {run_id}" if learned else "raw " + " + ".join(encoders))
    described = {"index": name, "kind": "learned" if learned else "raw", "label": f"{label} (index {name})",
                 "encoders": encoders, "run_id": run_id, "rows": manifest.get("rows"),
                 "updated_at": manifest.get("updated_at") or manifest.get("built_at")}
    if key[2]:  # a build or update changes the digest: described again
        _DESCRIBED[key] = described
    return dict(described)


def spaces(store: Store) -> list[dict[str, Any]]:
    """Every index as a space (:func:`describe_space`): learned spaces first, then raw ones,
    each group the most recently built first."""
    out = [describe_space(store, name) for name in index_names(store)]
    out.sort(key=lambda s: s["updated_at"] or "", reverse=True)
    return sorted(out, key=lambda s: s["kind"] != "learned")  # stable: recency kept


def default_index(store: Store, clip_id: str | None = None) -> str | None:
    """The learned space a search uses when it names no index: the most recent one holding
    ``clip_id`` (any, for a new file); None when there is none (the library then picks)."""
    from featurestore.index import load_index

    for space in spaces(store):
        if space["kind"] != "learned":
            break
        if clip_id is None or clip_id in load_index(store, space["index"]).row_of():
            return space["index"]
    return None


def head_runs(runs_dir: str | Path) -> list[str]:
    """Names of the finished head runs under ``runs_dir`` (a cross-validation's folds too)."""
    return [name for name, folder in run_folders(runs_dir) if is_finished_run(folder)]


def _run_dir(runs_dir: str | Path, run: str) -> Path:
    """The run directory named ``run`` under ``runs_dir`` (:func:`.rundirs.find_run_folder`)."""
    found = find_run_folder(runs_dir, run)
    if found is not None:
        return found
    root = Path(runs_dir)
    available = ", ".join(head_runs(runs_dir)) or "none"
    raise NotFoundError(f"no head run {run!r} under {root} (finished runs: {available}): train one with "
                        f"`emofs train head --out {root}/NAME`, or start the app with --runs FOLDER")


def build_space(store: Store, runs_dir: str | Path, run: str, name: str | None = None) -> dict[str, Any]:
    """``emofs embed`` run ``run`` (a head run directory under ``runs_dir``) into feature set
    ``name`` and index it: the run's learned emotion space.

    ``name`` defaults to :data:`SPACE_NAME`, or ``emotion-<run>`` when ``emotion`` already
    holds another run's space.

    Returns:
        ``{"space": describe_space, "embedded": rows, "skipped": clips lacking features}``.

    Raises:
        NotFoundError: no such run; InputError: the run cannot embed this store's clips
        (another model's run, missing feature sets), with the fix.
    """
    from featurestore.index import IndexConfig, build_index
    from heads.embed import embed_run

    folder = _run_dir(runs_dir, run)
    if name is None:
        existing = feature_spec(store, SPACE_NAME)
        name = SPACE_NAME if existing is None or existing.get("run_id") == folder.name else f"{SPACE_NAME}-{folder.name}"
    if not _BUILDING.acquire(blocking=False):
        raise PayloadError("a space is being built already: wait for it to finish", 409)
    try:
        try:
            report = embed_run(store, folder, name=name, progress=False)
        except (EmofsError, ValueError, KeyError, OSError) as exc:  # another store's run, a bad run dir
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"run {run!r} cannot embed this store's clips ({first}): pick a head run "
                             "trained on this store's feature sets (`emofs train head`)") from exc
        build_index(store, IndexConfig([name], name=name), progress=False)
    finally:
        _BUILDING.release()
    return {"space": describe_space(store, name), "embedded": report["rows"], "skipped": report["skipped"]}


# ------------------------------------------------------------------ routes
def spaces_route(request):
    """``GET /api/spaces``: the store's search spaces (learned first, the default marked) and
    the finished head runs a space can be built from."""
    from .api import reply

    store, config = request.app.state.store, request.app.state.config
    listed = spaces(store)
    default = next((s["index"] for s in listed if s["kind"] == "learned"), None)
    return reply({"spaces": listed, "default": default, "runs": head_runs(config.runs_dir)})


async def build_space_route(request):
    """``POST /api/spaces`` ``{"run": NAME, "name"?: str}``: build run NAME's learned emotion
    space (embed + index); off with ``--read-only``."""
    from starlette.concurrency import run_in_threadpool

    from .api import json_body, reply

    body = await json_body(request, "the run to build from, e.g. {\"run\": \"egemaps-spk\"}")
    run, name = body.get("run"), body.get("name")
    if not isinstance(run, str) or not run.strip():
        raise InputError('"run" must name a head run under the runs folder (GET /api/spaces lists them)')
    if name is not None and not isinstance(name, str):
        raise InputError('"name" must be a string')
    store, config = request.app.state.store, request.app.state.config
    built = await run_in_threadpool(build_space, store, config.runs_dir, run.strip(), name or None)
    return reply(built, status=201)
