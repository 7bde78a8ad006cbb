"""The ``--head linear`` baseline: multinomial logistic regression, full-batch L-BFGS in torch.

The objective is scikit-learn's ``LogisticRegression(C=1)`` (lbfgs): mean cross-entropy
(class-weighted with ``--class-weights``) plus ``||W||^2 / (2 C n)``, on inputs z-scored
with the training statistics (after ``--normalize``). No Lightning, no epochs: one solve.

A missing modality's block is zero (its training mean). With ``--modality-dropout`` over
more than one feature set, the solve also sees :data:`DROPOUT_COPIES` copies of the
training clips with modalities hidden at that rate (at least one kept, fixed seed): the
full-batch analogue of modality dropout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featurestore.errors import InputError

from .config import HeadConfig

__all__ = ["fit_linear", "C", "MAX_ITER", "DROPOUT_COPIES"]

#: Inverse L2 strength (scikit-learn's default).
C = 1.0
MAX_ITER = 500
#: Copies of the training clips with modalities hidden, added under ``--modality-dropout``.
DROPOUT_COPIES = 2
_CHECKPOINT = "checkpoints/best.ckpt"


def fit_linear(prepared, cfg: HeadConfig, run_dir: Path,
               stats: Sequence[tuple[np.ndarray, np.ndarray]] | None,
               class_weights: list[float] | None) -> dict[str, Any]:
    """Fit a :class:`heads.models.LinearHead` on the training clips; write its checkpoint.

    Args:
        prepared: :class:`heads.data.PreparedData` with preloaded features.
        cfg: the run configuration (encoders, seed, threads).
        run_dir: the run directory (gets ``checkpoints/best.ckpt`` and ``metrics.csv``).
        stats: per feature set ``(mean, std)`` of the training inputs, or None.
        class_weights: per-class loss weights, or None.

    Returns:
        ``{"best_epoch", "epochs", "steps", "fit_s", "first_step_at"}`` (steps: L-BFGS
        iterations).
    """
    import polars as pl
    import torch
    import torch.nn.functional as F

    from .models import LinearHead, drop_modalities

    if prepared.features is None:
        raise InputError("--head linear fits on every training clip at once: drop --preload never")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rows = prepared.indices("train")
    head = LinearHead([prepared.dims[e] for e in cfg.encoders], len(prepared.vocabulary))
    torch.nn.init.zeros_(head.classifier.weight)
    torch.nn.init.zeros_(head.classifier.bias)
    if stats is not None:
        head.set_standardization(stats)
    inputs = [torch.from_numpy(np.asarray(prepared.features[e][rows], dtype=np.float32)) for e in cfg.encoders]
    present = torch.from_numpy(prepared.presence(cfg.encoders, rows))  # (N, M)
    y = torch.from_numpy(prepared.labels[rows])  # (N,)
    masks = [present]
    if cfg.modality_dropout and len(cfg.encoders) > 1:
        generator = torch.Generator().manual_seed(cfg.seed)
        masks += [drop_modalities(present, cfg.modality_dropout, generator) for _ in range(DROPOUT_COPIES)]
    with torch.no_grad():
        x = torch.cat([head.fuse(inputs, mask)[0] for mask in masks])  # (K*N, F)
    y = y.repeat(len(masks))  # (K*N,)
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    l2 = 1.0 / (2.0 * C * max(1, len(y)))
    optimizer = torch.optim.LBFGS(head.classifier.parameters(), lr=1.0, max_iter=MAX_ITER, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = head.classifier(x)  # (N, C)
        loss = F.cross_entropy(logits, y, weight=weight) + l2 * head.classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    started = time.time()
    optimizer.step(closure)
    fit_s = time.time() - started
    loss = float(closure().detach())  # final objective
    steps = int(optimizer.state[head.classifier.weight].get("n_iter", 0))
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    state = {f"head.{k}": v for k, v in head.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 0, "global_step": steps}, run_dir / _CHECKPOINT)
    pl.DataFrame({"epoch": [0], "step": [steps], "train_loss": [loss]}).write_csv(run_dir / "metrics.csv")
    return {"best_epoch": 0, "epochs": 1, "steps": steps, "fit_s": fit_s, "first_step_at": started}
