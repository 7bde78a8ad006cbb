"""A plain-torch training loop for the MLP head: Lightning's behaviour without its import.

Importing Lightning takes seconds (4+ s on a busy 2-core machine), longer than a whole
preloaded run on a small corpus. :func:`fit_plain` reproduces what ``heads.train`` asks of
Lightning, with the same meaning for every file of the run directory:

* one optimiser step (AdamW, class-weighted cross-entropy, modality dropout) per batch,
  ``max_epochs`` / ``max_steps`` limits;
* validation at the end of each epoch (none for an epoch cut short by ``max_steps``);
  ``val_loss`` and the four validation figures;
* the best checkpoint (``monitor`` strictly improved; the first validation always saves)
  written to ``checkpoints/best.ckpt`` as ``{"epoch", "global_step", "state_dict":
  {"head.<name>": tensor}, "hyper_parameters"}`` -- the keys :func:`heads.predict.load_run`
  reads from a Lightning checkpoint too;
* early stopping after ``patience`` validations without strict improvement, not before
  ``min_steps`` optimiser steps (as Lightning: once allowed, it validates and stops at the
  next step);
* ``metrics.csv``: one row per epoch, ``epoch, step`` (the epoch's last step index) and the
  epoch means ``train_loss``, ``val_loss``, ``val_accuracy``, ``val_weighted_f1``,
  ``val_macro_f1``, ``val_uar`` (float32 values, as Lightning logs them).

``heads.train`` picks this loop for preloaded features (``trainer="auto"``) and keeps
Lightning for streaming runs and ``--trainer lightning``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

from featurestore.errors import InputError

from .metrics import classification_metrics

__all__ = ["fit_plain", "fit_prepared", "head_logits", "training_loss", "VAL_FIGURES"]

#: Validation figures logged each epoch (``val_<name>``), as the Lightning module logs them.
VAL_FIGURES = ("accuracy", "weighted_f1", "macro_f1", "uar")


def head_logits(head, batch: dict[str, Any], encoders: Sequence[str], present=None):
    """``(B, C)`` logits of a batch; ``present`` ``(B, M)`` bool, default the batch's mask."""
    from .presence import batch_presence

    if present is None:
        present = batch_presence(batch, encoders)  # (B, M) or None
    return head([batch[e] for e in encoders], present)  # (B, C)


def training_loss(head, batch: dict[str, Any], encoders: Sequence[str], class_weight,
                  modality_dropout: float):
    """Class-weighted cross-entropy of a training batch, modalities hidden at random.

    Returns:
        ``(loss scalar, logits (B, C))``.

    Raises:
        InputError: the loss is NaN or inf (names the feature sets and ``emofs check``).
    """
    import torch
    import torch.nn.functional as F

    from .models import drop_modalities
    from .presence import batch_presence

    present = None
    if modality_dropout > 0 and len(encoders) > 1:
        present = batch_presence(batch, encoders)  # (B, M)
        if present is None:
            present = torch.ones(len(batch["label"]), len(encoders), dtype=torch.bool,
                                 device=batch["label"].device)
        present = drop_modalities(present, modality_dropout)
    logits = head_logits(head, batch, encoders, present)  # (B, C)
    loss = F.cross_entropy(logits, batch["label"], weight=class_weight)
    if not bool(torch.isfinite(loss)):  # NaN only grows: stop now, not after a useless run
        raise InputError(
            f"training loss is {float(loss.detach())}: the features of {', '.join(encoders)} may hold NaN or "
            "inf (run `emofs check`; `emofs check --repair` quarantines such rows), or the "
            "learning rate is too high (lower --lr)")
    return loss, logits


def _device(accelerator: str):
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def _to(batch: Any, device):
    if hasattr(batch, "to"):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


class _CpuAdamW:
    """torch.optim.AdamW's CPU update (its single-tensor path, default betas and eps), step
    for step; ``torch.optim.Optimizer`` imports ``torch._dynamo`` on first use (1.5 s)."""

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.step_count = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        beta1, beta2 = self.betas
        self.step_count += 1
        step = float(self.step_count)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        step_size = self.lr / bias_correction1
        with torch.no_grad():
            for p, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq):
                if p.grad is None:
                    continue
                grad = p.grad
                p.mul_(1 - self.lr * self.weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)


def _optimizer(head, lr: float, weight_decay: float, device):
    import torch

    if device.type == "cpu":
        return _CpuAdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)


def _f32(value: float) -> float:
    """``value`` as Lightning's logger writes it (a float32 tensor turned back into a float)."""
    import numpy as np

    return float(np.float32(value))


def _validate(head, loader, encoders, class_weight, vocabulary, device) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    head.eval()
    total, n, pred, true = torch.zeros((), dtype=torch.float32), 0, [], []
    with torch.inference_mode():
        for batch in loader:
            batch = _to(batch, device)
            logits = head_logits(head, batch, encoders)  # (B, C)
            loss = F.cross_entropy(logits, batch["label"], weight=class_weight)
            total += loss.float().cpu() * len(logits)
            n += len(logits)
            pred.append(logits.argmax(-1).cpu())
            true.append(batch["label"].cpu())
    head.train()
    if not n:
        return {}
    figures = classification_metrics(torch.cat(true).numpy(), torch.cat(pred).numpy(), vocabulary)
    out = {"val_loss": float(total / n)}
    out.update({f"val_{k}": _f32(figures[k]) for k in VAL_FIGURES})
    return out


def _save(path: Path, head, epoch: int, step: int, hparams: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"head.{k}": v.detach().cpu() for k, v in head.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"epoch": int(epoch), "global_step": int(step), "state_dict": state,
                "hyper_parameters": hparams, "trainer": "plain"}, tmp)
    tmp.replace(path)


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """``metrics.csv``: epoch, step, then the logged figures in name order (Lightning's)."""
    import polars as pl

    if not rows:
        pl.DataFrame({"epoch": []}).write_csv(path)
        return
    names = sorted({k for r in rows for k in r} - {"epoch", "step"})
    columns = {"epoch": [r["epoch"] for r in rows], "step": [r["step"] for r in rows]}
    columns.update({k: [r.get(k) for r in rows] for k in names})
    pl.DataFrame(columns, schema={"epoch": pl.Int64, "step": pl.Int64, **{k: pl.Float64 for k in names}}
                 ).write_csv(path)


def fit_plain(head, train_loader, val_loader, *, encoders: Sequence[str], vocabulary: list[str],
              class_weights: list[float] | None, lr: float, weight_decay: float, modality_dropout: float,
              monitor: str, patience: int, max_epochs: int, max_steps: int = -1,
              min_steps: int | None = None, accelerator: str = "cpu", run_dir: Path,
              hparams: dict[str, Any], checkpoint: str = "checkpoints/best.ckpt",
              progress: bool = False) -> dict[str, Any]:
    """Train ``head`` (a :class:`heads.models.FusionHead`) and write the run's checkpoint and curves.

    Args:
        head: the model (standardisation already set); trained in place.
        train_loader / val_loader: batch iterables (``{set: (B, D), "label": (B,), ...}``);
            the training one is iterated once per epoch (its sampler reshuffles).
        encoders: feature sets, in the head's input order; vocabulary: class names.
        class_weights: loss weight per class, or None.
        monitor: validation figure to maximise (``weighted_f1``, ...).
        patience: validations without strict improvement before stopping.
        max_epochs / max_steps (-1: none) / min_steps (None: none): the schedule.
        run_dir: the run directory (gets ``checkpoints/best.ckpt`` and ``metrics.csv``).
        hparams: stored in the checkpoint (``hyper_parameters``), as Lightning does.

    Returns:
        ``{"best_epoch", "epochs", "steps", "fit_s", "first_step_at"}`` as
        ``heads.train`` reports them for a Lightning fit.
    """
    import torch

    from featurestore.progress import track_progress

    device = _device(accelerator)
    head.to(device).train()
    weight = torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights else None
    optimizer = _optimizer(head, lr, weight_decay, device)
    key = f"val_{monitor}"
    best, best_epoch, wait, should_stop = -math.inf, None, 0, False
    step, epoch, first_step_at, rows = 0, 0, None, []
    best_path = Path(run_dir) / checkpoint

    def can_stop() -> bool:
        return min_steps is None or step >= min_steps

    def steps_left() -> bool:
        return max_steps < 0 or step < max_steps

    def validate(at_epoch: int) -> dict[str, float]:
        nonlocal best, best_epoch, wait, should_stop
        figures = _validate(head, val_loader, encoders, weight, vocabulary, device)
        current = figures.get(key)
        if current is None:  # nothing to monitor (no validation batch): Lightning's strict=False
            return figures
        if not math.isfinite(current):
            should_stop = True
            current = -math.inf
        if best_epoch is None or current > best:
            _save(best_path, head, at_epoch, step, hparams)
            best_epoch = at_epoch
        if current > best:
            best, wait = current, 0
        else:
            wait += 1
            should_stop = should_stop or wait >= patience
        return figures

    try:
        n_batches = len(train_loader)
    except TypeError:
        n_batches = None
    total = None if n_batches is None else max_epochs * n_batches
    if total is not None and max_steps >= 0:
        total = min(total, max_steps)
    fit_start = time.time()
    with track_progress(total, "training", enabled=progress, unit="steps") as advance:
        while epoch < max_epochs and steps_left() and not (should_stop and can_stop()):
            loss_sum, seen, row = torch.zeros((), dtype=torch.float32), 0, {"epoch": epoch}
            for index, batch in enumerate(train_loader):
                if first_step_at is None:
                    first_step_at = time.time()
                batch = _to(batch, device)
                loss, logits = training_loss(head, batch, encoders, weight, modality_dropout)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                advance(1)
                loss_sum += loss.detach().float().cpu() * len(logits)
                seen += len(logits)
                last = n_batches is not None and index == n_batches - 1
                if last or (should_stop and can_stop()):
                    row.update(validate(epoch))
                if not steps_left() or (should_stop and can_stop()):
                    break
            if seen:
                row["train_loss"] = float(loss_sum / seen)
            row["step"] = step - 1
            rows.append(row)
            epoch += 1
    fit_s = time.time() - fit_start
    if best_epoch is None:  # stopped (max_steps) before any validation: the last weights
        _save(best_path, head, epoch, step, hparams)
        best_epoch = epoch
    _write_rows(Path(run_dir) / "metrics.csv", rows)
    head.cpu()
    return {"best_epoch": int(best_epoch), "epochs": epoch, "steps": step, "fit_s": fit_s,
            "first_step_at": first_step_at}


def fit_prepared(prepared, cfg, run_dir: Path, *, min_steps: int | None, class_weights: list[float] | None,
                 stats: list | None, checkpoint: str = "checkpoints/best.ckpt",
                 progress: bool = False) -> dict[str, Any]:
    """Seed, build the head of ``cfg`` over ``prepared`` (a :class:`heads.data.PreparedData`)
    and :func:`fit_plain` it, as ``heads.train`` does with Lightning.

    Args:
        min_steps: steps before early stopping may end the run (None: none).
        class_weights: loss weight per class, or None; stats: per-set ``(mean, std)`` for
            the head's standardisation, or None.

    Returns:
        :func:`fit_plain`'s summary plus ``"trainer": "plain"``.
    """
    import random

    import numpy as np
    import torch

    from featurestore.reader import batch_loader

    from .data import split_dataset
    from .models import FusionHead

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)  # as Lightning's seed_everything
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if _device(cfg.accelerator).type != "cpu":
        # As Lightning's deterministic=True. On CPU this head's ops (linear, cross-entropy,
        # AdamW) are deterministic already, and the call imports torch._inductor (1.5 s).
        torch.use_deterministic_algorithms(True)
    vocabulary = prepared.vocabulary
    hparams = {"encoders": list(cfg.encoders), "dims": [prepared.dims[e] for e in cfg.encoders],
               "vocabulary": vocabulary, "hidden": cfg.hidden, "fusion": cfg.fusion, "dropout": cfg.dropout,
               "lr": cfg.lr, "weight_decay": cfg.weight_decay, "class_weights": class_weights,
               "monitor": cfg.monitor, "modality_dropout": float(cfg.modality_dropout or 0.0)}
    head = FusionHead(hparams["dims"], len(vocabulary), hidden=cfg.hidden, fusion=cfg.fusion,
                      dropout=cfg.dropout)
    if stats is not None:
        head.set_standardization(stats)
    workers = cfg.workers if prepared.features is None else 0

    def loader(part: str, shuffle: bool):
        return batch_loader(split_dataset(prepared, part), cfg.batch_size, shuffle=shuffle,
                            num_workers=workers, seed=cfg.seed)

    fit = fit_plain(head, loader("train", True), loader("val", False), encoders=cfg.encoders,
                    vocabulary=vocabulary, class_weights=class_weights, lr=cfg.lr,
                    weight_decay=cfg.weight_decay, modality_dropout=hparams["modality_dropout"],
                    monitor=cfg.monitor, patience=cfg.patience, max_epochs=cfg.epochs,
                    max_steps=cfg.max_steps, min_steps=min_steps, accelerator=cfg.accelerator,
                    run_dir=run_dir, hparams=hparams, checkpoint=checkpoint, progress=progress)
    return {**fit, "trainer": "plain"}
