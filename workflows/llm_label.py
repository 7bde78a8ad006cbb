"""``emofs label ARCHIVE --llm RUN``: label an archive with an LLM run's generated answers.

The run is an ``emofs llm train`` run or an imported Emotion-LLaMA
(``emofs llm import-checkpoint``). Its feature sets are extracted for the archive's new
clips the way the store already holds them (each set's stored spec: same encoder, weights
and settings, e.g. ``--recipe emotion-llama``), then the run answers the emotion
instruction for every clip with features; the answer's label and the answer itself go to
``--out``. Files that failed a stage are listed with their error, as ``emofs label --run``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

from featurestore.errors import InputError
from featurestore.progress import track_progress
from featurestore.store import Store

from .label import LabelReport, archive_clips, archive_files, extract_local, ready_clips, write_out

__all__ = ["label_with_llm"]


def _store_plan(store: Store, sets: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per feature set of the run, as the store holds it (spec, fingerprint)."""
    from featurestore.features import feature_spec, spec_fingerprint

    plan, absent = [], []
    for name in sets:
        spec = feature_spec(store, name)
        if spec is None or "ref" not in spec:
            absent.append(name)
            continue
        plan.append({"name": name, "ref": spec["ref"], "dtype": spec.get("dtype", "float16"),
                     "media": spec.get("media"), "fingerprint": spec_fingerprint(spec), "spec": spec})
    if absent:
        raise InputError(
            f"the LLM run reads feature sets {', '.join(absent)}, which {store.uri} does not hold: extract them "
            "once on some clips (`emofs extract --recipe emotion-llama` for an imported Emotion-LLaMA), "
            "then label: new clips are extracted the same way"
        )
    return plan


def label_with_llm(
    archives: Sequence[str | Path],
    store: Store,
    llm_run: str | Path,
    *,
    out: str | Path | None = None,
    batch_size: int = 8,
    workers: int | str = "auto",
    device: str = "auto",
    progress: bool = True,
) -> LabelReport:
    """Label every clip of ``archives`` with the answers of an LLM run.

    Args:
        archives: folders (walked recursively) or media files.
        store: the store (created on first ingest); it must hold the run's feature sets.
        llm_run: an ``emofs llm train`` / ``emofs llm import-checkpoint`` run.
        out: CSV or Parquet file: path, clip_id, label, answer, error per file.
        batch_size: clips per generation batch and per encoder batch.
        workers / device: decoding processes and encoder device for new clips.

    Raises:
        InputError: not an llm run, a run without a label set, or feature sets the store
            has never extracted.
    """
    import polars as pl

    from extractors.ingest import ingest
    from extractors.workers import parse_workers
    from llm.data import ClipRecord, StoreFeatures, make_example
    from llm.config import LLMConfig
    from llm.generate import answer_to_label, check_store_features
    from llm.model import EmotionLLM

    started = time.perf_counter()
    if out is not None and Path(out).suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out must end in .csv or .parquet (got {out})")
    run_dir = Path(llm_run)
    meta_path = run_dir / "config.json"
    if not meta_path.is_file():
        EmotionLLM.load(run_dir)  # raises its one line: not an llm run, or an unfinished one
    # the settings first, the model (gigabytes for a 7B base) once the features are there
    meta = json.loads(meta_path.read_text())
    cfg = LLMConfig.from_dict(meta["config"])
    labels = list(meta.get("labels") or cfg.labels or [])
    if not labels:
        raise InputError(f"--llm {llm_run} has no label set (it was trained on task reason only)")
    sets = list(dict.fromkeys([*cfg.feature_encoders, *([cfg.video_encoder] if cfg.video_encoder else [])]))
    plan = _store_plan(store, sets)
    report = LabelReport(run_id=Path(llm_run).name, dataset="", engine="local")
    files = archive_files(archives)
    report.files = len(files)
    report.ingest = {k: v for k, v in ingest(archives, store, progress=progress).as_dict().items()
                     if k in ("new", "updated", "unchanged")}
    clips = archive_clips(store, files)
    ids = clips["clip_id"].to_list()
    report.clips = len(ids)
    missing = sorted(set(ids) - ready_clips(store, plan, set(ids), require_all=False))
    if missing:
        settings = SimpleNamespace(device=device, batch_size=batch_size, workers=parse_workers(workers))
        report.extracted = extract_local(store, plan, missing, settings, progress)["extracted"]
    model = EmotionLLM.load(run_dir)
    features = StoreFeatures(store, cfg.feature_encoders, cfg.video_encoder, clip_ids=ids)
    check_store_features(model, features, store)
    cached = features.clip_ids()
    ready = [c for c in ids if c in cached]
    subtitles = dict(zip(ids, clips["subtitle"].to_list()))
    answers: dict[str, str] = {}
    with track_progress(len(ready), "llm labelling", enabled=progress) as advance:
        for start in range(0, len(ready), batch_size):
            chunk = ready[start : start + batch_size]
            examples = [make_example(ClipRecord(c, None, subtitles.get(c), None), features, cfg, labels,
                                     "emotion", with_answer=False) for c in chunk]
            for clip_id, gen in zip(chunk, model.generate_detailed(examples)):
                answers[clip_id] = gen.text
            advance(len(chunk))
    report.labelled = len(answers)
    uris = dict(zip(ids, clips["uri"].to_list()))
    by_path = {uris[c]: c for c in ids}
    rows = []
    for path in files:
        clip_id = by_path.get(path)
        answer = answers.get(clip_id) if clip_id else None
        error = None if answer is not None else (
            "not ingested: see `emofs errors`" if clip_id is None else "no feature set of the run for this clip")
        rows.append({"path": path, "clip_id": clip_id, "label": answer_to_label(answer or "", labels) if answer else None,
                     "answer": answer, "error": error})
    frame = pl.DataFrame(rows, schema={"path": pl.Utf8, "clip_id": pl.Utf8, "label": pl.Utf8,
                                       "answer": pl.Utf8, "error": pl.Utf8})
    counts = frame.filter(pl.col("label").is_not_null()).group_by("label").len().sort("len", descending=True)
    report.label_counts = dict(counts.iter_rows())
    report.errors = [r for r in rows if r["error"]]
    if out is not None:
        report.out = write_out(frame, out)
    report.seconds = time.perf_counter() - started
    return report
