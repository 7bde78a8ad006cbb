"""`emofs extract`: every clip decoded once, all requested encoders batched, upserted per batch.

Flow::

    clips.lance ──plan (fingerprints)──▶ jobs ──spawn workers (workers.py, prepare.py):
        decode once + faces + peak + per-encoder inputs + in-worker encoders (egemaps)──▶
        main process: batches of clips ──▶ each neural encoder (autocast on GPU) ──▶
        features/<name>.lance (merge_insert on clip_id) + clip rows + errors.lance

A rerun skips clips whose row already carries the encoder's spec fingerprint; a killed run
loses at most the batch in flight; a clip that fails to decode or crashes an encoder
becomes an ``errors.lance`` row and the run goes on.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore import Store
from featurestore.progress import track_progress
from featurestore.errors import InputError, MissingFeatureSetError, StoreError, StoreNotFoundError
from featurestore.features import feature_spec, spec_fingerprint, up_to_date_clip_ids, write_features
from featurestore.schema import features_name
from featurestore.store import sql_quote

from .media import MediaConfig
from .prepare import Job, chunked_outputs, encoder_outputs, finite_output, need_key, prepare_clip
from .registry import EncoderRef, load_encoders, parse_ref
from .specs import applies, group_by_settings, rebuild_encoder
from .workers import cores, parse_workers, prepared, resolve_workers

log = logging.getLogger(__name__)

__all__ = ["ExtractConfig", "ExtractReport", "EncoderReport", "BatchWriter", "extract",
           "extract_config", "plan_extraction", "PLAN_COLUMNS",
           "extract_file", "prepare_clip", "Job", "load_encoders", "pool_size",
           "estimated_prep_s", "POOL_PAYS_OFF_S"]

_DTYPES = ("float16", "float32")


@dataclass
class ExtractConfig:
    """Validated options of one extraction run (flag names in the messages).

    ``encoders`` may be given as references (``"hubert:tiny"``), a comma-separated string
    or :class:`~extractors.registry.EncoderRef`; it holds parsed ``EncoderRef`` after
    construction (each reference is parsed here, once).
    """

    encoders: list[EncoderRef]
    device: str = "auto"
    batch_size: int = 16
    workers: int | str = "auto"
    dtype: str = "float16"
    tokens: dict[str, int] = field(default_factory=dict)
    media: MediaConfig = field(default_factory=MediaConfig)
    #: Named encoder settings per encoder (``{"hubert": {"pooling": "mertools"}}``).
    encoder_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.encoders, str):
            self.encoders = self.encoders.split(",")
        self.encoders = [parse_ref(e) for e in self.encoders if isinstance(e, EncoderRef) or e.strip()]
        if not self.encoders:
            raise InputError("--encoders is empty: name at least one (see `emofs encoders`)")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1 (got {self.batch_size})")
        self.workers = parse_workers(self.workers)
        if self.dtype not in _DTYPES:
            raise InputError(f"--dtype must be float16 or float32 (got {self.dtype!r})")
        for name, value in self.tokens.items():
            if not isinstance(value, int) or value < 1:
                raise InputError(f"--tokens {name}={value!r}: must be a positive integer")


@dataclass
class EncoderReport:
    """Per-encoder counts of one run."""

    spec_fingerprint: str = ""
    extracted: int = 0
    up_to_date: int = 0
    not_applicable: int = 0
    failed: int = 0


@dataclass
class ExtractReport:
    """What an extraction run did (the CLI prints it as the summary)."""

    clips: int = 0
    decoded: int = 0
    decode_errors: int = 0
    encoders: dict[str, EncoderReport] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    workers: int = 0
    waiting_s: float = 0.0  # main process waiting for decoded clips
    encoding_s: float = 0.0  # main process running encoders and writing
    in_worker: list[str] = field(default_factory=list)  # encoders run in the decoding processes
    main_encoders: bool = True  # whether any encoder runs in the main process

    @property
    def clips_per_s(self) -> float:
        return self.decoded / self.seconds if self.seconds else 0.0

    @property
    def bottleneck(self) -> str | None:
        """What limited the run, with what would help (None for short or balanced runs)."""
        busy = self.waiting_s + self.encoding_s
        if busy < 5.0 or self.workers == 0:
            return None
        if self.waiting_s > 0.6 * busy:
            more = (f"more --workers would help ({cores()} cores)" if self.workers < cores()
                    else "more CPU cores would help")
            if not self.main_encoders:  # every encoder runs beside the decoding: say so
                return (f"decoding and {', '.join(self.in_worker)} in {self.workers} worker process(es): "
                        f"the main process only wrote results ({self.encoding_s:.0f}s); {more}")
            return f"decoding: the encoders waited {self.waiting_s:.0f}s for clips; {more}"
        if self.encoding_s > 0.75 * busy:
            hint = "a GPU (--device cuda) would help" if self.device == "cpu" else "a larger --batch-size may help"
            return f"encoders: {self.encoding_s:.0f}s encoding and writing, decoders kept up; {hint}"
        return None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "clips": self.clips,
            "decoded": self.decoded,
            "decode_errors": self.decode_errors,
            "encoders": {k: vars(v) for k, v in self.encoders.items()},
            "errors": [{k: v for k, v in e.items() if k != "at"} for e in self.errors[:20]],
            "seconds": round(self.seconds, 3),
            "clips_per_s": round(self.clips_per_s, 2),
            "device": self.device,
            "workers": self.workers,
            "waiting_s": round(self.waiting_s, 3),
            "encoding_s": round(self.encoding_s, 3),
            "bottleneck": self.bottleneck,
        }


def _main_threads(device: str, workers: int, main_encoders: bool = True) -> int | None:
    """Torch threads for the main process on CPU: the cores the decoding workers leave.

    Without this, torch's spinning worker threads compete with the decoders for the same
    cores (8% slower end to end on 2 cores). None keeps torch's default (GPU runs, and
    runs whose encoders all run in the workers: the main process then never imports torch).
    """
    if device != "cpu" or workers == 0 or not main_encoders:
        return None
    return max(1, cores() - workers)


#: Seconds of preparation (decode + in-worker encoders) below which a job runs in this
#: process: a spawned worker takes about a second to start (Python, cv2, openSMILE).
POOL_PAYS_OFF_S = 3.0
#: Rough preparation cost per second of media: audio only (decode, resample, openSMILE),
#: and with video (decode, sampling, faces, peak frame).
_PREP_S_PER_MEDIA_S = {"audio": 0.04, "video": 0.4}


def estimated_prep_s(jobs: list[Job], durations: dict[str, float | None]) -> float:
    """Rough seconds of preparation work of ``jobs`` (unknown durations count as 5 s)."""
    total = 0.0
    for job in jobs:
        rate = _PREP_S_PER_MEDIA_S["video" if job.decode_video else "audio"]
        total += 0.02 + rate * (durations.get(job.clip_id) or 5.0)
    return total


def pool_size(workers: int | str, device: str, jobs: list[Job], durations: dict[str, float | None]) -> int:
    """Decoding processes for a job: ``--workers`` as given; ``auto`` sizes the pool from the
    job: none (decode in this process) when the work is under :data:`POOL_PAYS_OFF_S`, else
    :func:`resolve_workers`' count, at most one per clip."""
    if workers == "auto" and estimated_prep_s(jobs, durations) < POOL_PAYS_OFF_S:
        return 0
    return min(resolve_workers(workers, device), len(jobs))


def _run_device(cfg: ExtractConfig) -> str:
    """The run's device; ``auto`` is ``cpu`` without importing torch (1-2 s) when every
    encoder runs in the decoding processes (openSMILE: CPU only)."""
    from .encoders.base import resolve_device
    from .registry import encoder_class

    if cfg.device == "auto":
        try:
            if all(getattr(encoder_class(ref.name), "in_worker", False) for ref in cfg.encoders):
                return "cpu"
        except InputError:  # an unknown encoder: load_encoders names it
            pass
    return resolve_device(cfg.device)


# ------------------------------------------------------------------------ extract
def extract(
    store: Store,
    encoders: list[str | EncoderRef] | str,
    *,
    where: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    workers: int | str = "auto",
    dtype: str = "float16",
    tokens: dict[str, int] | None = None,
    progress: bool = True,
    media: MediaConfig | None = None,
    encoder_options: dict[str, dict[str, Any]] | None = None,
) -> ExtractReport:
    """Extract features of every clip (matching ``where``) with every encoder in ``encoders``.

    Args:
        store: the store (must hold clips).
        encoders: references ``NAME[:WEIGHTS]`` (list, parsed :class:`EncoderRef` or a
            comma-separated string).
        where: SQL filter on clip columns.
        device: ``auto`` | ``cpu`` | ``cuda``.
        batch_size: clips per encoder batch and per commit.
        workers: decoding processes (spawn); 0 decodes in the main process; ``auto`` one
            per core on CPU, all but one with a GPU (at most 16).
        dtype: stored float type, ``float16`` or ``float32``.
        tokens: token counts per encoder, e.g. ``{"eva": 64, "hubert": 32}``.
        progress: show a progress bar.
        media: decoding settings (part of every spec).
        encoder_options: named settings per encoder, e.g. ``{"hubert": {"pooling":
            "mertools"}}`` (a recipe: :mod:`extractors.recipes`).

    Returns:
        An :class:`ExtractReport`.

    Raises:
        InputError: bad flags, unknown encoders, unavailable weights (before decoding).
        StoreNotFoundError: the store holds no clips.
        StoreError: the store is not writable (before decoding).
    """
    started = time.perf_counter()
    cfg = extract_config(store, encoders, device=device, batch_size=batch_size, workers=workers,
                         dtype=dtype, tokens=tokens, media=media, encoder_options=encoder_options)
    dev = _run_device(cfg)
    loaded = load_encoders(cfg.encoders, dev, cfg.tokens, cfg.encoder_options)
    report = ExtractReport(device=dev)
    specs = {e.name: e.spec(cfg.dtype, cfg.media) for e in loaded}
    fingerprints = {n: spec_fingerprint(s) for n, s in specs.items()}

    rows = store.clips(where=where, columns=PLAN_COLUMNS).to_dicts()
    report.clips = len(rows)
    todo = plan_extraction(store, [(e.name, e.modality, fingerprints[e.name]) for e in loaded], rows, report)
    by_name = {e.name: e for e in loaded}
    jobs = []
    for row in rows:
        names = tuple(todo[row["clip_id"]])
        if names:
            needs = tuple(dict.fromkeys(by_name[n].need for n in names))
            jobs.append(Job(row["clip_id"], row["uri"], row.get("subtitle"), needs, names))

    writer = BatchWriter(store, loaded, specs, cfg, report)
    batch: list[dict[str, Any]] = []
    report.workers = workers = pool_size(cfg.workers, dev, jobs, {r["clip_id"]: r.get("duration_s") for r in rows})
    items = prepared(jobs, cfg.media, workers, prefetch=2 * cfg.batch_size, worker_encoders=loaded)
    main_encoders = report.main_encoders = any(not e.in_worker for e in loaded)
    report.in_worker = [e.name for e in loaded if e.in_worker]
    ahead = dev == "cpu" and main_encoders  # encode every CPU_FORWARD_CLIPS clips as they come
    with closing(items), _torch_threads(_main_threads(dev, workers, main_encoders)), \
            track_progress(len(jobs), "extracting", enabled=progress) as advance:
        while True:
            waited = time.perf_counter()
            item = next(items, None)
            report.waiting_s += time.perf_counter() - waited
            if item is not None:
                batch.append(item)
            full = item is None or len(batch) >= cfg.batch_size
            encoding = time.perf_counter()
            if ahead and not full and len(batch) % CPU_FORWARD_CLIPS == 0:
                writer.encode_ahead(batch[-CPU_FORWARD_CLIPS:])
            if batch and full:
                writer.flush(batch)  # encodes the clips not encoded ahead, commits the batch
                advance(len(batch))
                batch = []
            report.encoding_s += time.perf_counter() - encoding
            if item is None:
                break
    report.seconds = time.perf_counter() - started
    return report


def extract_config(store: Store, encoders: list[str | EncoderRef] | str, *, device: str = "auto",
                   batch_size: int = 16, workers: int | str = "auto", dtype: str = "float16",
                   tokens: dict[str, int] | None = None, media: MediaConfig | None = None,
                   encoder_options: dict[str, dict[str, Any]] | None = None) -> ExtractConfig:
    """The checked :class:`ExtractConfig` of a job on ``store``, whichever engine runs it.

    Raises:
        InputError: bad flags or encoder references.
        StoreNotFoundError: the store holds no clips.
        StoreError: the store is not writable (checked before any encoder loads or media
            decodes).
    """
    cfg = ExtractConfig(list(encoders) if not isinstance(encoders, str) else encoders, device,
                        batch_size, workers, dtype, dict(tokens or {}), media or MediaConfig(),
                        dict(encoder_options or {}))
    if not store.exists():
        raise StoreNotFoundError(f"no clips in {store.uri}: run `emofs ingest PATH --store {store.uri}` first")
    store.check_writable()
    return cfg


#: Clip columns the plan and the decoding need.
PLAN_COLUMNS = ["clip_id", "uri", "has_audio", "has_video", "has_media", "subtitle", "duration_s"]


def plan_extraction(store: Store, feature_sets: list[tuple[str, str, str]], rows: list[dict[str, Any]],
                    report: ExtractReport) -> dict[str, list[str]]:
    """Per clip, the feature sets still to extract (the same plan for every engine).

    Args:
        store: the store.
        feature_sets: ``(name, modality, spec fingerprint)`` of each encoder of the job.
        rows: clip rows with :data:`PLAN_COLUMNS`.
        report: gets one :class:`EncoderReport` per feature set, counting clips up to date
            (same fingerprint) and not applicable (modality missing).

    Returns:
        ``{clip_id: [feature set, ...]}`` for every row (an empty list: nothing to do).
    """
    todo: dict[str, list[str]] = {r["clip_id"]: [] for r in rows}
    for name, modality, fingerprint in feature_sets:
        counts = report.encoders[name] = EncoderReport(spec_fingerprint=fingerprint)
        done = up_to_date_clip_ids(store, name, fingerprint)
        for row in rows:
            if not applies(modality, row):
                counts.not_applicable += 1
            elif row["clip_id"] in done:
                counts.up_to_date += 1
            else:
                todo[row["clip_id"]].append(name)
    return todo


@contextmanager
def _torch_threads(threads: int | None):
    """Run the block with ``threads`` torch intra-op threads (None: unchanged)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: Clips and input bytes per encoder forward on CPU (:meth:`BatchWriter._outputs`; 1 face clip).
CPU_FORWARD_CLIPS = 4
CPU_FORWARD_BYTES = 4 << 20


class BatchWriter:
    """Runs every encoder over one batch of prepared clips and commits the results.

    Args:
        store: the store written to.
        encoders: the loaded encoders.
        specs: ``{encoder name: spec}`` (:meth:`Encoder.spec`) written with the rows.
        cfg: the run's options (``dtype``).
        report: counts and errors are added to it.
    """

    def __init__(self, store: Store, encoders: list, specs: dict, cfg: ExtractConfig,
                 report: ExtractReport):
        self.store, self.encoders, self.specs, self.cfg, self.report = store, encoders, specs, cfg, report

    def flush(self, batch: list[dict[str, Any]]) -> None:
        """Encode one batch of prepared clips (:func:`prepare_clip` results) and commit it."""
        now = datetime.now(timezone.utc)
        errors: list[dict[str, Any]] = []
        ok = []
        for item in batch:
            if item["error"] is not None:
                self.report.decode_errors += 1
                errors.append({"clip_id": item["clip_id"], "uri": item["uri"] or item["clip_id"],
                               "stage": "decode", "encoder": None, "message": item["error"], "at": now})
                for name in item["todo"]:
                    self.report.encoders[name].failed += 1
            else:
                ok.append(item)
        self.report.decoded += len(ok)
        for enc in self.encoders:
            items = [it for it in ok if enc.name in it["todo"]]
            if items:
                self._encode(enc, items, errors, now)
        clip_rows = [it for it in ok if it["peak_frame"] is not None]
        if clip_rows:
            self.store.upsert_clips(pa.table({
                "clip_id": pa.array([it["clip_id"] for it in clip_rows], pa.string()),
                "peak_frame": pa.array([it["peak_frame"] for it in clip_rows], pa.int32()),
                "face_ratio": pa.array([it["face_ratio"] for it in clip_rows], pa.float32()),
                "face_detector": pa.array([it.get("face_detector") for it in clip_rows], pa.string()),
                "face_confidence": pa.array([it.get("face_confidence") for it in clip_rows], pa.float32()),
            }))
        decoded_uris = [it["uri"] for it in ok if it["uri"]]
        if decoded_uris:
            self.store.clear_errors("decode", decoded_uris)
        if errors:
            self.store.record_errors(errors)
            self.report.errors.extend(errors)
            for err in errors:
                log.warning(f"{err['stage']} failed for {err['clip_id']}"
                     f"{' (' + err['encoder'] + ')' if err['encoder'] else ''}: {err['message']}")

    def _outputs(self, enc, items) -> list:
        """:func:`encoder_outputs` over ``items``; on CPU in forwards of at most :data:`CPU_FORWARD_CLIPS`
        clips and :data:`CPU_FORWARD_BYTES` of input (one face clip: ~14 MB of floats and activations;
        16 hold 150 MB of frames alone): a CPU runs no faster for the larger batch."""
        if self.report.device != "cpu" or enc.in_worker:
            return encoder_outputs(enc, items, self.cfg.dtype)
        return chunked_outputs(enc, items, CPU_FORWARD_CLIPS, CPU_FORWARD_BYTES, self.cfg.dtype)

    def encode_ahead(self, items: list[dict[str, Any]]) -> None:
        """(CPU) Run the main-process encoders over ``items`` now, keep the results in ``encoded``
        (:meth:`flush` takes them as in-worker ones) and drop the inputs (~2.7 MB a video clip)."""
        for enc in self.encoders:
            todo = [it for it in items if it["error"] is None and enc.name in it["todo"]
                    and enc.name not in it["encoded"]]
            for it, out in zip(todo, self._outputs(enc, todo)):
                it["encoded"][enc.name] = out
        for it in items:
            if all(name in it["encoded"] for name in it["todo"]):
                it["inputs"] = {}

    def _encode(self, enc, items, errors, now) -> None:
        good_ids, vectors, tokens, uris = [], [], [], []
        rep = self.report.encoders[enc.name]
        for it, out in zip(items, self._outputs(enc, items)):
            if isinstance(out, str):
                errors.append({"clip_id": it["clip_id"], "uri": it["uri"] or it["clip_id"],
                               "stage": "encode", "encoder": enc.name, "message": out[:500],
                               "at": now})
                rep.failed += 1
                continue
            good_ids.append(it["clip_id"])
            vectors.append(out.vector)
            tokens.append(out.tokens)
            uris.append(it["uri"] or it["clip_id"])
        if not good_ids:
            return
        has_tokens = enc.token_dim is not None
        write_features(self.store, enc.name, good_ids, np.stack(vectors), self.specs[enc.name],
                       dtype=self.cfg.dtype, tokens=tokens if has_tokens else None)
        self.store.clear_errors("encode", uris, encoder=enc.name)
        rep.extracted += len(good_ids)


# ------------------------------------------------------------------- one new file
def extract_file(
    path: str | Path,
    feature_sets: list[str],
    store: Store,
    *,
    add: bool = False,
    device: str = "auto",
    subtitle: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Features of one media file, with the same specs as the store's feature sets.

    Each encoder is rebuilt from its stored spec (reference, token options, dtype). With
    ``add=True`` the file is ingested into the store and its features are stored too.

    Args:
        path: a media file.
        feature_sets: names of existing feature sets (e.g. ``["hubert", "eva"]``).
        store: the store whose specs to follow.
        add: also ingest the file and upsert its feature rows.
        device: ``auto`` | ``cpu`` | ``cuda``.
        subtitle: text for the ``text`` encoder (a new file has none otherwise).

    Returns:
        ``{name: {"vector": (D,) float32, "tokens": (T, Dt) float32 or None}}`` for every set
        that applies to the file's modality (the others are left out with a warning).

    Raises:
        MissingFeatureSetError: a feature set does not exist (a :class:`StoreError`, as is
        a set not written by ``emofs extract``). InputError: unreadable file, the encoder
        rebuilt from the spec no longer matches it (weights changed), or NaN/inf output.
    """
    from .encoders.base import resolve_device
    from .probe import ProbeError, probe

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError(f"{path} is not a file: pass a media file")
    specs = {}
    for name in feature_sets:
        spec = feature_spec(store, name)
        if spec is None:
            raise MissingFeatureSetError.of(store, name)
        if "ref" not in spec:
            raise StoreError(f"feature set {name!r} was not written by `emofs extract` (no encoder "
                             "reference in its spec): re-extract it")
        specs[name] = spec
    dev = resolve_device(device)
    if add:
        return _extract_added(path, specs, store, dev, subtitle)

    try:
        facts = probe(path)
    except ProbeError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    row = {"has_audio": facts["has_audio"], "has_video": facts["has_video"], "has_media": True,
           "subtitle": subtitle}
    encoders, media = _rebuild(specs, dev)
    applicable = [e for e in encoders if applies(e.modality, row)]
    for e in encoders:
        if e not in applicable:
            why = facts["modality"] + (", no subtitle" if e.modality == "text" else "")
            log.warning(f"feature set {e.name!r} does not apply to {path.name} ({why}); left out")
    if not applicable:
        return {}
    needs = tuple(dict.fromkeys(e.need for e in applicable))
    item = prepare_clip(Job(str(path), str(path), subtitle, needs, tuple(e.name for e in applicable)), media)
    if item["error"]:
        raise InputError(f"cannot decode {path}: {item['error']}")
    out = {}
    for enc in applicable:
        encoded = enc.encode([item["inputs"][need_key(enc.need)]])[0]
        np_dtype = np.float16 if specs[enc.name]["dtype"] == "float16" else np.float32
        if not finite_output(encoded, np_dtype):
            raise InputError(f"{enc.name} gives NaN or inf for {path.name}: it cannot be compared")
        tokens = None if encoded.tokens is None else encoded.tokens.astype(np_dtype).astype(np.float32)
        out[enc.name] = {"vector": encoded.vector.astype(np_dtype).astype(np.float32), "tokens": tokens}
    return out


def _rebuild(specs: dict[str, dict], device: str):
    """Encoders rebuilt from stored specs (checked against them) + the media config."""
    medias = {g.media for g in group_by_settings(specs) if g.media is not None}
    if len(medias) > 1:
        raise InputError("the feature sets were decoded with different media settings: "
                         "extract them one at a time")
    encoders = [rebuild_encoder(name, spec, device)[0] for name, spec in specs.items()]
    return encoders, next(iter(medias), MediaConfig())


def _extract_added(path: Path, specs: dict[str, dict], store: Store, device: str,
                   subtitle: str | None) -> dict[str, dict[str, Any]]:
    from .ingest import ingest

    ingest([path], store, progress=False)
    clip = store.clips(where=f"uri = {sql_quote(str(path))}", columns=["clip_id", "subtitle"])
    if clip.height != 1:
        raise InputError(f"cannot ingest {path}: see `emofs errors --where \"stage = 'ingest'\"`")
    clip_id = clip["clip_id"][0]
    if subtitle is not None and clip["subtitle"][0] != subtitle:
        store.upsert_clips(pa.table({"clip_id": [clip_id], "subtitle": [subtitle]}))
    for group in group_by_settings(specs):
        extract(store, list(group.refs), where=f"clip_id = {sql_quote(clip_id)}", device=device,
                workers=0, dtype=group.dtype, encoder_options=group.options, progress=False,
                media=group.media)
    out = {}
    for name in specs:
        table = store.table(features_name(name), where=f"clip_id = {sql_quote(clip_id)}")
        if table is None or table.num_rows == 0:
            log.warning(f"feature set {name!r} does not apply to {path.name}; left out")
            continue
        row = table.slice(0, 1)
        vector = np.asarray(row.column("vector")[0].as_py(), np.float32)
        tokens = None
        if "tokens" in row.column_names and row.column("tokens")[0].is_valid:
            tokens = np.asarray(row.column("tokens")[0].as_py(), np.float32)
        out[name] = {"vector": vector, "tokens": tokens}
    return out
