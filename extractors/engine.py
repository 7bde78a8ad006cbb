"""`emofs extract --engine ray`: the local engine's plan and report, Ray's execution.

Flow::

    clips.lance (--where) ──plan as the local engine (each encoder's spec fingerprint:
        up to date / not applicable / to do, per clip)──▶ {clip: [feature sets]}
        ──extractors.ray_engine.extract_ray (decode tasks, encoder actors writing
        fragments, driver commits)──▶ features/<name>.lance ──▶ ExtractReport

The feature sets are the ones ``extract`` writes locally (the same specs, fingerprints and
float16/float32 bytes), so either engine can continue what the other started, and a rerun
on either extracts nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from featurestore import Store
from featurestore.features import spec_fingerprint

from .media import MediaConfig
from .pipeline import PLAN_COLUMNS, ExtractReport, extract, extract_config, plan_extraction
from .ray_engine import RayOptions, extract_ray
from .registry import EncoderRef, load_encoders

log = logging.getLogger(__name__)

__all__ = ["extract_with", "extract_on_ray"]


def extract_with(engine: str, store: Store, encoders: list[str | EncoderRef] | str, *,
                 ray_address: str | None = None, actors: int | None = None,
                 gpus_per_actor: float | None = None, **kwargs: Any) -> ExtractReport:
    """``extract`` on ``engine`` (``local`` | ``ray``); ``kwargs`` are :func:`extract`'s.

    Raises:
        InputError: an unknown engine, or a Ray flag (``--ray-address``, ``--actors``,
            ``--gpus-per-actor``) without ``--engine ray``.
    """
    options = RayOptions.of(engine, kwargs.get("device", "auto"), address=ray_address or None,
                            actors=actors, gpus_per_actor=gpus_per_actor)
    if options is None:
        return extract(store, encoders, **kwargs)
    kwargs.pop("workers", None)  # decoding runs in Ray tasks
    return extract_on_ray(store, encoders, options=options, **kwargs)


def extract_on_ray(
    store: Store,
    encoders: list[str | EncoderRef] | str,
    *,
    options: RayOptions | None = None,
    where: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    dtype: str = "float16",
    tokens: dict[str, int] | None = None,
    progress: bool = True,
    media: MediaConfig | None = None,
    encoder_options: dict[str, dict[str, Any]] | None = None,
) -> ExtractReport:
    """Extract like :func:`~extractors.pipeline.extract`, on Ray (local or a cluster).

    Args:
        store: the store (every Ray worker must reach its URI).
        encoders: references ``NAME[:WEIGHTS]``.
        options: Ray address, actor pool (``--actors``, ``--gpus-per-actor``), local CPUs.
        where: SQL filter on clip columns.
        device: ``auto`` | ``cpu`` | ``cuda`` of the encoder actors.
        batch_size: clips per decode task and per actor batch (per GPU or GPU share).
        dtype: stored float type.
        tokens: token counts per encoder.
        progress: show progress.
        media: decoding settings (part of every spec).

    Returns:
        An :class:`~extractors.pipeline.ExtractReport` (``device`` names the actor pool;
        ``workers``, ``waiting_s`` and ``encoding_s`` stay 0: Ray schedules those stages).

    Raises:
        InputError: bad flags, unknown encoders, Ray flags the cluster cannot honour.
        StoreNotFoundError: the store holds no clips.
    """
    started = time.perf_counter()
    cfg = extract_config(store, encoders, device=device, batch_size=batch_size, workers=0, dtype=dtype,
                         tokens=tokens, media=media, encoder_options=encoder_options)
    # Specs and fingerprints on the driver (CPU); the actors rebuild and check each encoder.
    loaded = load_encoders(cfg.encoders, "cpu", cfg.tokens, cfg.encoder_options)
    plan = []
    for enc in loaded:
        spec = enc.spec(cfg.dtype, cfg.media)
        plan.append({"name": enc.name, "ref": enc.ref, "dtype": cfg.dtype, "spec": spec,
                     "media": spec.get("media"), "fingerprint": spec_fingerprint(spec)})
    del loaded

    rows = store.clips(where=where, columns=PLAN_COLUMNS).to_dicts()
    report = ExtractReport(clips=len(rows), device="ray")
    planned = plan_extraction(store, [(e["name"], e["spec"]["modality"], e["fingerprint"]) for e in plan],
                              rows, report)
    todo = {clip_id: names for clip_id, names in planned.items() if names}
    todo_plan = [e for e in plan if any(e["name"] in names for names in todo.values())]
    if todo:
        result = extract_ray(store, todo_plan, todo, batch_size=cfg.batch_size, device=cfg.device,
                             progress=progress, options=options or RayOptions())
        for name, n in result["extracted"].items():
            report.encoders[name].extracted = n
        for name, n in (result.get("failed") or {}).items():
            report.encoders[name].failed = n
        report.decode_errors = result.get("decode_errors", 0)
        report.decoded = result.get("jobs", 0) - report.decode_errors
        report.errors = list(result.get("errors") or [])
        pool = result.get("pool")
        if pool is not None:
            report.device = (f"ray: {pool.actors} {pool.device} actor{'s' if pool.actors > 1 else ''}"
                             f"{f' x {pool.num_gpus:g} GPU' if pool.num_gpus else ''}")
    report.seconds = time.perf_counter() - started
    return report
