"""`emofs label`: batch-label archives with a trained head, resumably, locally or on Ray.

Flow (every step plans from what the store already holds, so a rerun does only new work)::

    archives ──ingest (unchanged files skipped)──▶ clips of the archives
        ──plan: clips without a prediction by this model (or whose media changed)──▶ todo
        ──extract only the run's feature sets, only where missing (local or Ray engine)──▶
        features/<set>.lance ──predict (head on cached tensors)──▶ predictions/<run>.lance
        ──(optional) LLM reason per clip──▶ --out CSV/Parquet with every clip of the archives

Every write is a committed batch (``merge_insert`` locally, an atomic fragment commit on
Ray), so a run killed at any point loses at most the batch in flight and a rerun ends with
every clip labelled exactly once. Corrupt files are ``errors.lance`` rows and summary lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from featurestore.progress import track_progress
from featurestore.errors import InputError
from featurestore.schema import predictions_name
from featurestore.store import Store, sql_in

from extractors.ray_engine import ENGINES, RayOptions
from extractors.workers import parse_workers

log = logging.getLogger(__name__)

__all__ = ["LabelConfig", "LabelReport", "label", "archive_frame", "ENGINES"]

_OUT_SUFFIXES = (".csv", ".parquet")
_PREDICT_CHUNK = 2048


@dataclass
class LabelConfig:
    """Validated options of one ``emofs label`` run (flag names in the messages)."""

    run: str | Path
    engine: str = "local"
    ray_address: str | None = None
    out: str | Path | None = None
    batch_size: int = 16
    workers: int | str = "auto"
    device: str = "auto"
    name: str | None = None
    llm_run: str | Path | None = None
    explain: bool = False
    ray_cpus: int | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    ray: RayOptions | None = field(default=None, init=False)

    def __post_init__(self):
        self.ray = RayOptions.of(self.engine, self.device, address=self.ray_address or None,
                                 actors=self.actors, gpus_per_actor=self.gpus_per_actor,
                                 num_cpus=self.ray_cpus)
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1 (got {self.batch_size})")
        self.workers = parse_workers(self.workers)
        if self.out is not None and Path(self.out).suffix.lower() not in _OUT_SUFFIXES:
            raise InputError(f"--out must end in .csv or .parquet (got {self.out})")
        if self.explain and not self.llm_run:
            raise InputError("--explain needs --llm-run RUN (a directory written by `emofs llm train`)")
        if self.llm_run and not self.explain:
            raise InputError("--llm-run is only used with --explain: add --explain or drop --llm-run")
        if self.llm_run and not Path(self.llm_run).is_dir():
            raise InputError(f"--llm-run {self.llm_run} is not a directory: pass an `emofs llm train` run")
        if not Path(self.run).is_dir():
            raise InputError(f"--run {self.run} is not a directory: pass a run written by `emofs train head`")


@dataclass
class LabelReport:
    """What one label run did (the CLI prints it as the summary)."""

    run_id: str = ""
    dataset: str = ""
    engine: str = "local"
    files: int = 0
    clips: int = 0
    already_labelled: int = 0
    labelled: int = 0
    extracted: dict[str, int] = field(default_factory=dict)
    explained: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ingest: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def clips_per_s(self) -> float:
        """Clips labelled by this run per second of the whole run."""
        return self.labelled / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "run_id": self.run_id,
            "dataset": self.dataset,
            "engine": self.engine,
            "files": self.files,
            "clips": self.clips,
            "already_labelled": self.already_labelled,
            "labelled": self.labelled,
            "extracted": self.extracted,
            "explained": self.explained,
            "label_counts": self.label_counts,
            "errors": len(self.errors),
            "error_list": self.errors[:50],
            "ingest": self.ingest,
            "out": self.out,
            "seconds": round(self.seconds, 3),
            "clips_per_s": round(self.clips_per_s, 2),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


# --------------------------------------------------------------------------- plan
def archive_files(archives: Sequence[str | Path]) -> list[str]:
    """Every media file of the archives, in order; the unreadable ones (a dangling link, a
    name that is not UTF-8) under their printable name, which is the ``uri`` of the errors
    row ``ingest`` records for them (``--out`` lists them with that error)."""
    from extractors.ingest import find_media, printable_path

    unreadable: list = []
    files = [str(path) for _, path in find_media(archives, unreadable=unreadable)]
    return list(dict.fromkeys(files + [printable_path(path) for path, _ in unreadable]))


def archive_clips(store: Store, files: list[str]):
    """Clip rows of the archive files (polars), one per readable file."""
    import polars as pl

    columns = ["clip_id", "uri", "sha256", "has_audio", "has_video", "has_media", "subtitle"]
    clips = store.clips(columns=columns)
    return clips.filter(pl.col("uri").is_in(files)).unique("clip_id", keep="first", maintain_order=True)


def _stored_predictions(store: Store, dataset: str) -> dict[str, tuple[str | None, str | None]]:
    """``{clip_id: (model_fingerprint, media_sha256)}`` of the prediction dataset."""
    ds = store.dataset(dataset)
    if ds is None:
        return {}
    cols = ["clip_id", "model_fingerprint"] + (["media_sha256"] if "media_sha256" in ds.schema.names else [])
    table = ds.to_table(columns=cols)
    shas = table.column("media_sha256").to_pylist() if "media_sha256" in cols else [None] * table.num_rows
    return dict(zip(table.column("clip_id").to_pylist(),
                    zip(table.column("model_fingerprint").to_pylist(), shas)))


def _feature_plan(run) -> list[dict[str, Any]]:
    """One entry per feature set the run needs: name, ref, dtype, tokens, media, fingerprint."""
    plan = []
    for name in run.config.encoders:
        info_ = run.features.get(name) or {}
        spec = info_.get("spec") or {}
        if "ref" not in spec:
            raise InputError(
                f"run {run.run_dir} was trained on feature set {name!r} whose spec names no encoder "
                "(imported features?): new clips cannot be extracted the same way; retrain on "
                "features written by `emofs extract`"
            )
        plan.append({"name": name, "ref": spec["ref"], "dtype": spec.get("dtype", "float16"),
                     "media": spec.get("media"),
                     "fingerprint": info_.get("fingerprint"), "spec": spec})
    return plan


def ready_clips(store: Store, plan: list[dict[str, Any]], clip_ids: set[str], *, require_all: bool = True) -> set[str]:
    """Clips having every feature set of the plan (``require_all``), else at least one,
    with the run's fingerprint."""
    from featurestore.features import up_to_date_clip_ids

    done = [up_to_date_clip_ids(store, entry["name"], entry["fingerprint"]) for entry in plan]
    if require_all:
        return set(clip_ids).intersection(*done)
    return set(clip_ids) & set().union(*done)


# ------------------------------------------------------------------------ extract
def extract_local(store: Store, plan, todo: list[str], cfg, progress: bool) -> dict[str, Any]:
    """Run ``extractors.extract`` for the plan's encoders on ``todo`` (grouped by settings).

    ``cfg`` gives ``device``, ``batch_size`` and ``workers`` (a :class:`LabelConfig`)."""
    from extractors.pipeline import extract
    from extractors.specs import group_by_settings

    fingerprints: dict[str, str] = {}
    counts: dict[str, int] = {}
    for group in group_by_settings({e["name"]: e["spec"] for e in plan}):
        report = extract(store, list(group.refs), where=sql_in("clip_id", todo), device=cfg.device,
                         batch_size=cfg.batch_size, workers=cfg.workers, dtype=group.dtype,
                         encoder_options=group.options, progress=progress, media=group.media)
        for name, rep in report.encoders.items():
            fingerprints[name] = rep.spec_fingerprint
            counts[name] = rep.extracted
    return {"fingerprints": fingerprints, "extracted": counts}


def _check_fingerprints(plan, fingerprints: dict[str, str], run_dir) -> None:
    for entry in plan:
        got = fingerprints.get(entry["name"])
        if got and entry["fingerprint"] and got != entry["fingerprint"]:
            raise InputError(
                f"encoder {entry['ref']} now yields feature set {entry['name']!r} with spec "
                f"fingerprint {got}, but run {run_dir} was trained on {entry['fingerprint']} "
                "(weights, settings or emofs version changed): label with the emofs/weights the "
                "run was trained with, or retrain the head on the current features"
            )


# ------------------------------------------------------------------------ predict
def _pin_group_stats(store: Store, run, clip_ids: list[str]):
    """The run with its ``--normalize`` group statistics fixed over ``clip_ids``.

    Prediction runs in chunks of :data:`_PREDICT_CHUNK`; without this a speaker whose
    clips straddle two chunks would be z-scored with two different means. ``clip_ids``
    are every clip of the archives that has the run's features (labelled before or not),
    so a resumed run normalises with the statistics the first run would have used.
    """
    import dataclasses

    from heads.data import read_aligned

    if run.normalizer is None or not clip_ids:
        return run
    column = run.normalizer.column
    if column not in store.clips(limit=1).columns:
        return run  # predict_clips warns: every clip uses the training statistics
    frame = store.clips(columns=["clip_id", column])
    lookup = dict(zip(frame["clip_id"].to_list(), frame[column].to_list()))
    present = np.ones(len(clip_ids), dtype=bool)
    arrays = {}
    for name in run.config.encoders:
        arrays[name], has = read_aligned(store, name, clip_ids)  # (N, D), (N,)
        present &= has
    groups = np.array([lookup.get(c) for c in clip_ids], dtype=object)[present]
    batch = ({k: v[present] for k, v in arrays.items()}, groups)
    return dataclasses.replace(run, normalizer=run.normalizer.pin([batch]))


def _predict(store: Store, run, dataset_id: str, ready: list[str], shas: dict[str, str],
             uris: dict[str, str], progress: bool) -> dict[str, int]:
    """Predict ``ready`` clips in committed chunks; returns label counts of this run."""
    from featurestore.predictions import write_predictions
    from heads.predict import predict_clips

    name = predictions_name(dataset_id)
    counts: dict[str, int] = {}
    with track_progress(len(ready), "predicting", enabled=progress) as advance:
        for start in range(0, len(ready), _PREDICT_CHUNK):
            chunk = ready[start : start + _PREDICT_CHUNK]
            frame = predict_clips(store, run, clip_ids=chunk)
            ids = frame["clip_id"].to_list()
            probs = np.array(frame["probs"].to_list(), dtype=np.float32).reshape(len(ids), len(run.vocabulary))  # (N, C)
            write_predictions(store, dataset_id, ids, probs, run.vocabulary,
                              model_fingerprint=run.model_fingerprint, modalities=frame["modalities"].to_list())
            # path + media hash: a changed file (new hash) is relabelled by the next run;
            # a kill between the two commits leaves a null hash, which is relabelled too.
            store.upsert(name, pa.table({
                "clip_id": pa.array(ids, pa.string()),
                "path": pa.array([uris[c] for c in ids], pa.string()),
                "media_sha256": pa.array([shas[c] for c in ids], pa.string()),
            }))
            store.clear_errors("label", [uris[c] for c in ids])
            for lab in frame["label"].to_list():
                counts[lab] = counts.get(lab, 0) + 1
            advance(len(chunk))
    return counts


def _explain(store: Store, cfg: LabelConfig, dataset_id: str, clip_ids: list[str], progress: bool) -> int:
    """One LLM reason per clip lacking one, upserted into the prediction dataset."""
    try:
        from llm import ask
        from llm.model import EmotionLLM
    except ImportError as exc:  # pragma: no cover - llm package missing
        raise InputError(f"--explain needs the llm package ({exc}): train a run with `emofs llm train`") from exc
    name = predictions_name(dataset_id)
    ds = store.dataset(name)
    done: set[str] = set()
    if ds is not None and "explanation" in ds.schema.names:
        table = ds.to_table(columns=["clip_id"], filter="explanation IS NOT NULL")
        done = set(table.column("clip_id").to_pylist())
    todo = [c for c in clip_ids if c not in done]
    if not todo:
        return 0
    model = EmotionLLM.load(cfg.llm_run)
    rows: list[dict[str, str]] = []
    with track_progress(len(todo), "explaining", enabled=progress) as advance:
        for clip_id in todo:
            answer = ask(cfg.llm_run, clip_id, store, task="reason", model=model)["answer"]
            rows.append({"clip_id": clip_id, "explanation": _one_sentence(answer)})
            if len(rows) >= 16:
                store.upsert(name, pa.Table.from_pylist(rows))
                rows = []
            advance(1)
    if rows:
        store.upsert(name, pa.Table.from_pylist(rows))
    return len(todo)


def _one_sentence(text: str) -> str:
    text = " ".join((text or "").split())
    for stop in (". ", "! ", "? "):
        if stop in text:
            return text.split(stop, 1)[0] + stop.strip()
    return text


# ---------------------------------------------------------------------- errors
def _latest_errors(store: Store, uris: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Most recent error row (stage, encoder, message) per uri among ``uris``."""
    if not uris:
        return {}
    frame = store.errors()
    if frame.height == 0:
        return {}
    import polars as pl

    frame = frame.filter(pl.col("uri").is_in(list(uris))).sort("at", descending=True, nulls_last=True)
    out: dict[str, dict[str, Any]] = {}
    for row in frame.iter_rows(named=True):
        out.setdefault(row["uri"], {"stage": row["stage"], "encoder": row["encoder"], "message": row["message"]})
    return out


# ------------------------------------------------------------------------- output
def archive_frame(store: Store, files: Sequence[str], dataset_id: str):
    """Every file of the archives with its clip id, prediction and error (polars).

    Columns: path, clip_id, label, confidence, probs, prob_<label>..., explanation (when
    present), run_id, model_fingerprint, predicted_at, error (stage: message, for files
    without a prediction).
    """
    import polars as pl

    files = list(files)
    base = pl.DataFrame({"path": files}, schema={"path": pl.Utf8})
    clips = store.clips(columns=["clip_id", "uri"]).rename({"uri": "path"}).unique("path", keep="first")
    frame = base.join(clips, on="path", how="left")
    table = store.table(predictions_name(dataset_id))
    if table is not None:
        drop = [c for c in ("path", "media_sha256") if c in table.column_names]
        preds = pl.from_arrow(table.drop_columns(drop))
        frame = frame.join(preds, on="clip_id", how="left")
    errors = _latest_errors(store, files)
    labelled = frame["label"].to_list() if "label" in frame.columns else [None] * frame.height
    frame = frame.with_columns(pl.Series("error", [
        None if lab is not None or p not in errors
        else f"{errors[p]['stage']}: {errors[p]['message']}"
        for p, lab in zip(frame["path"].to_list(), labelled)
    ], dtype=pl.Utf8))
    return frame


def write_out(frame, out: str | Path) -> str:
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        frame.write_parquet(out)
    else:
        flat = frame.drop([c for c in frame.columns if str(frame.schema[c]).startswith("List")])
        flat.write_csv(out)
    return str(out)


# --------------------------------------------------------------------------- label
def label(
    archives: Sequence[str | Path],
    store: Store,
    run: str | Path,
    *,
    engine: str = "local",
    ray_address: str | None = None,
    out: str | Path | None = None,
    batch_size: int = 16,
    workers: int | str = "auto",
    device: str = "auto",
    name: str | None = None,
    llm_run: str | Path | None = None,
    explain: bool = False,
    ray_cpus: int | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    progress: bool = True,
) -> LabelReport:
    """Label every clip of ``archives`` with a trained head run; resumable and idempotent.

    Args:
        archives: folders (walked recursively) or media files.
        store: the store (created on first ingest).
        run: a head run directory (``emofs train head``).
        engine: ``local`` (extract in this process + spawned decoders) or ``ray``.
        ray_address: Ray cluster address (``ray://host:10001`` or ``auto``); default: a
            local Ray started for this job.
        out: CSV or Parquet file receiving every clip of the archives.
        batch_size: clips per encoder batch and per commit.
        workers: decoding processes (local engine): a count, or ``auto`` (see ``extract``).
        device: ``auto`` | ``cpu`` | ``cuda`` for the encoders.
        name: prediction dataset name (default: the run directory's name).
        llm_run / explain: an ``emofs llm train`` run adding a one-sentence reason per clip.
        ray_cpus: CPUs of a local Ray (default: all).
        actors: encoder actors of the Ray engine (default: one per GPU, else half the CPUs).
        gpus_per_actor: GPUs per encoder actor (Ray engine; 0.5: two actors per GPU).
        progress: show progress bars.

    Returns:
        A :class:`LabelReport` (label counts, errors, clips/s).

    Raises:
        InputError: bad flags, a run whose features cannot be re-extracted, or an encoder
            that no longer matches the run's features.
    """
    from heads.predict import load_run

    from extractors.ingest import ingest

    started = time.perf_counter()
    cfg = LabelConfig(run, engine, ray_address, out, batch_size, workers, device, name, llm_run,
                      explain, ray_cpus, actors, gpus_per_actor)
    store.check_writable()  # a read-only store fails here, before anything is decoded
    loaded = load_run(cfg.run)
    plan = _feature_plan(loaded)
    dataset_id = cfg.name or loaded.run_id
    report = LabelReport(run_id=loaded.run_id, dataset=predictions_name(dataset_id), engine=cfg.engine)

    files = archive_files(archives)
    report.files = len(files)
    ingested = ingest(archives, store, progress=progress, batch_size=max(cfg.batch_size, 64))
    report.ingest = {k: ingested.as_dict()[k] for k in ("new", "updated", "unchanged")}
    report.timings["ingest_s"] = time.perf_counter() - started

    clips = archive_clips(store, files)
    report.clips = clips.height
    ids = clips["clip_id"].to_list()
    shas = dict(zip(ids, clips["sha256"].to_list()))
    uris = dict(zip(ids, clips["uri"].to_list()))
    stored = _stored_predictions(store, report.dataset)
    todo = [c for c in ids if stored.get(c) != (loaded.model_fingerprint, shas[c])]
    report.already_labelled = len(ids) - len(todo)
    # Clips whose media changed since they were labelled lost their features at ingest.
    t0 = time.perf_counter()
    missing = sorted(set(todo) - ready_clips(store, plan, set(todo)))
    if missing:
        if cfg.engine == "ray":
            from extractors.ray_engine import extract_ray

            done = extract_ray(store, plan, missing, batch_size=cfg.batch_size, device=cfg.device,
                               options=cfg.ray, progress=progress)
        else:
            done = extract_local(store, plan, missing, cfg, progress)
        _check_fingerprints(plan, done["fingerprints"], cfg.run)
        report.extracted = done["extracted"]
    report.timings["extract_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # A run over several feature sets labels a clip from the sets it has (audio-only and
    # video-only clips too); a --require-all (or older) run needs every one.
    ready_set = ready_clips(store, plan, set(todo), require_all=loaded.config.require_all)
    ready = [c for c in todo if c in ready_set]
    if ready:
        # --normalize runs: each group's statistics over the whole archive, not per chunk
        loaded = _pin_group_stats(store, loaded, sorted(ready_clips(store, plan, set(ids))))
        counts = _predict(store, loaded, dataset_id, ready, shas, uris, progress)
        report.labelled = sum(counts.values())
    report.timings["predict_s"] = time.perf_counter() - t0

    if cfg.explain:
        t0 = time.perf_counter()
        report.explained = _explain(store, cfg, dataset_id, ids, progress)
        report.timings["explain_s"] = time.perf_counter() - t0

    frame = archive_frame(store, files, dataset_id)
    unlabelled = set(todo) - set(ready)
    _record_unlabelled(store, plan, clips, unlabelled, frame, require_all=loaded.config.require_all)
    frame = archive_frame(store, files, dataset_id) if unlabelled else frame
    if "label" in frame.columns:
        counts = frame.filter(frame["label"].is_not_null()).group_by("label").len().sort("len", descending=True)
        report.label_counts = dict(counts.iter_rows())
    failed = frame.filter(frame["error"].is_not_null())
    report.errors = [{"path": p, "clip_id": c, "error": e} for p, c, e in
                     zip(failed["path"].to_list(), failed["clip_id"].to_list(), failed["error"].to_list())]
    if cfg.out is not None:
        report.out = write_out(frame, cfg.out)
    report.seconds = time.perf_counter() - started
    return report


def _record_unlabelled(store: Store, plan, clips, unlabelled: set[str], frame, *, require_all: bool = True) -> None:
    """An errors row for clips that got no prediction and have no error explaining why."""
    if not unlabelled:
        return
    have_error = set(frame.filter(frame["error"].is_not_null())["clip_id"].drop_nulls().to_list())
    now = datetime.now(timezone.utc)
    rows = []
    for row in clips.filter(clips["clip_id"].is_in(sorted(unlabelled))).iter_rows(named=True):
        if row["clip_id"] in have_error:
            continue
        kinds = [k for k in dict.fromkeys(e["spec"].get("modality") for e in plan) if k in ("audio", "video")]
        lacking = [k for k in kinds if not row.get(f"has_{k}")]
        if require_all:
            reason = f"the clip has no {lacking[0]}" if lacking else "a feature set is missing"
            needs = f"the run needs {', '.join(e['name'] for e in plan)}"
        else:
            reason = (f"the clip has no {' and no '.join(lacking)}" if lacking and len(lacking) == len(kinds)
                      else "no feature set could be extracted")
            needs = f"the run needs one of {', '.join(e['name'] for e in plan)}"
        rows.append({"clip_id": row["clip_id"], "uri": row["uri"], "stage": "label", "encoder": None,
                     "message": f"not labelled: {reason} ({needs})", "at": now})
    if rows:
        store.record_errors(rows)
        log.warning(f"{len(rows)} clips could not be labelled: see `emofs errors --where \"stage = 'label'\"`")
