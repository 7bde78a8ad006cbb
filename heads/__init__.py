"""Projector and fusion heads trained from cached tensors (Lightning).

Cheap to import: torch and Lightning load on first use of a function below.

Example:
    >>> from featurestore import Store
    >>> from heads import HeadConfig, train_head, predict_clips
    >>> result = train_head(Store(), HeadConfig(encoders=["hubert", "mae"], split_by="speaker"))
    >>> predict_clips(Store(), result.run_dir, where="split = 'test'")
"""

from __future__ import annotations

from featurestore.lazy import lazy_attributes

from .config import HeadConfig
from .metrics import classification_metrics, confusion_matrix

__all__ = [
    "HeadConfig",
    "classification_metrics",
    "confusion_matrix",
    "prepare_data",
    "train_head",
    "ablate",
    "load_run",
    "predict_clips",
    "evaluate_run",
    "predict_to_store",
    "cross_validate",
    "embed_run",
    "retrieval_eval",
    "precision_at_k",
]

_LAZY = {
    "prepare_data": "data",
    "train_head": "train",
    "ablate": "train",
    "load_run": "predict",
    "predict_clips": "predict",
    "evaluate_run": "predict",
    "predict_to_store": "predict",
    "embed_run": "embed",
    "retrieval_eval": "retrieval",
    "precision_at_k": "retrieval",
    "cross_validate": "cv",
}


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
