"""The head run directories behind the store's prediction runs.

A prediction run records the id of the head run that wrote it (``emofs predict RUN_DIR``:
the directory's name). The app looks that name up under ``AppConfig.runs_dir`` (``runs/``
by default, where ``emofs train head`` writes; a cross-validation fold sits one level down,
``runs/<cv>/fold-0``) to show what only the run directory knows: the attention fusion's
modality weights of a clip (:func:`clip_modality_weights`) and the cross-validation tables
of ``cv.json`` (:func:`cv_tables`, :func:`cv_of_run`). A name from the store is matched
against the folder's entries, never joined into a path as given.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from featurestore.errors import EmofsError
from featurestore.predictions import RUN_KEY
from featurestore.schema import predictions_name
from featurestore.store import Store
from heads.predict import FINISHED

log = logging.getLogger(__name__)

__all__ = ["run_dir_of", "run_folders", "find_run_folder", "is_finished_run", "clip_modality_weights",
           "cv_tables", "cv_of_run"]

_RUNS: dict[str, tuple[float, Any]] = {}
_RUNS_LOCK = threading.Lock()


def _children(folder: Path) -> dict[str, Path]:
    try:
        return {p.name: p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()}
    except OSError:
        return {}


def run_folders(runs_dir: str | Path) -> list[tuple[str, Path]]:
    """``(name, folder)`` of every run folder under ``runs_dir``: each top folder (by name)
    followed by the folders inside it (a cross-validation's folds); links not followed."""
    out = []
    for name, top in sorted(_children(Path(runs_dir)).items()):
        out.append((name, top))
        out += sorted(_children(top).items())
    return out


def is_finished_run(folder: Path) -> bool:
    """Whether ``folder`` is a finished head run (training writes its marker last)."""
    return (folder / "config.json").is_file() and (folder / FINISHED).is_file()


def find_run_folder(runs_dir: str | Path, name: str, *, finished: bool = False) -> Path | None:
    """The run folder named ``name`` under ``runs_dir`` (a top folder before a nested one),
    matched against the folders' entries, never joined into a path as given; None if none."""
    root = Path(runs_dir)
    found = [p for n, p in run_folders(root) if n == name and (not finished or is_finished_run(p))]
    return next((p for p in found if p.parent == root), found[0] if found else None)


def run_dir_of(store: Store, runs_dir: str | Path, run: str) -> Path | None:
    """The finished head run directory that wrote prediction run ``run``, or None when not
    found (or unfinished: killed while training)."""
    ds = store.dataset(predictions_name(run))
    meta = (ds.schema.metadata or {}) if ds is not None else {}
    run_id = meta.get(RUN_KEY.encode(), b"").decode()
    for name in dict.fromkeys(n for n in (run_id, run) if n):
        found = find_run_folder(runs_dir, name, finished=True)
        if found is not None:
            return found
    return None


def _loaded(run_dir: Path):
    """:func:`heads.predict.load_run`, cached until the checkpoint changes."""
    from heads.predict import load_run

    ckpt = run_dir / "checkpoints" / "best.ckpt"
    stamp = ckpt.stat().st_mtime if ckpt.exists() else -1.0
    key = str(run_dir.resolve())
    with _RUNS_LOCK:
        cached = _RUNS.get(key)
        if cached is None or cached[0] != stamp:
            cached = (stamp, load_run(run_dir))
            _RUNS[key] = cached
        return cached[1]


def clip_modality_weights(store: Store, runs_dir: str | Path, run: str,
                          clip_id: str) -> dict[str, float] | None:
    """``{feature set: weight}`` of ``clip_id`` under prediction run ``run``'s head.

    None when the run directory is not under ``runs_dir``, its head has no attention
    fusion, or it cannot weigh the clip (the reason goes to the log).
    """
    run_dir = run_dir_of(store, runs_dir, run)
    if run_dir is None:
        return None
    from heads.predict import modality_weights

    try:
        weights = modality_weights(store, _loaded(run_dir), [clip_id])
    except EmofsError as exc:
        log.warning(f"no modality weights for {clip_id!r} from {run_dir}: {exc}")
        return None
    return None if weights is None else weights.get(clip_id)


def _cv_table(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning(f"{path} is unreadable ({exc}): skipped")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("per_fold"), list):
        return None
    figures = list((data.get("mean") or {}).keys())
    rows = [{k: r.get(k) for k in ("fold", "test_groups", "n_test", *figures, "best_epoch")}
            for r in data["per_fold"] if isinstance(r, dict)]
    return {"dir": path.parent.name, "folds": len(rows), "figures": figures, "per_fold": rows,
            "mean": data.get("mean") or {}, "std": data.get("std") or {},
            "pooled": data.get("pooled") or {}}


def cv_tables(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every cross-validation under ``runs_dir`` (a directory holding ``cv.json``).

    Returns:
        ``[{"dir", "folds", "figures", "per_fold": [{fold, test_groups, n_test, <figure>...,
        best_epoch}], "mean": {figure: value}, "std": {figure: value}, "pooled"}]``, by name.
    """
    out = []
    for name, path in sorted(_children(Path(runs_dir)).items()):
        if (path / "cv.json").is_file():
            table = _cv_table(path / "cv.json")
            if table is not None:
                out.append(table)
    return out


def cv_of_run(store: Store, runs_dir: str | Path, run: str) -> dict[str, Any] | None:
    """The cross-validation table of prediction run ``run``'s head: its directory's
    ``cv.json``, or its parent's for a fold run; None when there is none."""
    run_dir = run_dir_of(store, runs_dir, run)
    if run_dir is None:
        return None
    for folder in (run_dir, run_dir.parent):
        if (folder / "cv.json").is_file():
            return _cv_table(folder / "cv.json")
    return None
