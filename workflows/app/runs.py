"""The Runs page: each prediction run scored against the clips' labels.

A run's figures are computed here, from ``predictions/<run>.lance`` and the clip labels
as they are now (corrections included), with :func:`heads.metrics.classification_metrics`
(accuracy, weighted F1, UAR, WAR, per class, confusion matrix). A confusion cell names the
clip filter that lists its clips (``where`` on the true label + ``pred_label``).
"""

from __future__ import annotations

import json
from typing import Any

from featurestore.predictions import RUN_KEY, VOCABULARY_KEY, read_predictions
from featurestore.schema import predictions_name
from featurestore.store import Store, sql_quote
from heads.metrics import classification_metrics

from .queries import check_run
from .rundirs import cv_of_run, cv_tables

__all__ = ["run_report", "runs_route", "run_route"]


def run_report(store: Store, run: str) -> dict[str, Any]:
    """Figures of one prediction run over its clips that carry a label of its vocabulary.

    Returns:
        ``{"run", "vocabulary", "predictions", "scored", "metrics" (None when no clip is
        scorable), "cells": [[{"where", "pred_label", "count"}]]}``.

    Raises:
        NotFoundError: no such run.
    """
    import polars as pl

    check_run(store, run)
    meta = store.dataset(predictions_name(run)).schema.metadata or {}
    vocabulary = json.loads(meta.get(VOCABULARY_KEY.encode(), b"[]"))
    preds = read_predictions(store, run).select("clip_id", pl.col("label").alias("prediction"),
                                                "model_fingerprint", "predicted_at")
    truth = store.clips(columns=["clip_id", "label"])
    joined = preds.join(truth, on="clip_id", how="inner").filter(pl.col("label").is_in(vocabulary))
    index = {label: i for i, label in enumerate(vocabulary)}
    metrics = None
    cells: list[list[dict[str, Any]]] = []
    if joined.height:
        metrics = classification_metrics([index[v] for v in joined["label"]],
                                         [index[v] for v in joined["prediction"]], vocabulary)
        cells = [[{"where": f"label = {sql_quote(t)}", "pred_label": p, "count": metrics["confusion"][i][j]}
                  for j, p in enumerate(vocabulary)] for i, t in enumerate(vocabulary)]
    when = preds["predicted_at"].max() if preds.height else None
    return {"run": run, "run_id": meta.get(RUN_KEY.encode(), b"").decode() or run,
            "vocabulary": vocabulary, "predictions": preds.height, "scored": joined.height,
            "predicted_at": when, "metrics": metrics, "cells": cells}


def runs_route(request):
    """``GET /api/runs``: every prediction run with its headline figures, and every
    cross-validation (``cv.json``) under the runs folder: per-fold rows, mean and std."""
    from .api import reply

    store = request.app.state.store
    out = []
    for run in store.prediction_runs():
        report = run_report(store, run)
        figures = report["metrics"] or {}
        out.append({"run": run, "predictions": report["predictions"], "scored": report["scored"],
                    "accuracy": figures.get("accuracy"), "weighted_f1": figures.get("weighted_f1"),
                    "uar": figures.get("uar"), "predicted_at": report["predicted_at"]})
    return reply({"runs": out, "cv": cv_tables(request.app.state.config.runs_dir)})


def run_route(request):
    """``GET /api/runs/{run}``: metrics, per-class figures, the confusion matrix, and the
    cross-validation table of the head that wrote the run (``cv``, when it has one)."""
    from .api import reply

    store, run = request.app.state.store, request.path_params["run"]
    report = run_report(store, run)
    report["cv"] = cv_of_run(store, request.app.state.config.runs_dir, run)
    return reply(report)
