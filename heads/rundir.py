"""A head run directory's life: created whole, finished last, an unfinished one replaced.

``metrics.json`` (``cv.json`` for a cross-validation) is written last and atomically: a
directory without it is an unfinished run (training killed or failed) that eval, predict,
label, embed and the app refuse and a new ``train head --out`` into it replaces (with a
warning); a finished run is never overwritten.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from featurestore.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["write_json", "write_atomic", "write_json_atomic", "clear_run", "check_out", "make_dir", "refuse_finished",
           "prepare_run_dir", "RUN_FILES", "RUN_DIRS"]


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` into ``.<name>.tmp`` beside ``path``, then rename it to ``path``: the
    file is there whole or not at all (a kill leaves no half file under its name)."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """:func:`write_json`, whole or not at all (:func:`write_atomic`)."""
    write_atomic(path, lambda tmp: write_json(tmp, data))


#: What a head run directory holds (an unfinished one's leftovers are removed by name).
RUN_FILES = ("config.json", "labels.json", "features.json", "splits.csv", "normalize.json",
              "metrics.csv", "metrics.json", ".metrics.json.tmp", "confusion.png", "curves.png")
RUN_DIRS = ("checkpoints", "lightning")


def clear_run(run_dir: Path) -> None:
    """Remove the files of a head run from ``run_dir`` (other files there are kept)."""
    import shutil

    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


def check_out(out: str | Path | None) -> None:
    """Refuse an --out that can never be a directory (a file, or under one) before any work."""
    if out is None:
        return
    out = Path(out)
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            where = "is a file" if path == out else f"is under {path}, which is a file"
            raise InputError(f"--out {out} {where}, not a directory: pass a new or existing "
                             "directory for the run")
        if path.exists():
            return


def make_dir(path: Path) -> None:
    check_out(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create --out {path} ({exc.strerror or exc}): pass a directory "
                         "you can write to") from exc


def refuse_finished(run_dir: Path) -> None:
    from .predict import run_finished

    if run_finished(run_dir):
        raise InputError(f"{run_dir} already holds a run: pass another --out (nothing was overwritten)")


def prepare_run_dir(run_dir: Path, replace: bool = False) -> Path:
    """Create ``run_dir``; refuse a finished run there, replace an unfinished one (or any,
    with ``replace``: a cross-validation or ablation redone after a kill)."""
    from .predict import FINISHED, run_finished

    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists() or run_finished(run_dir):
        if not replace:
            refuse_finished(run_dir)
            log.warning(f"{run_dir} holds an unfinished run (no {FINISHED}: its training was killed or "
                        "failed): replacing it")
        clear_run(run_dir)
    make_dir(run_dir)
    return run_dir
