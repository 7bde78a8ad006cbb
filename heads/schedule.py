"""Batch size, epoch budget and patience derived from the training-set size.

A fixed batch of 256 gives a 320-clip corpus two steps an epoch, and a patience of five
epochs ends it after a few dozen steps. Defaults (a field left as None) therefore scale
with the data: batch ``clamp(n_train / 8, 16, 256)``, at least :data:`MIN_STEPS`
optimiser steps (early stopping cannot end a run sooner), and a patience of about
:data:`PATIENCE_STEPS` steps counted in validation checks (one per epoch). On large data
(batch 256, >= 30 epochs, patience 5) this is what a fixed default gave; flags override.
"""

from __future__ import annotations

import math
from typing import Any

from .config import HeadConfig

__all__ = ["MIN_STEPS", "PATIENCE_STEPS", "DEFAULT_EPOCHS", "DEFAULT_PATIENCE", "resolve_schedule"]

MIN_STEPS = 500
PATIENCE_STEPS = 250
DEFAULT_EPOCHS = 30
DEFAULT_PATIENCE = 5


def resolve_schedule(cfg: HeadConfig, n_train: int) -> tuple[HeadConfig, dict[str, Any]]:
    """Fill ``batch_size``, ``epochs`` and ``patience`` left as None.

    Args:
        cfg: the run configuration (explicit values are kept).
        n_train: training clips.

    Returns:
        ``(config with every field set, schedule summary for metrics.json)``.
    """
    derived = [k for k in ("batch_size", "epochs", "patience") if getattr(cfg, k) is None]
    n = max(1, int(n_train))
    batch = cfg.batch_size or min(256, max(16, n // 8))
    per_epoch = math.ceil(n / batch)
    epochs = cfg.epochs or max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / per_epoch))
    patience = cfg.patience or max(DEFAULT_PATIENCE, math.ceil(PATIENCE_STEPS / per_epoch))
    # Early stopping waits for MIN_STEPS only when the epoch budget was derived too.
    min_steps = min(MIN_STEPS, epochs * per_epoch) if cfg.epochs is None else None
    resolved = cfg.replace(batch_size=batch, epochs=epochs, patience=patience)
    summary = {"batch_size": batch, "epochs_max": epochs, "patience_checks": patience,
               "steps_per_epoch": per_epoch, "min_steps": min_steps, "derived": derived}
    return resolved, summary
