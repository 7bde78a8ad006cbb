"""`emofs llm ask` and `emofs llm eval`: answers from a trained run.

``ask`` answers one clip of the store (cached features) or a new media file (features
extracted on the fly with the store's specs). ``eval`` generates the recognition answer
of every selected clip, maps each answer to a label (the label word it names; answers
naming none are counted) and reports accuracy, weighted F1, UAR, WAR and a confusion
matrix, beside the figures of a head run on the same clips when one is given (or is the
run's ``--projectors-from``). An empty answer is never passed off as one: ``ask`` says it
is empty and why, ``eval`` counts them.
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
from .model import EmotionLLM, Generation

log = logging.getLogger(__name__)

__all__ = ["ask", "evaluate", "answer_to_label", "EvalResult", "NONE_LABEL", "MemoryFeatures", "empty_note",
           "run_split_ids", "head_figures"]

NONE_LABEL = "(none)"
_MORE_TRAINING = "train longer (more --epochs or --max-steps, a higher --lr) or on a real base (--base gemma3-270m)"


def empty_note(generation: Generation) -> str | None:
    """Why an answer is empty (None when it is not).

    Args:
        generation: one :class:`llm.model.Generation`.
    """
    if generation.text:
        return None
    if generation.tokens == 0 and generation.stop != "max_new_tokens":
        return (f"the model ended its answer at once (its first token was {generation.stop}): the adapter has "
                f"not learned to answer yet; {_MORE_TRAINING}")
    return (f"the model generated {generation.tokens} tokens that decode to nothing (special or blank "
            f"tokens, stop: {generation.stop}); {_MORE_TRAINING}")


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


def check_store_features(model: EmotionLLM, features: StoreFeatures, store: Store) -> None:
    """Widths must match the projectors; an imported Emotion-LLaMA warns about sets not
    extracted with its recipe (answers then come from features it never saw)."""
    model.check_features(features)
    if model.config.prompt_style == "emotion-llama":
        from .emotion_llama import recipe_mismatches

        off = recipe_mismatches(store, model.config)
        if off:
            log.warning(f"the imported Emotion-LLaMA expects `emofs extract --recipe emotion-llama` features: "
                        f"{'; '.join(off)}")


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
        ``{"clip_id", "source", "task", "prompt", "answer", "label", "empty", "note",
        "tokens", "stop"}``: ``label`` is the label the answer names (or None); ``empty``
        is True when the answer is empty and ``note`` then says why; ``tokens`` counts the
        generated tokens and ``stop`` names the token that ended them (or
        ``max_new_tokens``).
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
        check_store_features(model, features, store)
        source = "store"
    labels = getattr(model, "labels", None) or cfg.labels or []
    example = make_example(record, features, cfg, labels, task, question=question, with_answer=False)
    generation = model.generate_detailed([example], max_new_tokens)[0]
    answer = generation.text
    return {"clip_id": record.clip_id, "source": source, "task": task, "prompt": example["prompt"],
            "answer": answer, "label": answer_to_label(answer, labels), "empty": not answer,
            "note": empty_note(generation), "tokens": generation.tokens, "stop": generation.stop}


@dataclass
class EvalResult:
    """Figures of one ``emofs llm eval``."""

    out_dir: Path
    n: int
    unmatched: int
    metrics: dict[str, Any]
    seconds: float
    empty: int = 0
    head: dict[str, Any] | None = None  # :func:`head_figures` on the same clips

    def as_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "n": self.n, "unmatched": self.unmatched, "empty": self.empty,
                "seconds": self.seconds, **{k: self.metrics[k] for k in _HEADLINE}, "head": self.head}


_HEADLINE = ("accuracy", "weighted_f1", "uar", "war", "macro_f1")


def run_split_ids(run_dir: str | Path, split: str) -> list[str]:
    """Clip ids of one part (``train``, ``val``, ``test``) of a run's ``splits.csv``.

    Raises:
        InputError: the run has no ``splits.csv`` (trained without ``--split-by``), or no clip there.
    """
    path = Path(run_dir) / "splits.csv"
    if not path.is_file():
        raise InputError(f"{run_dir} has no splits.csv (trained without --split-by): select clips with --where")
    with open(path, newline="") as handle:
        ids = [row["clip_id"] for row in csv.DictReader(handle) if row["split"] == split]
    if not ids:
        raise InputError(f"no {split!r} clips in {path} (parts: train, val, test)")
    return ids


def head_figures(store: Store, head_run: str | Path, clip_ids: Sequence[str],
                 truth: dict[str, str]) -> dict[str, Any]:
    """A head run's figures on the given labelled clips (the LLM's eval clips).

    Returns:
        ``{"run", "n", "accuracy", "weighted_f1", "uar", "war", "macro_f1", "seen_in_training"}``:
        ``n`` counts the clips the head could predict (it needs one of its feature sets);
        ``seen_in_training`` the clips its ``splits.csv`` puts in train or val.
    """
    from heads.metrics import classification_metrics
    from heads.predict import predict_clips

    frame = predict_clips(store, head_run, clip_ids=list(clip_ids), drop_missing=True)
    ids, predicted = frame["clip_id"].to_list(), frame["label"].to_list()
    vocab = sorted({truth[c] for c in ids} | set(predicted))
    figures = classification_metrics([vocab.index(truth[c]) for c in ids],
                                     [vocab.index(p) for p in predicted], vocab) if ids else {}
    seen = 0
    splits = Path(head_run) / "splits.csv"
    if splits.is_file():
        with open(splits, newline="") as handle:
            trained = {row["clip_id"] for row in csv.DictReader(handle) if row.get("split") in ("train", "val")}
        seen = len(trained & set(ids))
    return {"run": str(head_run), "n": len(ids), **{k: figures.get(k) for k in _HEADLINE},
            "seen_in_training": seen}


def _head_run(run_dir: str | Path, cfg, head: str | Path | None) -> Path | None:
    """The head run to compare with: the one given, else the run's head ``--projectors-from``."""
    if head is not None:
        path = Path(head)
        if not (path / "checkpoints" / "best.ckpt").is_file():
            raise InputError(f"--head {head}: not a head run (no checkpoints/best.ckpt): pass an "
                             "`emofs train head --out` folder")
        from heads.predict import check_finished

        check_finished(path)
        return path
    source = Path(cfg.projectors_from) if cfg.projectors_from else None
    return source if source is not None and (source / "checkpoints" / "best.ckpt").is_file() else None


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
    split: str | None = None,
    head: str | Path | None = None,
    rank_labels: bool = False,
) -> EvalResult:
    """Generate the recognition answer of every selected labelled clip and score it.

    Writes ``answers.csv``, ``metrics.json`` and ``confusion.png`` to ``out_dir``
    (default ``<run>/eval``).

    Args:
        split: keep only the clips of this part of the run's ``splits.csv`` (``test``: the
            held-out groups of a ``--split-by`` run).
        head: a head run scored on the same clips (default: the run's
            ``--projectors-from`` when that is a head run); in ``metrics.json["head"]``.
        rank_labels: also rank the label words by their log-probability after each
            prompt; the top label's figures go to ``metrics.json["ranked"]`` (the answer a
            constrained decoder would give: always a label).

    Raises:
        InputError: no labelled clip with features matches ``where`` / ``split``.
    """
    from heads.metrics import classification_metrics
    from heads.report import plot_confusion

    model = model or EmotionLLM.load(run_dir)
    cfg = model.config
    labels = list(getattr(model, "labels", None) or cfg.labels or [])
    if not labels:
        raise InputError(f"run {run_dir} has no label set (it was trained on task reason only)")
    head_run = _head_run(run_dir, cfg, head)
    records = [r for r in load_records(store, where, cfg.description_column) if r.label]
    if split is not None:
        chosen = set(run_split_ids(run_dir, split))
        records = [r for r in records if r.clip_id in chosen]
    features = StoreFeatures(store, cfg.feature_encoders, cfg.video_encoder,
                             clip_ids=[r.clip_id for r in records])
    check_store_features(model, features, store)
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
        raise InputError(f"no labelled clip with cached features matches --where {where!r}"
                         + (f" in split {split!r}" if split else ""))
    start = time.perf_counter()
    generations: list[Generation] = []
    ranked: list[str] = []
    with track_progress(len(records), "llm eval", enabled=progress) as advance:
        for i in range(0, len(records), batch_size):
            chunk = records[i : i + batch_size]
            examples = [make_example(r, features, cfg, labels, "emotion", with_answer=False) for r in chunk]
            generations.extend(model.generate_detailed(examples, max_new_tokens))
            if rank_labels:
                ranked += [labels[j] for j in model.answer_logprobs(examples, labels).argmax(1).tolist()]
            advance(len(chunk))
    seconds = time.perf_counter() - start
    answers = [g.text for g in generations]
    empty = sum(not a for a in answers)
    if empty:
        note = empty_note(next(g for g in generations if not g.text))
        log.warning(f"{empty} of {len(answers)} answers are empty (e.g. {note})")
    predicted = [answer_to_label(a, labels) for a in answers]
    vocab = labels + [x for x in unknown if x not in labels] + [NONE_LABEL]
    y_true = [vocab.index(r.label) for r in records]
    y_pred = [vocab.index(p) if p is not None else vocab.index(NONE_LABEL) for p in predicted]
    metrics = classification_metrics(y_true, y_pred, vocab)
    unmatched = sum(p is None for p in predicted)
    metrics["unmatched"] = unmatched
    metrics["empty"] = empty
    metrics["where"] = where
    metrics["split"] = split
    if rank_labels:
        top = classification_metrics(y_true, [vocab.index(p) for p in ranked], vocab)
        metrics["ranked"] = {k: top[k] for k in ("accuracy", "uar", "weighted_f1", "war")}
    metrics["head"] = (head_figures(store, head_run, [r.clip_id for r in records],
                                    {r.clip_id: r.label for r in records}) if head_run else None)
    out = Path(out_dir) if out_dir else Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "answers.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip_id", "label", "predicted", "answer", "tokens", "stop", "ranked"])
        for i, (r, p, g) in enumerate(zip(records, predicted, generations)):
            writer.writerow([r.clip_id, r.label, p or "", g.text, g.tokens, g.stop, ranked[i] if ranked else ""])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_confusion(np.asarray(metrics["confusion"]), vocab, out / "confusion.png", title="LLM answers")
    return EvalResult(out, len(records), unmatched, metrics, seconds, empty, metrics["head"])
