"""Run reports as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_confusion", "plot_curves", "plot_ablation"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """Lay out, write the PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Confusion matrix (rows: true, columns: predicted), counts and row-normalised colour."""
    plt = _pyplot()
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    return _save(plt, fig, path)


def plot_curves(metrics_csv: str | Path, path: str | Path, *, monitor: str = "weighted_f1") -> Path:
    """Train/val loss and the validation figures per epoch from a run's ``metrics.csv``."""
    import polars as pl

    plt = _pyplot()
    frame = pl.read_csv(metrics_csv) if Path(metrics_csv).stat().st_size else pl.DataFrame()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if "epoch" in frame.columns and frame.height:
        epoch = frame["epoch"].to_numpy()
        for col in ("train_loss", "val_loss"):
            if col in frame.columns:
                left.plot(epoch, frame[col].to_numpy(), marker="o", label=col)
        for col in ("val_accuracy", "val_weighted_f1", "val_macro_f1", "val_uar"):
            if col in frame.columns:
                right.plot(epoch, frame[col].to_numpy(), marker="o", label=col,
                           linewidth=2.5 if col == f"val_{monitor}" else 1.2)
    left.set_xlabel("epoch")
    left.set_title("loss")
    if left.get_legend_handles_labels()[0]:
        left.legend(loc="best")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.set_title("validation")
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="best")
    return _save(plt, fig, path)


def plot_ablation(frame, path: str | Path, *, metric: str = "weighted_f1") -> Path:
    """Bar chart of a test figure per encoder subset (ablation table)."""
    plt = _pyplot()
    names = frame["encoders"].to_list()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 4))
    for offset, (col, colour) in enumerate(((metric, "tab:blue"), ("uar", "tab:orange"))):
        values = frame[col].to_numpy()
        xs = np.arange(len(names)) + (offset - 0.5) * 0.4
        ax.bar(xs, values, width=0.4, label=col, color=colour)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test")
    ax.set_title("encoder ablation")
    ax.legend(loc="best")
    return _save(plt, fig, path)
