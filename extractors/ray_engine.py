"""The Ray Data engine of ``emofs extract --engine ray`` and ``emofs label --engine ray``.

Pipeline::

    clip list ──map_batches(decode + preprocess, CPU tasks)──▶ prepared inputs
        ──map_batches(_EncoderActor: a pool of --actors callable-class actors, each of
          --gpus-per-actor GPUs (default 1) where GPUs exist, else one CPU)──▶
        each actor batch writes one uncommitted Lance fragment per encoder
        (featurestore.fragments.write_fragments) and returns its metadata
        ──driver: every commit_every clips, one atomic commit per feature set
        (featurestore.fragments.commit_fragments: new fragments + deletion of older rows of
        the same clip ids in one Lance transaction)

Idempotence: the driver plans from committed state (clips lacking the run's fingerprint),
every clip appears in exactly one fragment, and the commit that makes a fragment visible
also deletes any older row of its clips. A job killed before a commit leaves unreferenced
files only (invisible; ``lance`` ``cleanup_old_versions`` reclaims them); killed after, the
clips are done. A rerun therefore never shows a clip twice. The store may be a local
directory (one machine, or a shared file system) or an object-store URI that every worker
can reach (``s3://bucket/store``).
"""

from __future__ import annotations

import logging
import json
import pickle
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from featurestore.progress import track_progress
from featurestore.errors import EmofsError, InputError
from featurestore.store import Store

log = logging.getLogger(__name__)

__all__ = ["extract_ray", "init_ray", "RayOptions", "ActorPool", "actor_pool", "ENGINES"]

#: Execution engines of ``extract`` and ``label``.
ENGINES = ("local", "ray")


# ------------------------------------------------------------------------ options
@dataclass(frozen=True)
class RayOptions:
    """Validated Ray flags of ``extract`` / ``label`` (flag names in the messages).

    Attributes:
        address: Ray cluster (``ray://HEAD:10001`` or ``auto``); None starts a local Ray.
        actors: encoder actor pool size (None: one per GPU, else half the cluster's CPUs).
        gpus_per_actor: GPUs each encoder actor reserves; a fraction below 1 packs several
            actors on one GPU (0.5: two per GPU). None: 1 where the cluster has GPUs.
        num_cpus: CPUs of a local Ray (None: all).
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    num_cpus: int | None = None

    def __post_init__(self):
        if self.actors is not None and self.actors < 1:
            raise InputError(f"--actors must be >= 1 (got {self.actors})")
        g = self.gpus_per_actor
        if g is not None and (g <= 0 or (g > 1 and g != int(g))):
            raise InputError(f"--gpus-per-actor must be a fraction in (0, 1] (0.5: two actors per GPU) "
                             f"or a whole number of GPUs (got {g:g})")

    @classmethod
    def of(cls, engine: str, device: str = "auto", **flags: Any) -> "RayOptions | None":
        """The options of ``engine`` (None for ``local``), checking flags that need Ray.

        Raises:
            InputError: an unknown engine, a Ray flag without ``--engine ray``, or
                ``--gpus-per-actor`` with ``--device cpu``.
        """
        if engine not in ENGINES:
            raise InputError(f"--engine must be one of {', '.join(ENGINES)} (got {engine!r})")
        if engine != "ray":
            for key, flag in (("address", "--ray-address"), ("actors", "--actors"),
                              ("gpus_per_actor", "--gpus-per-actor")):
                if flags.get(key) is not None:
                    raise InputError(f"{flag} needs --engine ray")
            return None
        if flags.get("gpus_per_actor") is not None and device == "cpu":
            raise InputError("--gpus-per-actor puts encoder actors on GPUs: drop --device cpu or --gpus-per-actor")
        return cls(**flags)


@dataclass(frozen=True)
class ActorPool:
    """How the encoder actors run: ``actors`` of ``num_gpus`` GPUs (0: one CPU) each."""

    actors: int
    num_gpus: float
    device: str


def actor_pool(resources: Mapping[str, float], device: str, options: RayOptions) -> ActorPool:
    """Size the encoder actor pool from the cluster's resources and the Ray flags.

    GPU actors when the cluster has GPUs (and ``device`` is not ``cpu``): ``gpus_per_actor``
    each (default 1), as many as fit unless ``--actors`` says fewer. CPU actors otherwise:
    one CPU each, ``--actors`` or half the CPUs, leaving at least one CPU for decoding.

    Raises:
        InputError: ``--gpus-per-actor`` on a cluster without GPUs, or more actors than
            the cluster's GPUs / CPUs hold (Ray would wait for them forever).
    """
    gpus = float(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    per = options.gpus_per_actor
    if per is not None and not gpus:
        raise InputError(f"--gpus-per-actor {per:g}: no GPU in the Ray cluster ({cpus} CPUs, 0 GPUs): "
                         "drop --gpus-per-actor to encode on CPU actors, or add GPU nodes")
    if gpus and device != "cpu":
        per = per or 1.0
        fit = int(gpus / per + 1e-9)
        actors = options.actors or max(fit, 1)
        if actors > fit:
            raise InputError(f"--actors {actors} x --gpus-per-actor {per:g} needs {actors * per:g} GPUs, "
                             f"the Ray cluster has {gpus:g}: lower --actors or --gpus-per-actor")
        return ActorPool(actors, per, "cuda" if device == "auto" else device)
    fit = max(1, cpus - 1)  # one CPU left for the decode tasks
    actors = options.actors or max(1, cpus // 2)
    if actors > fit:
        raise InputError(f"--actors {actors}: the Ray cluster has {cpus} CPUs and no GPU; CPU encoder "
                         f"actors must leave one CPU for decoding: pass --actors {fit} or fewer")
    return ActorPool(actors, 0.0, "cpu")


# ----------------------------------------------------------------------- ray setup
def init_ray(address: str | None = None, num_cpus: int | None = None,
             ship: Sequence[str] = ()) -> bool:
    """Connect to ``address`` or start a local Ray; returns True when this call started it.

    An already initialised Ray (e.g. ``ray.init(num_cpus=2)`` by the caller) is reused.
    ``ship`` names further packages (beside featurestore and extractors) that cluster
    workers need, e.g. ``("heads",)`` for labelling.
    """
    try:
        import ray
    except ImportError as exc:
        raise InputError('--engine ray needs Ray Data: pip install "ray[data]>=2.40"') from exc
    if ray.is_initialized():
        return False
    import logging

    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False,
                              "configure_logging": True}
    if address:
        import importlib
        from pathlib import Path

        # Ship emofs' own packages to cluster workers (they need only its dependencies).
        packages = ("featurestore", "extractors", *ship)
        modules = [str(Path(importlib.import_module(p).__file__).parent) for p in packages]
        try:
            ray.init(address=address, runtime_env={"py_modules": modules}, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot connect to Ray at {address} ({exc}): check --ray-address "
                             "(ray://HEAD:10001, or auto on a cluster node)") from exc
    else:
        ray.init(address="local", num_cpus=num_cpus, **kwargs)  # never join a stray cluster
    return True


# --------------------------------------------------------------------- stage: decode
def _decode_batch(batch: dict[str, np.ndarray], media: dict | None, needs: dict[str, dict],
                  in_task: tuple) -> dict[str, list]:
    """Decode each clip once, compute its encoders' inputs and run the ``in_worker``
    encoders (``in_task``: :func:`~extractors.prepare.in_worker_refs`) on it (CPU task)."""
    from .encoders.base import Need
    from .media import MediaConfig
    from .prepare import Job, built_in_this_process, prepare_clip

    in_task_encoders = built_in_this_process(tuple(in_task))
    config = MediaConfig(**media) if media else MediaConfig()
    out: dict[str, list] = {k: [] for k in ("clip_id", "uri", "todo", "error", "peak_frame",
                                            "face_ratio", "face_detector", "face_confidence", "inputs")}
    for clip_id, uri, subtitle, todo in zip(batch["clip_id"], batch["uri"], batch["subtitle"], batch["todo"]):
        names = tuple(json.loads(todo))
        job_needs = tuple(dict.fromkeys(Need(**needs[n]) for n in names))
        item = prepare_clip(Job(str(clip_id), str(uri), subtitle, job_needs, names), config,
                            in_task_encoders)
        out["clip_id"].append(item["clip_id"])
        out["uri"].append(item["uri"])
        out["todo"].append(todo)
        out["error"].append(item["error"] or "")  # "" = decoded (None would become NaN)
        out["peak_frame"].append(item["peak_frame"])
        out["face_ratio"].append(item["face_ratio"])
        out["face_detector"].append(item.get("face_detector") or "")  # "": no face search
        confidence = item.get("face_confidence")
        out["face_confidence"].append(float("nan") if confidence is None else confidence)
        payload = {"inputs": item["inputs"], "encoded": item["encoded"]}
        out["inputs"].append(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    return out


# -------------------------------------------------------------------- stage: encode
class _EncoderActor:
    """Holds every encoder of the plan (loaded once per actor); writes fragments per batch."""

    def __init__(self, plan: list[dict[str, Any]], device: str, store_uri: str):
        from featurestore.features import feature_schema
        from featurestore.schema import dataset_uri, features_name

        from .encoders.base import resolve_device
        from .specs import rebuild_encoder

        dev = resolve_device(device)
        self.store_uri = store_uri
        self.encoders, self.schemas, self.uris = {}, {}, {}
        for entry in plan:
            enc, spec = rebuild_encoder(
                entry["name"], entry["spec"], dev, fingerprint=entry["fingerprint"], context=" of the run",
                fix="label with the weights/emofs the run was trained with, or retrain the head")
            self.encoders[entry["name"]] = enc
            self.schemas[entry["name"]] = feature_schema(enc.dim, entry["dtype"], spec, token_dim=enc.token_dim)
            self.uris[entry["name"]] = dataset_uri(store_uri, features_name(entry["name"]))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from featurestore.features import feature_table
        from featurestore.fragments import write_fragments

        from .prepare import encoder_outputs

        out: dict[str, list] = {k: [] for k in ("clip_id", "uri", "encoder", "status", "message",
                                                "fragments", "fragment_keys", "peak_frame", "face_ratio",
                                                "face_detector", "face_confidence")}

        def emit(clip_id, uri, encoder, status, message, frags="", keys="", peak=None, ratio=None,
                 detector=None, confidence=None):
            values = (clip_id, uri, encoder, status, message, frags, keys, peak, ratio, detector, confidence)
            for key, value in zip(out, values):
                out[key].append(value)

        items = []
        for i, clip_id in enumerate(batch["clip_id"]):
            if batch["error"][i]:
                emit(str(clip_id), batch["uri"][i], None, "decode", str(batch["error"][i]))
                continue
            peak = batch["peak_frame"][i]
            ratio = batch["face_ratio"][i]
            confidence = batch["face_confidence"][i]
            payload = pickle.loads(batch["inputs"][i])
            items.append({"clip_id": str(clip_id), "uri": batch["uri"][i],
                          "todo": json.loads(batch["todo"][i]), **payload,
                          "peak": None if peak is None or peak != peak else int(peak),
                          "ratio": None if ratio is None or ratio != ratio else float(ratio),
                          "detector": str(batch["face_detector"][i]) or None,
                          "confidence": None if confidence is None or confidence != confidence
                          else float(confidence)})
        for name, enc in self.encoders.items():
            mine = [it for it in items if name in it["todo"]]
            if not mine:
                continue
            good, vectors, tokens = [], [], []
            dtype = "float16" if self.schemas[name].field("vector").type.value_type == pa.float16() else "float32"
            for it, res in zip(mine, encoder_outputs(enc, mine, dtype)):
                if isinstance(res, str):
                    emit(it["clip_id"], it["uri"], name, "encode", res[:500])
                    continue
                good.append(it)
                vectors.append(res.vector)
                tokens.append(res.tokens)
            if not good:
                continue
            schema = self.schemas[name]
            ids = [it["clip_id"] for it in good]
            table = feature_table(ids, np.stack(vectors), tokens if enc.token_dim else None, schema)  # (N, D)
            frags = json.dumps(write_fragments(self.uris[name], table, schema))
            keys = json.dumps(ids)
            for it in good:
                emit(it["clip_id"], it["uri"], name, "ok", None, frags, keys, it["peak"], it["ratio"],
                     it["detector"], it["confidence"])
        return out


# ------------------------------------------------------------------------- driver
class _Committer:
    """Collects actor output rows and commits fragments per feature set (driver side)."""

    def __init__(self, store: Store, plan: list[dict[str, Any]], schemas: dict[str, pa.Schema],
                 todo: dict[str, list[str]]):
        self.store, self.schemas, self.todo = store, schemas, todo
        self.pending: dict[str, dict[str, list[str]]] = {e["name"]: {} for e in plan}
        self.extracted = {e["name"]: 0 for e in plan}
        self.failed = {e["name"]: 0 for e in plan}  # decode failures count for each set of the clip
        self.decode_failed: set[str] = set()
        self.all_errors: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.ok_uris: list[str] = []
        self.peaks: dict[str, tuple[int, float | None]] = {}
        self.pending_clips: set[str] = set()
        self.committed: set[str] = set()

    def add(self, rows: dict[str, list]) -> int:
        now = datetime.now(timezone.utc)
        for i, clip_id in enumerate(rows["clip_id"]):
            status, name = rows["status"][i], rows["encoder"][i]
            self.pending_clips.add(clip_id)
            if status != "ok":
                self.errors.append({"clip_id": clip_id, "uri": rows["uri"][i] or clip_id, "stage": status,
                                    "encoder": name, "message": rows["message"][i], "at": now})
                if status == "decode" and clip_id not in self.decode_failed:
                    self.decode_failed.add(clip_id)
                    for todo_name in self.todo.get(clip_id, ()):
                        self.failed[todo_name] += 1
                elif name is not None:
                    self.failed[name] += 1
                continue
            if rows["fragments"][i] not in self.committed:  # a fragment's rows may span batches
                self.pending[name].setdefault(rows["fragments"][i], json.loads(rows["fragment_keys"][i]))
            self.ok_uris.append(rows["uri"][i])
            if rows["peak_frame"][i] is not None:
                self.peaks[clip_id] = (rows["peak_frame"][i], rows["face_ratio"][i],
                                       rows["face_detector"][i], rows["face_confidence"][i])
        return len(self.pending_clips)

    def commit(self) -> int:
        """Commit everything collected; returns the number of clips handled."""
        from featurestore.fragments import commit_fragments
        from featurestore.schema import features_name

        for name, frags in self.pending.items():
            if not frags:
                continue
            fragments = [f for group in frags for f in json.loads(group)]
            keys = [k for group in frags.values() for k in group]
            commit_fragments(self.store, features_name(name), fragments, keys, self.schemas[name])
            self.extracted[name] += len(keys)
            self.committed.update(frags)
            self.pending[name] = {}
        if self.peaks:
            ids = list(self.peaks)
            self.store.upsert_clips(pa.table({
                "clip_id": pa.array(ids, pa.string()),
                "peak_frame": pa.array([int(self.peaks[c][0]) for c in ids], pa.int32()),
                "face_ratio": pa.array([self.peaks[c][1] for c in ids], pa.float32()),
                "face_detector": pa.array([self.peaks[c][2] for c in ids], pa.string()),
                "face_confidence": pa.array([self.peaks[c][3] for c in ids], pa.float32()),
            }))
            self.peaks = {}
        if self.ok_uris:
            self.store.clear_errors("decode", list(dict.fromkeys(self.ok_uris)))
            self.ok_uris = []
        if self.errors:
            self.store.record_errors(self.errors)
            self.all_errors.extend(self.errors)
            for err in self.errors:
                log.warning(f"{err['stage']} failed for {err['clip_id']}"
                     f"{' (' + err['encoder'] + ')' if err['encoder'] else ''}: {err['message']}")
            self.errors = []
        done = len(self.pending_clips)
        self.pending_clips = set()
        return done


def extract_ray(
    store: Store,
    plan: list[dict[str, Any]],
    clip_ids: Sequence[str],
    *,
    batch_size: int = 16,
    device: str = "auto",
    address: str | None = None,
    num_cpus: int | None = None,
    commit_every: int | None = None,
    progress: bool = True,
    ship: Sequence[str] = (),
    options: RayOptions | None = None,
) -> dict[str, Any]:
    """Extract the plan's feature sets for ``clip_ids`` on Ray Data, committing fragments.

    Args:
        store: the store (every Ray worker must reach its URI).
        plan: feature sets to extract (``name``, ``ref``, ``dtype``, ``tokens``, ``media``,
            ``fingerprint``, ``spec``), as :mod:`workflows.label` builds from a head run.
        clip_ids: clips to extract (the caller passes only those missing features), or
            ``{clip_id: [feature set, ...]}`` to extract only some sets per clip.
        batch_size: clips per decode task and per encoder-actor batch (the batch each
            actor, i.e. each GPU or GPU share, encodes at once).
        device: ``auto`` | ``cpu`` | ``cuda`` inside the actors (``auto``: GPU actors
            when the cluster has GPUs).
        address: Ray cluster address; None starts (or reuses) a local Ray.
        num_cpus: CPUs of a local Ray (default: all).
        commit_every: clips per driver commit (default ``4 * batch_size``).
        progress: report progress (:func:`featurestore.progress.track_progress`).
        ship: further packages cluster workers need (see :func:`init_ray`).
        options: the Ray flags (``--actors``, ``--gpus-per-actor``; its address and
            num_cpus replace the two arguments above).

    Returns:
        ``{"fingerprints": {name: fp}, "extracted": {name: n}}``, plus, when clips were
        run, ``jobs``, ``decode_errors``, ``failed`` ({name: n}), ``errors`` (rows) and
        ``pool`` (:class:`ActorPool`).

    Raises:
        InputError: Ray flags the cluster cannot honour (see :func:`actor_pool`).
    """
    from featurestore.features import feature_schema
    from featurestore.fragments import prepare_dataset
    from featurestore.schema import features_name

    from .specs import applies, group_by_settings

    if not clip_ids:
        return {"fingerprints": {e["name"]: e["fingerprint"] for e in plan}, "extracted": {}}
    medias = {g.media for g in group_by_settings({e["name"]: e["spec"] for e in plan}) if g.media}
    if len(medias) > 1:
        raise InputError("the run's feature sets were decoded with different media settings: "
                         "label with --engine local")
    media = next(iter(medias)).as_dict() if medias else None
    schemas = {}
    for entry in plan:
        spec = entry["spec"]
        schemas[entry["name"]] = feature_schema(int(spec["dim"]), entry["dtype"], spec,
                                                token_dim=spec.get("token_dim"))
        prepare_dataset(store, features_name(entry["name"]), schemas[entry["name"]])

    wanted = {c: None for c in clip_ids} if not isinstance(clip_ids, Mapping) else dict(clip_ids)
    options = options or RayOptions(address=address, num_cpus=num_cpus)
    clips = store.clips(columns=["clip_id", "uri", "subtitle", "has_audio", "has_video", "has_media"])
    jobs = []
    for row in clips.filter(clips["clip_id"].is_in(list(wanted))).iter_rows(named=True):
        only = wanted[row["clip_id"]]
        todo = [e["name"] for e in plan if applies(e["spec"].get("modality", "audio"), row)
                and (only is None or e["name"] in only)]
        if todo:
            jobs.append({"clip_id": row["clip_id"], "uri": row["uri"], "subtitle": row["subtitle"] or "",
                         "todo": json.dumps(todo)})
    if not jobs:
        return {"fingerprints": {e["name"]: e["fingerprint"] for e in plan}, "extracted": {}}
    needs = {e["name"]: e["spec"]["need"] for e in plan}
    from .registry import encoder_class

    in_task = tuple((e["ref"], tuple(sorted((e["spec"].get("options") or {}).items())))
                    for e in plan if encoder_class(e["spec"]["encoder"]).in_worker)  # as in_worker_refs

    started_here = init_ray(options.address, options.num_cpus, ship)
    try:
        return _run(store, plan, schemas, jobs, needs, in_task, media, batch_size, device,
                    commit_every or 4 * batch_size, progress, options)
    finally:
        if started_here:
            import ray

            ray.shutdown()


def _run(store, plan, schemas, jobs, needs, in_task, media, batch_size, device, commit_every, progress,
         options):
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    pool = actor_pool(ray.cluster_resources(), device, options)
    log.info(f"encoder actors: {pool.actors} on {pool.device}"
             f"{f', {pool.num_gpus:g} GPU each' if pool.num_gpus else ''}, batch {batch_size}")
    encode_opts: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=pool.actors)}
    encode_opts.update({"num_gpus": pool.num_gpus} if pool.num_gpus else {"num_cpus": 1})
    actor_device = pool.device

    ds = ray.data.from_items(jobs, override_num_blocks=max(1, min(len(jobs) // batch_size, 200)))
    ds = ds.map_batches(_decode_batch, batch_size=batch_size, num_cpus=1, batch_format="numpy",
                        fn_kwargs={"media": media, "needs": needs, "in_task": in_task}, zero_copy_batch=True)
    ds = ds.map_batches(_EncoderActor, batch_size=batch_size, batch_format="numpy",
                        fn_constructor_kwargs={"plan": plan, "device": actor_device, "store_uri": store.uri},
                        **encode_opts)
    committer = _Committer(store, plan, schemas, {j["clip_id"]: json.loads(j["todo"]) for j in jobs})
    try:
        with track_progress(len(jobs), "extracting (ray)", enabled=progress) as advance:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows = batch.to_pydict()
                if committer.add(rows) >= commit_every:
                    advance(committer.commit())
            advance(committer.commit())
    except EmofsError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors; surface emofs' message
        cause = _emofs_cause(exc)
        if cause is not None:
            raise cause from exc
        raise
    return {"fingerprints": {e["name"]: e["fingerprint"] for e in plan}, "extracted": committer.extracted,
            "jobs": len(jobs), "decode_errors": len(committer.decode_failed), "failed": committer.failed,
            "errors": committer.all_errors, "pool": pool}


def _emofs_cause(exc: BaseException) -> EmofsError | None:
    """The emofs error a Ray task raised, if any (Ray wraps it, sometimes twice)."""
    seen = exc
    for _ in range(5):
        if isinstance(seen, EmofsError):
            return type(seen)(str(seen).splitlines()[0]) if str(seen) else seen
        cause = getattr(seen, "cause", None) or seen.__cause__
        if cause is None:
            break
        seen = cause
    text = str(exc)
    for cls_name in ("InputError", "StoreError"):
        if f"{cls_name}: " in text:
            message = text.split(f"{cls_name}: ", 1)[1].splitlines()[0]
            return InputError(message)
    return None

