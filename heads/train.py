"""Head jobs: train one head (``emofs train head``) or every encoder subset (``emofs ablate``).

The MLP head trains with a plain-torch loop (:mod:`heads.loop`, no Lightning import) when
its features are preloaded, and with Lightning when they stream or ``trainer="lightning"``
(``--trainer lightning``: its loggers and callbacks); both write the same files.

A run directory holds::

    config.json     resolved HeadConfig
    labels.json     label vocabulary (class index order)
    features.json   fingerprint, spec, dim, dtype, version of each feature set used
    splits.csv      clip_id, split (the exact split, to reproduce or audit it)
    metrics.csv     one row per epoch (train/val loss, val figures)
    checkpoints/best.ckpt   best validation checkpoint (early stopping on --monitor)
    metrics.json    test (and val) figures of the best checkpoint, split, timings; with
                    more than one feature set, test figures per presence pattern
                    (``by_modalities``: both, <set> only, ...)
    confusion.png   test confusion matrix;  curves.png   loss and val figure per epoch

``metrics.json`` is written last (atomically): a directory without it is an unfinished
run (training was killed or failed), which eval / predict / label / embed / the app refuse
and a new ``train head --out`` into it replaces (with a warning); a finished run is never
overwritten.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import InputError
from featurestore.progress import track_progress
from featurestore.store import Store

from .config import HeadConfig
from .data import PreparedData, prepare_data, split_dataset
from .presence import figures_by_pattern, pattern_names
from .rundir import (check_out, make_dir, prepare_run_dir, refuse_finished, write_atomic, write_json,
                     write_json_atomic)
from .metrics import HEADLINE, classification_metrics

log = logging.getLogger(__name__)

__all__ = ["RunResult", "train_head", "ablate", "default_run_dir", "prefetch_lightning", "CHECKPOINT",
           "quiet_lightning", "lightning_module_class", "inverse_frequency_weights", "TRAINERS",
           "use_trainer", "resolve_trainer"]

CHECKPOINT = "checkpoints/best.ckpt"
_RUNS_ROOT = "runs"
#: ``auto``: the plain-torch loop for preloaded features, Lightning when streaming.
TRAINERS = ("auto", "plain", "lightning")
_trainer = contextvars.ContextVar("emofs_trainer", default="auto")


@contextlib.contextmanager
def use_trainer(name: str):
    """Train every head started in the block with ``name`` (``auto``, ``plain``, ``lightning``);
    reaches runs a job starts for you (cross-validation folds, ablation subsets)."""
    token = _trainer.set(_check_trainer(name))
    try:
        yield
    finally:
        _trainer.reset(token)


def _check_trainer(name: str) -> str:
    if name not in TRAINERS:
        raise InputError(f"--trainer {name!r} is not one of {', '.join(TRAINERS)}: pass auto (plain loop "
                         "when preloaded), plain, or lightning")
    return name


def resolve_trainer(name: str | None, preloaded: bool) -> str:
    """``plain`` or ``lightning`` for a run (``name`` None: the :func:`use_trainer` choice)."""
    name = _check_trainer(name or _trainer.get())
    if name == "auto":
        return "plain" if preloaded else "lightning"
    return name


@dataclass
class RunResult:
    """What a finished run reports.

    Attributes:
        run_dir: the run directory.
        test: test-set figures of the best checkpoint (``classification_metrics``).
        val: validation figures of the best checkpoint.
        best_epoch: epoch of the best checkpoint; epochs: epochs trained.
        counts: clips per split; split_note: how the split was made.
        timings: seconds for data loading, to the first step, fitting, and in total.
    """

    run_dir: Path
    test: dict[str, Any]
    val: dict[str, Any]
    best_epoch: int
    epochs: int
    counts: dict[str, int]
    split_note: str
    timings: dict[str, float] = field(default_factory=dict)
    attention: dict[str, float] | None = None
    normalize: dict[str, Any] | None = None
    schedule: dict[str, Any] = field(default_factory=dict)
    by_modalities: dict[str, dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (what ``metrics.json`` holds)."""
        return {
            "run_dir": str(self.run_dir),
            "run_id": self.run_dir.name,
            "test": self.test,
            "val": self.val,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "counts": self.counts,
            "split": self.split_note,
            "timings": self.timings,
            "attention_weights": self.attention,
            "normalize": self.normalize,
            "schedule": self.schedule,
            "by_modalities": self.by_modalities,
        }


def default_run_dir(cfg: HeadConfig, root: str | Path = _RUNS_ROOT) -> Path:
    """``runs/<UTC timestamp>-<encoders>`` (a suffix keeps it unique)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{'+'.join(cfg.encoders)}"
    path, k = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


def _process_start() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # pragma: no cover - psutil missing or /proc unreadable
        return time.time()


_prefetching = False


def prefetch_lightning() -> None:
    """Import Lightning in a background thread (it takes seconds) while data loads.

    Only the first call starts the thread (the CLI calls it before checking flags,
    ``train_head`` again for library callers).
    """
    import threading

    global _prefetching
    if _prefetching:
        return
    _prefetching = True

    def _load() -> None:
        try:
            import lightning.pytorch  # noqa: F401
        except Exception:  # pragma: no cover - the real import below reports it
            pass

    threading.Thread(target=_load, name="emofs-import-lightning", daemon=True).start()


def quiet_lightning() -> None:
    """Silence Lightning's info lines (GPU/TPU banners, tips) and its user warnings.

    Call after importing ``lightning.pytorch``: its ``__init__`` sets its logger to INFO.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def lightning_module_class():
    """The LightningModule class training a :class:`~heads.models.FusionHead` (built on
    first use, so importing this module does not import Lightning)."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F

    from .loop import VAL_FIGURES, head_logits, training_loss
    from .models import FusionHead

    class HeadModule(pl.LightningModule):
        """Lightning wrapper: cross-entropy (class-weighted), AdamW, val figures per epoch;
        training batches hide modalities at random (``modality_dropout``)."""

        def __init__(self, encoders: list[str], dims: list[int], vocabulary: list[str],
                     hidden: int, fusion: str, dropout: float, lr: float, weight_decay: float,
                     class_weights: list[float] | None, monitor: str, modality_dropout: float = 0.0):
            super().__init__()
            self.save_hyperparameters()
            self.head = FusionHead(dims, len(vocabulary), hidden=hidden, fusion=fusion, dropout=dropout)
            weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
            self.register_buffer("class_weight", weight, persistent=False)
            self.first_step_at: float | None = None
            self._val_pred: list[torch.Tensor] = []
            self._val_true: list[torch.Tensor] = []

        def forward(self, batch: dict[str, torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
            return head_logits(self.head, batch, self.hparams.encoders, present)  # (B, C)

        def training_step(self, batch, batch_idx):
            loss, logits = training_loss(self.head, batch, self.hparams.encoders, self.class_weight,
                                         self.hparams.modality_dropout)  # (), (B, C)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(logits))
            return loss

        def on_train_batch_start(self, batch, batch_idx):
            if self.first_step_at is None:
                self.first_step_at = time.time()

        def validation_step(self, batch, batch_idx):
            logits = self(batch)  # (B, C)
            loss = F.cross_entropy(logits, batch["label"], weight=self.class_weight)
            self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(logits))
            self._val_pred.append(logits.argmax(-1).cpu())
            self._val_true.append(batch["label"].cpu())

        def on_validation_epoch_end(self):
            if not self._val_pred:
                return
            pred = torch.cat(self._val_pred).numpy()
            true = torch.cat(self._val_true).numpy()
            self._val_pred.clear()
            self._val_true.clear()
            figures = classification_metrics(true, pred, self.hparams.vocabulary)
            for key in VAL_FIGURES:
                self.log(f"val_{key}", float(figures[key]), prog_bar=key == self.hparams.monitor)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                     weight_decay=self.hparams.weight_decay)

    return HeadModule


def inverse_frequency_weights(prepared: PreparedData) -> list[float]:
    """Inverse-frequency weights over the training clips (mean 1 over present classes)."""
    train = prepared.labels[prepared.indices("train")]
    counts = np.bincount(train, minlength=len(prepared.vocabulary)).astype(np.float64)
    weights = np.zeros_like(counts)
    present = counts > 0
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights.tolist()


def _train_stats(prepared: PreparedData, cfg: HeadConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per feature set ``(mean (D,), std (D,))`` over the training clips having it (float64 sums)."""
    train = prepared.indices("train")
    has = prepared.presence(cfg.encoders, train)  # (n, M)
    sums = {e: np.zeros(prepared.dims[e]) for e in cfg.encoders}
    squares = {e: np.zeros(prepared.dims[e]) for e in cfg.encoders}
    if prepared.features is not None:
        chunks = (({e: prepared.features[e][train[rows]] for e in cfg.encoders}, has[rows])
                  for rows in np.array_split(np.arange(len(train)), max(1, len(train) // 8192)))
    else:
        from featurestore.reader import batch_loader

        chunks = (({e: b[e].numpy() for e in cfg.encoders}, has[b["index"].numpy()])
                  for b in batch_loader(split_dataset(prepared, "train", encoders=cfg.encoders), 8192))
    for chunk, mask in chunks:
        for m, e in enumerate(cfg.encoders):
            x = chunk[e][mask[:, m]].astype(np.float64)  # (b, D), present rows only
            sums[e] += x.sum(0)
            squares[e] += (x * x).sum(0)
    stats = []
    for m, e in enumerate(cfg.encoders):
        n = max(1, int(has[:, m].sum()))
        mean = sums[e] / n
        std = np.sqrt(np.maximum(squares[e] / n - mean * mean, 0.0))
        stats.append((mean, np.where(std > 1e-6, std, 1.0)))
    return stats


def _check_splits(prepared: PreparedData) -> None:
    counts = prepared.counts()
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise InputError(
            f"the {' and '.join(empty)} split is empty ({prepared.split_note}; counts {counts}): "
            "add clips, raise --val-frac/--test-frac, or use another --split-by"
        )


def train_head(
    store: Store,
    cfg: HeadConfig,
    *,
    out: str | Path | None = None,
    prepared: PreparedData | None = None,
    quiet: bool = False,
    trainer: str | None = None,
    replace: bool = False,
) -> RunResult:
    """Train a projector + fusion + classifier head and write a complete run directory.

    Args:
        store: the feature store.
        cfg: the run configuration.
        out: run directory (default ``runs/<timestamp>-<encoders>``); must not hold a run.
        prepared: data from :func:`heads.data.prepare_data` (ablations share one split).
        quiet: no status lines on stderr.
        trainer: ``auto`` (plain loop when preloaded, else Lightning), ``plain`` or
            ``lightning``; None: the :func:`use_trainer` choice (default ``auto``).
        replace: replace a finished run at ``out`` too (an unfinished one always is).

    Returns:
        The :class:`RunResult` (also written to ``metrics.json``).

    Raises:
        InputError / StoreError: bad flags, missing features or labels, empty splits.
    """
    started = time.time()
    process_start = _process_start()
    check_out(out)  # before minutes of data preparation
    if out is not None and not replace:
        refuse_finished(Path(out))
    if _check_trainer(trainer or _trainer.get()) == "lightning":
        prefetch_lightning()
    if prepared is None:
        prepared = prepare_data(store, cfg, quiet=quiet)
    data_s = time.time() - started
    _check_splits(prepared)
    from .schedule import resolve_schedule

    cfg, schedule = resolve_schedule(cfg, prepared.counts()["train"])
    run_dir = prepare_run_dir(Path(out) if out else default_run_dir(cfg), replace)
    if not quiet:
        counts = prepared.counts()
        log.info(f"run {run_dir}: {len(prepared.clip_ids)} clips (train {counts['train']}, val "
             f"{counts['val']}, test {counts['test']}), {len(prepared.vocabulary)} classes; "
             f"{prepared.split_note}; {'preloaded' if prepared.features is not None else 'streaming'}")

    cfg.save(run_dir / "config.json")
    write_json(run_dir / "labels.json", prepared.vocabulary)
    write_json(run_dir / "features.json", {e: prepared.feature_info[e] for e in cfg.encoders})
    _write_splits(run_dir / "splits.csv", prepared)
    if prepared.normalizer is not None:
        prepared.normalizer.save(run_dir)

    if cfg.head == "linear":
        from .linear import fit_linear

        fit = fit_linear(prepared, cfg, run_dir,
                         _train_stats(prepared, cfg) if cfg.standardize else None,
                         inverse_frequency_weights(prepared) if cfg.class_weights else None)
    elif resolve_trainer(trainer, prepared.features is not None) == "plain":
        fit = _fit_plain(prepared, cfg, run_dir, schedule, quiet)
    else:
        fit = _fit_lightning(prepared, cfg, run_dir, schedule, quiet)
    schedule = {"steps": fit["steps"], **(schedule if cfg.head == "mlp" else {"solver": "lbfgs"})}
    if cfg.head == "mlp":
        schedule["trainer"] = fit["trainer"]

    from .predict import load_run, predict_proba
    from .report import plot_confusion, plot_curves

    run = load_run(run_dir, unfinished_ok=True)
    figures = {}
    attention = by_modalities = None
    for part in ("val", "test"):
        rows = prepared.indices(part)
        dataset = split_dataset(prepared, part, encoders=cfg.encoders)
        probs, weights = predict_proba(run.head, dataset, cfg.encoders, batch_size=cfg.batch_size,
                                       with_weights=True)
        figures[part] = classification_metrics(prepared.labels[rows], probs.argmax(1), prepared.vocabulary)
        if part == "test" and weights is not None:
            attention = dict(zip(cfg.encoders, weights.mean(0).round(4).tolist()))
        if part == "test" and len(cfg.encoders) > 1:
            by_modalities = figures_by_pattern(
                prepared.labels[rows], probs.argmax(1),
                pattern_names(cfg.encoders, prepared.presence(cfg.encoders, rows)), prepared.vocabulary)
    first_step = fit["first_step_at"]
    timings = {
        "data_s": round(data_s, 3),
        "fit_s": round(fit["fit_s"], 3),
        "first_step_s": round(first_step - process_start, 3) if first_step else None,
        "first_step_in_job_s": round(first_step - started, 3) if first_step else None,
        "total_s": round(time.time() - started, 3),
    }
    result = RunResult(run_dir=run_dir, test=figures["test"], val=figures["val"],
                       best_epoch=fit["best_epoch"], epochs=fit["epochs"],
                       counts=prepared.counts(), split_note=prepared.split_note,
                       timings=timings, attention=attention, normalize=prepared.normalize_report,
                       schedule=schedule, by_modalities=by_modalities)
    plot_confusion(np.array(figures["test"]["confusion"]), prepared.vocabulary,
                   run_dir / "confusion.png", title=f"{run_dir.name}: test")
    plot_curves(run_dir / "metrics.csv", run_dir / "curves.png", monitor=cfg.monitor)
    write_json_atomic(run_dir / "metrics.json", result.as_dict())  # last: the run is finished
    return result


def _fit_lightning(prepared: PreparedData, cfg: HeadConfig, run_dir: Path, schedule: dict[str, Any],
                   quiet: bool) -> dict[str, Any]:
    """Fit the MLP head with Lightning; writes the best checkpoint and ``metrics.csv``."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    quiet_lightning()

    from .data import HeadDataModule

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = lightning_module_class()(
        encoders=list(cfg.encoders), dims=[prepared.dims[e] for e in cfg.encoders],
        vocabulary=prepared.vocabulary, hidden=cfg.hidden, fusion=cfg.fusion,
        dropout=cfg.dropout, lr=cfg.lr, weight_decay=cfg.weight_decay,
        class_weights=inverse_frequency_weights(prepared) if cfg.class_weights else None,
        monitor=cfg.monitor, modality_dropout=float(cfg.modality_dropout or 0.0),
    )
    if cfg.standardize:
        module.head.set_standardization(_train_stats(prepared, cfg))
    monitor = f"val_{cfg.monitor}"
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor,
                                 mode="max", save_top_k=1, save_weights_only=True,
                                 auto_insert_metric_name=False, enable_version_counter=False,
                                 save_on_train_epoch_end=False)
    # Checked after each validation only (a --max-steps run may end before any).
    stopping = EarlyStopping(monitor=monitor, mode="max", patience=cfg.patience,
                             check_on_train_epoch_end=False, strict=False)
    logger = CSVLogger(save_dir=str(run_dir), name="", version="lightning")
    trainer = pl.Trainer(
        accelerator=cfg.accelerator, devices=1, max_epochs=cfg.epochs, max_steps=cfg.max_steps,
        min_steps=schedule["min_steps"] if cfg.max_steps == -1 else None,
        logger=logger, callbacks=[checkpoint, stopping], enable_checkpointing=True,
        enable_model_summary=False, enable_progress_bar=sys.stderr.isatty() and not quiet,
        num_sanity_val_steps=0, deterministic=True, log_every_n_steps=1,
    )
    fit_start = time.time()
    trainer.fit(module, datamodule=HeadDataModule(prepared, cfg))
    fit_s = time.time() - fit_start

    best_path = run_dir / CHECKPOINT
    if not checkpoint.best_model_path:  # stopped (max_steps) before any validation
        trainer.save_checkpoint(best_path, weights_only=True)
        best_epoch = trainer.current_epoch
    else:
        best_path = Path(checkpoint.best_model_path)
        best_epoch = int(torch.load(best_path, map_location="cpu", weights_only=True)["epoch"])

    _write_metrics_csv(Path(logger.log_dir) / "metrics.csv", run_dir / "metrics.csv")
    return {"best_epoch": best_epoch, "epochs": trainer.current_epoch, "steps": int(trainer.global_step),
            "fit_s": fit_s, "first_step_at": module.first_step_at, "trainer": "lightning"}


def _fit_plain(prepared: PreparedData, cfg: HeadConfig, run_dir: Path, schedule: dict[str, Any],
               quiet: bool) -> dict[str, Any]:
    """Fit the MLP head with the plain-torch loop (same files as :func:`_fit_lightning`)."""
    from .loop import fit_prepared

    return fit_prepared(prepared, cfg, run_dir, min_steps=schedule["min_steps"] if cfg.max_steps == -1 else None,
                        class_weights=inverse_frequency_weights(prepared) if cfg.class_weights else None,
                        stats=_train_stats(prepared, cfg) if cfg.standardize else None,
                        checkpoint=CHECKPOINT, progress=sys.stderr.isatty() and not quiet)


def _write_splits(path: Path, prepared: PreparedData) -> None:
    import polars as pl

    pl.DataFrame({"clip_id": prepared.clip_ids, "split": prepared.split.tolist()}).write_csv(path)


def _write_metrics_csv(source: Path, target: Path) -> None:
    """One row per epoch from Lightning's CSVLogger file (train and val rows merged)."""
    import polars as pl

    if not source.exists():
        pl.DataFrame({"epoch": []}).write_csv(target)
        return
    raw = pl.read_csv(source)
    cols = [c for c in raw.columns if c not in ("epoch", "step")]
    merged = (
        raw.group_by("epoch", maintain_order=True)
        .agg([pl.col("step").max()] + [pl.col(c).drop_nulls().last() for c in cols])
        .sort("epoch")
    )
    merged.write_csv(target)


# ---------------------------------------------------------------------- ablation
def ablate(
    store: Store,
    cfg: HeadConfig,
    *,
    out: str | Path | None = None,
    quiet: bool = False,
):
    """Train one head per non-empty subset of ``cfg.encoders`` with the same clips and split.

    With the default ``mlp`` head, a ``linear`` (logistic regression) run on every feature
    set is added as a reference row, ``<all sets> (linear)``. Every subset sees the same clips (those having *all* the feature sets), the same split
    and the same seed, so the table compares modalities only (as the paper's encoder
    ablation). Writes ``<out>/<subset>/`` runs, ``ablation.csv`` and ``ablation.png``.

    Returns:
        A polars DataFrame, one row per subset: encoders, n_encoders, test figures
        (accuracy, weighted_f1, macro_f1, uar, war), val figure, best_epoch, run_dir.
    """
    import polars as pl

    from .report import plot_ablation

    if len(cfg.encoders) > 6:
        raise InputError(f"--encoders lists {len(cfg.encoders)} sets: an ablation over more than 6 "
                         f"trains {2 ** len(cfg.encoders) - 1} heads; pass at most 6")
    out = Path(out) if out else Path(_RUNS_ROOT) / (
        "ablation-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))
    if (out / "ablation.csv").exists():
        raise InputError(f"{out} already holds an ablation: pass another --out (nothing was overwritten)")
    make_dir(out)
    subsets = [s for k in range(1, len(cfg.encoders) + 1)
               for s in itertools.combinations(cfg.encoders, k)]
    # Reference row: the linear baseline on every feature set (same clips and split).
    runs = [(s, cfg.head) for s in subsets] + ([(tuple(cfg.encoders), "linear")] if cfg.head == "mlp" else [])
    # Subset runs already there without ablation.csv: an ablation killed or failed midway.
    redo = any((out / ("+".join(s) + (".linear" if h != cfg.head else "")) / "config.json").exists()
               for s, h in runs)
    if redo:
        log.warning(f"{out} holds an unfinished ablation (no ablation.csv: it was killed or failed): "
                    "replacing its runs")
    cfg = cfg.replace(require_all=True)  # every subset on the same clips: those having every set
    prepared = prepare_data(store, cfg, quiet=quiet)
    _check_splits(prepared)
    rows = []
    bar = contextlib.ExitStack()  # a bar over the subset runs, with an ETA
    advance = bar.enter_context(track_progress(len(runs), "ablation", enabled=not quiet, unit="runs"))
    for i, (subset, head) in enumerate(runs, 1):
        name = "+".join(subset) + (" (linear)" if head != cfg.head else "")
        if not quiet:
            log.info(f"[{i}/{len(runs)}] {name}")
        try:
            result = train_head(store, cfg.replace(encoders=list(subset), head=head),
                                out=out / name.replace(" (linear)", ".linear"),
                                prepared=prepared.subset(subset), quiet=True, replace=redo)
        except BaseException:
            bar.close()
            raise
        advance(1)
        row = {"encoders": name, "head": head, "n_encoders": len(subset)}
        row.update({k: round(result.test[k], 4) for k in HEADLINE})
        row[f"val_{cfg.monitor}"] = round(result.val[cfg.monitor], 4)
        row["best_epoch"] = result.best_epoch
        row["run_dir"] = str(result.run_dir)
        rows.append(row)
    bar.close()
    frame = pl.DataFrame(rows)
    write_json(out / "ablation.json", {"split": prepared.split_note, "counts": prepared.counts(),
                                        "config": cfg.to_dict(), "rows": rows})
    plot_ablation(frame, out / "ablation.png", metric="weighted_f1")
    write_atomic(out / "ablation.csv", frame.write_csv)  # last: the ablation is finished
    return frame
