"""Group cross-validation in one job (``emofs train head --split-by speaker --folds K``).

Every fold is a complete run (``fold-0/``, ``fold-1/``, ...; validation is a held-out group
of the training folds), and the directory gets::

    cv.json        config, per-fold figures, mean and std over folds, pooled test figures
    cv.csv         one row per fold
    confusion.png  one confusion matrix pooled over every test fold

``cv.json`` is written last (atomically): a directory with fold runs and no ``cv.json`` is
a cross-validation that was killed or failed, and a new one with the same ``--out``
replaces its folds (with a warning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import InputError
from featurestore.store import Store

from .config import HeadConfig
from .metrics import classification_metrics

log = logging.getLogger(__name__)

__all__ = ["CVResult", "cross_validate", "CV_FIGURES"]

#: Figures averaged over folds (test set of each fold).
CV_FIGURES = ("uar", "war", "weighted_f1", "macro_f1", "accuracy")


@dataclass
class CVResult:
    """A finished cross-validation.

    Attributes:
        run_dir: the directory holding ``fold-*/`` runs and ``cv.json``.
        rows: one dict per fold (fold, test groups, clips, figures, best epoch, steps, run dir).
        mean / std: figure -> mean / population std over folds.
        pooled: figures of the confusion matrix summed over every test fold.
    """

    run_dir: Path
    rows: list[dict[str, Any]]
    mean: dict[str, float]
    std: dict[str, float]
    pooled: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (what ``cv.json`` holds)."""
        return {"run_dir": str(self.run_dir), "folds": len(self.rows), "config": self.config,
                "per_fold": self.rows, "mean": self.mean, "std": self.std, "pooled": self.pooled}


def _default_dir(cfg: HeadConfig) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{'+'.join(cfg.encoders)}-cv{cfg.folds}"


def _from_confusion(cm: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """``classification_metrics`` of a confusion matrix ``(C, C)``."""
    c = len(labels)
    true = np.repeat(np.repeat(np.arange(c), c), cm.reshape(-1))  # (N,)
    pred = np.repeat(np.tile(np.arange(c), c), cm.reshape(-1))  # (N,)
    return classification_metrics(true, pred, labels)


def cross_validate(store: Store, cfg: HeadConfig, *, out: str | Path | None = None,
                   quiet: bool = False) -> CVResult:
    """Train one head per group fold and summarise the test folds.

    Args:
        store: the feature store.
        cfg: a config with ``split_by`` and ``folds`` (K or ``"loo"``); ``fold`` is ignored.
        out: directory for the fold runs and the summary (must not hold a cross-validation).
        quiet: no progress lines.

    Raises:
        InputError: no ``--folds``/``--split-by``, an existing ``cv.json``, or any error of
            :func:`heads.train.train_head`.
    """
    import polars as pl

    from .data import prepare_data
    from .report import plot_confusion
    from .rundir import clear_run, write_json_atomic
    from .train import train_head

    if not cfg.folds or not cfg.split_by:
        raise InputError("cross-validation needs --split-by COLUMN and --folds K (or --folds loo)")
    run_dir = Path(out) if out else _default_dir(cfg)
    if (run_dir / "cv.json").exists():
        raise InputError(f"{run_dir} already holds a cross-validation: pass another --out (nothing was overwritten)")
    leftovers = sorted(d for d in run_dir.glob("fold-*") if (d / "config.json").exists())
    if leftovers:
        log.warning(f"{run_dir} holds an unfinished cross-validation (no cv.json: it was killed or "
                    f"failed): replacing its {len(leftovers)} fold runs")
    first = prepare_data(store, cfg.replace(fold=0), quiet=quiet)
    groups = len(np.unique(first.groups))
    k_folds = groups if cfg.folds == "loo" else min(int(cfg.folds), groups)  # fewer groups: one a fold
    rows, pooled_cm = [], None
    for fold in range(k_folds):
        fold_cfg = cfg.replace(fold=fold)
        prepared = first if fold == 0 else prepare_data(store, fold_cfg, quiet=True)
        result = train_head(store, fold_cfg, out=run_dir / f"fold-{fold}", prepared=prepared, quiet=True,
                            replace=bool(leftovers))
        cm = np.asarray(result.test["confusion"], dtype=np.int64)  # (C, C)
        pooled_cm = cm if pooled_cm is None else pooled_cm + cm
        test_groups = sorted(set(prepared.groups[prepared.indices("test")].tolist()))
        row = {"fold": fold, "test_groups": ",".join(test_groups), "n_test": result.test["n"]}
        row.update({k: round(float(result.test[k]), 4) for k in CV_FIGURES})
        row.update({"best_epoch": result.best_epoch, "steps": result.schedule.get("steps"),
                    "run_dir": str(result.run_dir)})
        rows.append(row)
        if not quiet:
            log.info(f"fold {fold + 1}/{k_folds} (test {row['test_groups']}): uar {row['uar']:.3f}")
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in CV_FIGURES}
    std = {k: round(float(np.std([r[k] for r in rows])), 4) for k in CV_FIGURES}
    pooled = _from_confusion(pooled_cm, first.vocabulary)
    result = CVResult(run_dir=run_dir, rows=rows, mean=mean, std=std, pooled=pooled, config=cfg.to_dict())
    for stale in leftovers:  # folds of the killed one beyond this one's
        if stale.name not in {f"fold-{k}" for k in range(k_folds)}:
            clear_run(stale)
            if not any(stale.iterdir()):
                stale.rmdir()
    pl.DataFrame(rows).write_csv(run_dir / "cv.csv")
    plot_confusion(pooled_cm, first.vocabulary, run_dir / "confusion.png",
                   title=f"{run_dir.name}: {k_folds} test folds pooled")
    write_json_atomic(run_dir / "cv.json", result.as_dict())  # last: the cross-validation is finished
    return result
