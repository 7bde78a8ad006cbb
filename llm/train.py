"""`emofs llm train`: LoRA instruction tuning from cached features, as a Lightning job.

A run directory holds::

    config.json              resolved LLMConfig, projector dims, labels, clips, store, the
                             base's identity (built-in: package version, gguf sha256),
                             LoRA targets, turn format
    adapter/                 PEFT LoRA adapter (adapter_model.safetensors + config)
    projectors.safetensors   per-encoder projectors (and the video projector)
    standardize.safetensors  per-set mean / std of the training vectors (``--standardize``)
    splits.csv               clip_id, split (with ``--split-by``: test groups are held out)
    metrics.csv              train loss per step / epoch (Lightning CSVLogger)

``config.json`` is written last (atomically): a folder without it is an unfinished run
(killed or failed), which loading refuses and a new ``emofs llm train --out`` replaces.
"""

from __future__ import annotations

import csv
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurestore.errors import InputError
from featurestore.progress import track_progress
from featurestore.store import Store

from .config import LLMConfig
from .data import LLMDataset, StoreFeatures, collate, load_records
from .model import VIDEO_KEY, EmotionLLM

log = logging.getLogger(__name__)

__all__ = ["train", "TrainResult", "lightning_precision", "prepare_training", "split_records",
           "vector_stats"]


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    clips: int
    steps: int
    seconds: float
    final_loss: float | None
    trainable_params: int
    labels: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    split: str | None = None  # the group split's description (``--split-by``)
    step_seconds: float | None = None  # mean seconds per optimiser step
    model: Any = field(default=None, repr=False, compare=False)  # the trained EmotionLLM

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "model"}
        out["run_dir"] = str(self.run_dir)
        return out


def lightning_precision(precision: str) -> str:
    """Lightning's precision flag for a ``--precision`` (``auto`` picks by device)."""
    import torch

    if precision == "auto":
        if not torch.cuda.is_available():
            return "32-true"
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}[precision]


def split_records(store: Store, records: list, config: LLMConfig) -> tuple[dict[str, str], str]:
    """``--split-by``: the group split ``emofs train head --split-by`` makes of these clips.

    Returns:
        ``({clip_id: "train" | "val" | "test"}, one-line description)``.

    Raises:
        InputError: the column is not a clip column, or has under 3 groups.
    """
    import numpy as np
    import polars as pl

    from heads.config import HeadConfig
    from heads.data import assign_splits

    column = config.split_by
    frame = store.clips(where=config.where)
    if column not in frame.columns:
        raise InputError(f"--split-by {column}: clips have no such column (columns: {', '.join(frame.columns)})")
    group_of = dict(zip(frame["clip_id"].to_list(), frame[column].to_list()))
    groups = [str(g) if (g := group_of.get(r.clip_id)) is not None else "(none)" for r in records]
    vocab = sorted({r.label or "" for r in records})
    labels = np.array([vocab.index(r.label or "") for r in records])
    cfg = HeadConfig(encoders=["llm"], split_by=column, seed=config.seed)
    split, note = assign_splits(pl.DataFrame({"clip_id": [r.clip_id for r in records], column: groups}),
                                labels, cfg)
    return {r.clip_id: str(part) for r, part in zip(records, split)}, note


def vector_stats(features: StoreFeatures, clip_ids) -> dict[str, tuple]:
    """Per feature set ``((D,) mean, (D,) std)`` of the given clips' vectors."""
    import numpy as np

    out = {}
    for name in features.feature_encoders:
        rows = [v for v in (features.vector(name, c) for c in clip_ids) if v is not None]
        if rows:
            matrix = np.stack(rows).astype(np.float64)  # (N, D)
            out[name] = (matrix.mean(0).astype(np.float32), matrix.std(0).astype(np.float32))
    return out


def prepare_training(store: Store, config: LLMConfig):
    """Records, features, labels and projector dims of a run (no model loaded).

    With ``config.split_by`` the test groups' clips are left out of the dataset (counted
    in ``dropped["held_out"]``); ``splits`` maps every clip to its part.

    Returns:
        ``(dataset, features, labels, dims, dropped)``; the dataset carries ``splits``
        (``{clip_id: part}``, empty without ``--split-by``) and ``split_note``.
    """
    records = load_records(store, config.where, config.description_column)
    features = StoreFeatures(store, config.feature_encoders, config.video_encoder,
                             clip_ids=[r.clip_id for r in records])
    cached = features.clip_ids()
    dropped = {"no_features": sum(r.clip_id not in cached for r in records)}
    records = [r for r in records if r.clip_id in cached]
    if config.labels:
        labels = list(config.labels)
        outside = [r for r in records if r.label is not None and r.label not in labels]
        dropped["label_not_in_labels"] = len(outside)
        records = [r for r in records if r.label is None or r.label in labels]
    else:
        labels = sorted({r.label for r in records if r.label})
    if "emotion" in config.tasks and not labels:
        raise InputError("task emotion needs labelled clips: ingest with --labels, or use --task reason")
    splits, note = split_records(store, records, config) if config.split_by else ({}, None)
    if splits:
        dropped["held_out"] = sum(splits[r.clip_id] == "test" for r in records)
        records = [r for r in records if splits[r.clip_id] != "test"]
    dataset = LLMDataset(records, features, config, labels, seed=config.seed, splits=splits, split_note=note)
    dropped["no_answer"] = dataset.dropped
    if len(dataset) == 0:
        raise InputError(
            f"no clip can be trained on ({dropped}): extract features (`emofs extract`) for labelled "
            "clips, or widen --where"
        )
    dims = {name: features.dims[name] for name in config.feature_encoders}
    if config.video_encoder:
        dims[VIDEO_KEY] = config.merge * int(features.video_dim)
    return dataset, features, labels, dims, dropped


def _StepProgress(advance):  # noqa: N802 - builds a Lightning Callback class lazily
    """A Lightning callback advancing emofs' progress bar by one per optimizer step."""
    import lightning as L

    class StepProgress(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            advance(1)

    return StepProgress()


def _module(model: EmotionLLM, config: LLMConfig, total_steps: int):
    import lightning as L
    import torch

    class _LLMModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lm = model.lm
            self.projectors = model.projectors

        def on_train_start(self):
            model.train()  # from_pretrained returns eval mode; LoRA dropout must be on

        def training_step(self, batch, batch_idx):
            loss = model.loss(batch)
            self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(batch), prog_bar=True)
            return loss

        def configure_optimizers(self):
            params = model.trainable_parameters()
            opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
            warm = max(0, config.warmup_steps)

            def factor(step: int) -> float:
                return min(1.0, (step + 1) / warm) if warm else 1.0

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return _LLMModule()


def _clear_unfinished(out: Path) -> None:
    """Remove what a killed or failed run left in ``out`` (no config.json, which is written
    last), with a warning; other files there are kept."""
    import shutil

    from .model import LEFTOVERS

    found = [name for name in LEFTOVERS if (out / name).exists()]
    if not found:
        return
    log.warning(f"{out} holds an unfinished llm run (no config.json: it was killed or failed): replacing it")
    for name in found:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def train(store: Store, config: LLMConfig, out_dir: str | Path, *, progress: bool = True) -> TrainResult:
    """Train LoRA + projectors on the store's cached features and save the run.

    Args:
        store: the feature store (clips with labels / descriptions and feature sets).
        config: the run configuration.
        out_dir: run directory (created; an existing run there is refused).
        progress: show Lightning's progress bar.

    Returns:
        A :class:`TrainResult`.

    Raises:
        InputError / StoreError: bad flags, missing feature sets, nothing to train on.
    """
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from heads.train import quiet_lightning

    quiet_lightning()  # no GPU/TPU banners, tips or Lightning deprecation lines on a default run
    out = Path(out_dir)
    if (out / "config.json").exists():
        raise InputError(f"{out} already holds an llm run: pass a new --out folder (nothing was changed)")
    _clear_unfinished(out)
    dataset, features, labels, dims, dropped = prepare_training(store, config)
    for reason, count in dropped.items():
        if count and reason != "held_out":
            log.warning(f"{count} clips skipped ({reason.replace('_', ' ')})")
    if dataset.split_note:
        log.info(f"{dataset.split_note}: {dropped['held_out']} test clips held out")
    if config.threads:
        torch.set_num_threads(config.threads)
    L.seed_everything(config.seed, verbose=False)
    stats = vector_stats(features, [r.clip_id for r in dataset.records]) if config.standardize else None
    model = EmotionLLM.create(config, dims, standardize=stats)
    model.labels = labels
    n_trainable = sum(p.numel() for p in model.trainable_parameters())
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                         collate_fn=collate, num_workers=0, generator=generator)
    steps_per_epoch = len(loader)
    total = config.max_steps or steps_per_epoch * config.epochs
    module = _module(model, config, total)
    out.mkdir(parents=True, exist_ok=True)
    what = f"training {config.epochs} epochs" if config.max_steps is None else f"training {total} steps"
    bar = contextlib.ExitStack()
    advance = bar.enter_context(track_progress(total, what, enabled=progress, unit="steps"))
    trainer = L.Trainer(
        max_epochs=config.epochs if config.max_steps is None else -1,
        max_steps=config.max_steps or -1,
        accelerator="auto",
        devices=1,
        precision=lightning_precision(config.precision),
        logger=CSVLogger(save_dir=str(out), name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,  # emofs' own bar: steps as trained (Lightning's counts epochs from 0)
        callbacks=[_StepProgress(advance)],
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    log.info(f"training on {len(dataset)} clips, {n_trainable:,} trainable parameters "
         f"(LoRA r={config.lora_r} on {','.join(model.targets)} + {len(dims)} projectors)")
    model.train()  # from_pretrained returns eval mode; LoRA dropout must be on
    start = time.perf_counter()
    try:
        trainer.fit(module, train_dataloaders=loader)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    final = trainer.callback_metrics.get("train_loss_epoch", trainer.callback_metrics.get("train_loss"))
    model.eval()
    steps = int(trainer.global_step)
    result = TrainResult(out, len(dataset), steps, seconds, None if final is None else float(final),
                         n_trainable, labels, dropped, dataset.split_note,
                         round(seconds / steps, 3) if steps else None, model)
    if dataset.splits:
        with open(out / "splits.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["clip_id", "split"])
            writer.writerows(dataset.splits.items())
    model.save(out, extra={
        "labels": labels,
        "store": store.uri,
        "train_clips": [r.clip_id for r in dataset.records],
        "result": {k: v for k, v in result.as_dict().items() if k not in ("labels",)},
    })
    return result

