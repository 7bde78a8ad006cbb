"""`emofs llm ask` and `emofs llm eval`: answers from a trained run.

``ask`` answers one clip of the store (cached features) or a new media file (features
extracted on the fly with the store's specs). ``eval`` generates the recognition answer
of every selected clip, maps each answer to a label (the label word it names; answers
naming none are counted) and reports accuracy, weighted F1, UAR, WAR and a confusion
matrix.
"""

from __future__ import annotations

import logging
import csv
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featurestore.progress import track_progress
from featurestore.errors import InputError
from featurestore.store import Store, sql_quote

from .config import TASKS
from .data import ClipRecord, StoreFeatures, load_records, make_example
from .model import EmotionLLM

log = logging.getLogger(__name__)

__all__ = ["ask", "evaluate", "answer_to_label", "EvalResult", "NONE_LABEL", "MemoryFeatures"]

NONE_LABEL = "(none)"


def answer_to_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names (the last one mentioned), or None if it names none.

    Matching is case-insensitive on whole words, so ``sad`` does not match ``sadness``.
    """
    best, best_end = None, -1
    for label in labels:
        pattern = r"(?<![A-Za-z0-9])" + re.escape(label) + r"(?![A-Za-z0-9])"
        for m in re.finditer(pattern, answer, flags=re.IGNORECASE):
            if m.end() > best_end or (m.end() == best_end and len(label) > len(best or "")):
                best, best_end = label, m.end()
    return best


class MemoryFeatures:
    """Features of one new media file, in the interface of :class:`StoreFeatures`."""

    def __init__(self, clip_id: str, extracted: dict[str, dict[str, Any]],
                 feature_encoders: Sequence[str], video_encoder: str | None):
        self.clip_id = clip_id
        self.extracted = extracted
        self.feature_encoders = list(feature_encoders)
        self.video_encoder = video_encoder

    def vector(self, name: str, clip_id: str) -> np.ndarray | None:
        entry = self.extracted.get(name)
        return None if entry is None or entry.get("vector") is None else np.asarray(entry["vector"], np.float32)

    def video_tokens(self, clip_id: str) -> np.ndarray | None:
        entry = self.extracted.get(self.video_encoder or "")
        tokens = None if entry is None else entry.get("tokens")
        return None if tokens is None or len(tokens) == 0 else np.asarray(tokens, np.float32)


def _check_question(task: str) -> None:
    if task not in TASKS:
        raise InputError(f"--task must be one of {', '.join(TASKS)} (got {task!r})")


def ask(
    run_dir: str | Path,
    target: str,
    store: Store,
    *,
    question: str | None = None,
    task: str = "emotion",
    subtitle: str | None = None,
    max_new_tokens: int | None = None,
    model: EmotionLLM | None = None,
    extracted: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Answer one clip id of the store, or one new file whose features were extracted.

    Args:
        run_dir: an ``emofs llm train`` run.
        target: a clip id in the store, or (with ``extracted``) the name of a new file.
        store: the store holding the clip's cached features.
        question: replaces the task's instruction.
        task: ``emotion`` or ``reason`` (shown as ``[task]`` in the prompt).
        subtitle: what the person says (default: the clip's subtitle; none for a new file).
        model: an already loaded run (skips loading).
        extracted: ``{feature_set: {"vector", "tokens"}}`` of a file that is not in the
            store (:func:`workflows.ask` extracts it with the store's specs).

    Returns:
        ``{"clip_id", "source", "task", "prompt", "answer", "label"}`` where ``label`` is
        the label the answer names (or None).
    """
    _check_question(task)
    model = model or EmotionLLM.load(run_dir)
    cfg = model.config
    if extracted is not None:
        record = ClipRecord(str(target), None, subtitle, None)
        features = MemoryFeatures(str(target), extracted, cfg.feature_encoders, cfg.video_encoder)
        source = "file"
    else:
        rows = store.clips(where=f"clip_id = {sql_quote(target)}") if store.exists() else None
        if rows is None or not rows.height:
            raise InputError(
                f"{target!r} is not a clip id in {store.uri}: pass a clip_id from `emofs clips` "
                "(`emofs llm ask FILE` extracts a new media file on the fly)"
            )
        row = rows.row(0, named=True)
        record = ClipRecord(target, row.get("label"), subtitle if subtitle is not None else row.get("subtitle"),
                            row.get(cfg.description_column))
        features = StoreFeatures(store, cfg.feature_encoders, cfg.video_encoder, clip_ids=[target])
        source = "store"
    labels = getattr(model, "labels", None) or cfg.labels or []
    example = make_example(record, features, cfg, labels, task, question=question, with_answer=False)
    answer = model.generate([example], max_new_tokens)[0]
    return {"clip_id": record.clip_id, "source": source, "task": task, "prompt": example["prompt"],
            "answer": answer, "label": answer_to_label(answer, labels)}


@dataclass
class EvalResult:
    """Figures of one ``emofs llm eval``."""

    out_dir: Path
    n: int
    unmatched: int
    metrics: dict[str, Any]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "n": self.n, "unmatched": self.unmatched,
                "seconds": self.seconds, **{k: self.metrics[k] for k in
                                            ("accuracy", "weighted_f1", "uar", "war", "macro_f1")}}


def evaluate(
    run_dir: str | Path,
    store: Store,
    *,
    where: str | None = None,
    batch_size: int = 16,
    out_dir: str | Path | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
    model: EmotionLLM | None = None,
) -> EvalResult:
    """Generate the recognition answer of every selected labelled clip and score it.

    Writes ``answers.csv``, ``metrics.json`` and ``confusion.png`` to ``out_dir``
    (default ``<run>/eval``).

    Raises:
        InputError: no labelled clip with features matches ``where``.
    """
    from heads.metrics import classification_metrics
    from heads.report import plot_confusion

    model = model or EmotionLLM.load(run_dir)
    cfg = model.config
    labels = list(getattr(model, "labels", None) or cfg.labels or [])
    if not labels:
        raise InputError(f"run {run_dir} has no label set (it was trained on task reason only)")
    records = [r for r in load_records(store, where, cfg.description_column) if r.label]
    features = StoreFeatures(store, cfg.feature_encoders, cfg.video_encoder,
                             clip_ids=[r.clip_id for r in records])
    cached = features.clip_ids()
    skipped = sum(r.clip_id not in cached for r in records)
    records = [r for r in records if r.clip_id in cached]
    if skipped:
        log.warning(f"{skipped} labelled clips have none of the run's features and were skipped (run `emofs extract`)")
    unknown = sorted({r.label for r in records if r.label not in labels})
    if unknown:
        log.warning(f"{sum(r.label in unknown for r in records)} clips have labels the run never saw "
             f"({', '.join(unknown)}): they count as errors")
    if not records:
        raise InputError(f"no labelled clip with cached features matches --where {where!r}")
    start = time.perf_counter()
    answers: list[str] = []
    with track_progress(len(records), "llm eval", enabled=progress) as advance:
        for i in range(0, len(records), batch_size):
            chunk = records[i : i + batch_size]
            examples = [make_example(r, features, cfg, labels, "emotion", with_answer=False) for r in chunk]
            answers.extend(model.generate(examples, max_new_tokens))
            advance(len(chunk))
    seconds = time.perf_counter() - start
    predicted = [answer_to_label(a, labels) for a in answers]
    vocab = labels + [x for x in unknown if x not in labels] + [NONE_LABEL]
    y_true = [vocab.index(r.label) for r in records]
    y_pred = [vocab.index(p) if p is not None else vocab.index(NONE_LABEL) for p in predicted]
    metrics = classification_metrics(y_true, y_pred, vocab)
    unmatched = sum(p is None for p in predicted)
    metrics["unmatched"] = unmatched
    metrics["where"] = where
    out = Path(out_dir) if out_dir else Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "answers.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip_id", "label", "predicted", "answer"])
        for r, p, a in zip(records, predicted, answers):
            writer.writerow([r.clip_id, r.label, p or "", a])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_confusion(np.asarray(metrics["confusion"]), vocab, out / "confusion.png", title="LLM answers")
    return EvalResult(out, len(records), unmatched, metrics, seconds)
