"""Clip queries of the page and the API: clip filters, a prediction run, paging.

``GET /api/clips`` and the result lists of the page run :func:`query_clips`; the clip
filter is the same SQL ``--where`` as ``emofs clips`` (checked by the store), the run
filters (predicted label, confidence range, wrong-only) apply to ``predictions/<run>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from featurestore.predictions import read_predictions
from featurestore.schema import CLIPS
from featurestore.store import Store, sql_in, sql_quote
from featurestore.index.catalog import latest_version
from featurestore.index.neighbours import clip_meta
from featurestore.versioned import per_version

from .errors import InputError, NotFoundError

__all__ = ["ClipQuery", "query_clips", "check_run", "resolve_clip", "clip_rows", "MAX_LIMIT",
           "int_param", "float_param", "predictions_for",
           "card_facts", "CardFacts", "CARD_COLUMNS", "ALIAS_COLUMNS"]

MAX_LIMIT = 1000


def int_param(params: Mapping[str, str], name: str, default: int | None) -> int | None:
    """An integer query parameter (``k``, ``limit``); a non-number is an :class:`InputError`."""
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name} must be an integer (got {raw!r})") from None


def float_param(params: Mapping[str, str], name: str) -> float | None:
    """A float query parameter (``conf_min``); a non-number is an :class:`InputError`."""
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise InputError(f"{name} must be a number (got {raw!r})") from None


@dataclass
class ClipQuery:
    """One page of clips.

    Attributes:
        where: SQL filter on clip columns (as ``emofs clips --where``).
        run: a prediction run whose predicted label and confidence join each row.
        pred_label: keep clips the run predicted as this label.
        conf_min: keep predictions at least this confident.
        conf_max: keep predictions at most this confident.
        wrong: keep clips whose label differs from the run's prediction.
        limit: rows per page (1..1000).
        offset: rows skipped.
    """

    where: str | None = None
    run: str | None = None
    pred_label: str | None = None
    conf_min: float | None = None
    conf_max: float | None = None
    wrong: bool = False
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InputError(f"limit must be in 1..{MAX_LIMIT} (got {self.limit})")
        if self.offset < 0:
            raise InputError(f"offset must be >= 0 (got {self.offset})")
        for name in ("conf_min", "conf_max"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in 0..1 (got {value})")
        if self.run is None and (self.pred_label or self.wrong or self.conf_min is not None
                                 or self.conf_max is not None):
            raise InputError("pred_label, conf_min, conf_max and wrong filter a prediction run: pass run=NAME")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "ClipQuery":
        """Parse the query string of ``GET /api/clips``."""
        return cls(where=params.get("where") or None, run=params.get("run") or None,
                   pred_label=params.get("pred_label") or None,
                   conf_min=float_param(params, "conf_min"), conf_max=float_param(params, "conf_max"),
                   wrong=params.get("wrong", "") in ("1", "true", "yes", "on"),
                   limit=int_param(params, "limit", 50), offset=int_param(params, "offset", 0))

    @property
    def filters_run(self) -> bool:
        """True when rows without a matching prediction drop out."""
        return bool(self.pred_label or self.wrong or self.conf_min is not None or self.conf_max is not None)


def check_run(store: Store, run: str) -> None:
    """Raise :class:`NotFoundError` unless ``run`` is a prediction run of the store."""
    runs = store.prediction_runs()
    if run not in runs:
        raise NotFoundError(f"unknown prediction run {run!r} (runs: {', '.join(runs) or 'none'}): "
                            "write one with `emofs predict` or `emofs label`")


#: Clip columns the cards show, kept in memory per clips-table version (:func:`card_facts`).
CARD_COLUMNS = ("clip_id", "modality", "has_video", "has_audio", "duration_s", "split", "speaker", "tags")
#: Card columns held dictionary-encoded (a few distinct values: about a byte per clip).
_FEW_VALUES = ("label", "modality", "split", "speaker", "tags")


class CardFacts:
    """The card columns of one clips version as Arrow columns (no Python object per clip):
    a request looks up the dozen clips it shows.

    Attributes:
        table: the :data:`CARD_COLUMNS` the clips table has, one row per clip.
        ids: the clip ids, with lookups (:class:`featurestore.index.ids.KeyColumn`).
    """

    def __init__(self, table):
        from featurestore.index.ids import KeyColumn

        self.table = table
        self.ids = KeyColumn(table.column("clip_id") if "clip_id" in table.column_names else [])
        self.shared = False

    def share_ids(self, ids) -> None:
        """Use ``ids`` (a :class:`~featurestore.index.ids.KeyColumn`) as the clip ids when
        they are the same keys in the same order (checked once)."""
        self.shared = True
        if ids is self.ids or len(ids) != len(self.ids) or "clip_id" not in self.table.column_names:
            return
        keys = ids.to_arrow()
        if not keys.equals(self.ids.to_arrow()):
            return
        at = self.table.column_names.index("clip_id")
        self.table = self.table.set_column(at, "clip_id", keys)
        self.ids = ids

    def __contains__(self, clip_id: object) -> bool:
        return self.ids.row(clip_id) is not None

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, clip_ids: list[str]) -> list[dict[str, Any]]:
        """The card columns of each of ``clip_ids`` (an empty dict for one not in the store)."""
        import numpy as np
        import pyarrow as pa

        found = self.ids.lookup(clip_ids)
        if len(found) <= 64:  # a page of results: scalars, no Arrow kernel call
            names = self.table.column_names
            columns = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in self.table.columns]
            return [{n: c[at].as_py() for n, c in zip(names, columns)} if at >= 0 else {}
                    for at in found.tolist()]
        picked = self.table.take(pa.array(np.where(found >= 0, found, 0))).to_pylist()
        return [row if at >= 0 else {} for row, at in zip(picked, found)]


def card_facts(store: Store) -> CardFacts:
    """The :class:`CardFacts` of the store's current clips version (read once per version:
    a request then looks clips up in memory instead of scanning ``clips.lance``).

    Its clip ids are those of the search's clip columns
    (:func:`featurestore.index.neighbours.clip_meta`) when both read the same rows: one
    copy of the ids and of their lookup, not two."""
    path, version = store.path(CLIPS), latest_version(store, CLIPS)
    known = _LATEST.get(path)
    if known is not None and version is not None and known[0] == version:
        return known[1]
    facts = per_version(store, CLIPS, "card_facts", _read_card_facts)
    _LATEST[path] = (version, facts)
    if not facts.shared:
        facts.share_ids(clip_meta(store).ids)
    return facts


#: clips dataset path -> (its version when last asked, the CardFacts then).
_LATEST: dict[str, tuple[int | None, CardFacts]] = {}


def _read_card_facts(ds) -> CardFacts:
    import pyarrow as pa

    if ds is None:
        return CardFacts(pa.table({"clip_id": pa.array([], pa.string())}))
    names = [c for c in CARD_COLUMNS if c in ds.schema.names]
    table = ds.to_table(columns=names)
    columns = []
    for name in names:
        column = table.column(name).combine_chunks()
        if name in _FEW_VALUES and pa.types.is_string(column.type) and len(column):
            column = column.dictionary_encode()
        columns.append(column)
    return CardFacts(pa.table(columns, names=names))


def _clip_columns(store: Store) -> list[str]:
    ds = store.dataset(CLIPS)
    return ds.schema.names if ds is not None else []


#: Stored columns a search may name a clip by, the first match winning.
ALIAS_COLUMNS = ("rel_path", "uri", "name")


def resolve_clip(store: Store, query: str, facts: CardFacts | None = None) -> str:
    """The clip id a search names: a clip id, a stored relative path, file path or name.

    Only clips already in the store resolve: a path never reaches the disk from here. A
    clip id is looked up in memory; a path or name is one filtered scan of the clips.

    Raises:
        NotFoundError: no clip has that id or path.
    """
    query = (query or "").strip()
    if not query:
        raise InputError("the search is empty: type a clip id or a path in the store")
    facts = card_facts(store) if facts is None else facts
    if query in facts:
        return query
    columns = [c for c in ALIAS_COLUMNS if c in _clip_columns(store)]
    if columns:
        where = " OR ".join(f"{c} = {sql_quote(query)}" for c in columns)
        found = store.clips(where=where, columns=["clip_id", *columns])
        for column in columns:  # a rel_path beats a uri beats a name
            hits = found.filter(found[column] == query)["clip_id"]
            if len(hits):
                return hits[0]
    raise NotFoundError(f"unknown clip {query!r}: not a clip_id or stored path in {store.uri} "
                        "(list clip ids with `emofs clips`)")


def clip_rows(store: Store, clip_ids: list[str]) -> list[dict[str, Any]]:
    """Full clip rows for ``clip_ids``, in that order (ids not in the store are skipped)."""
    if not clip_ids:
        return []
    table = store.table(CLIPS, where=sql_in("clip_id", clip_ids))
    by_id = {r["clip_id"]: r for r in (table.to_pylist() if table is not None else [])}
    return [by_id[c] for c in clip_ids if c in by_id]


def _predictions(store: Store, query: ClipQuery):
    import polars as pl

    check_run(store, query.run)
    conditions = []
    if query.pred_label:
        conditions.append(f"label = {sql_quote(query.pred_label)}")
    if query.conf_min is not None:
        conditions.append(f"confidence >= {float(query.conf_min)}")
    if query.conf_max is not None:
        conditions.append(f"confidence <= {float(query.conf_max)}")
    frame = read_predictions(store, query.run, where=" AND ".join(conditions) or None)
    if not frame.height:
        return pl.DataFrame(schema={"clip_id": pl.Utf8, "prediction": pl.Utf8, "confidence": pl.Float32})
    return frame.select("clip_id", pl.col("label").alias("prediction"), "confidence")


def query_clips(store: Store, query: ClipQuery) -> dict[str, Any]:
    """One page of clips matching ``query``.

    Returns:
        ``{"total": matching clips, "offset", "limit", "rows": [clip row (+ prediction,
        confidence with a run)]}``.

    Raises:
        QueryError: the ``where`` filter does not parse; NotFoundError: unknown run;
        InputError: a bad limit, offset or confidence.
    """
    import polars as pl

    if query.run is None:
        ids = store.clips(where=query.where, columns=["clip_id"])["clip_id"]
        page = ids.slice(query.offset, query.limit).to_list()
        return {"total": len(ids), "offset": query.offset, "limit": query.limit,
                "rows": clip_rows(store, page)}
    preds = _predictions(store, query)
    base = store.clips(where=query.where, columns=["clip_id", "label"])
    joined = base.join(preds, on="clip_id", how="inner" if query.filters_run else "left")
    if query.wrong:
        joined = joined.filter(pl.col("label").is_not_null() & (pl.col("label") != pl.col("prediction")))
    page = joined.slice(query.offset, query.limit)
    extra = {r["clip_id"]: r for r in page.select("clip_id", "prediction", "confidence").to_dicts()}
    rows = clip_rows(store, page["clip_id"].to_list())
    for row in rows:
        row.update({k: v for k, v in extra[row["clip_id"]].items() if k != "clip_id"})
    return {"total": joined.height, "offset": query.offset, "limit": query.limit, "rows": rows}


def predictions_for(store: Store, run: str | None, clip_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``{clip_id: {"prediction", "confidence"}}`` of ``run`` for ``clip_ids`` (empty without a run)."""
    if not run or not clip_ids:
        return {}
    check_run(store, run)
    frame = read_predictions(store, run, where=sql_in("clip_id", clip_ids))
    if not frame.height:
        return {}
    return {r["clip_id"]: {"prediction": r["label"], "confidence": r["confidence"]}
            for r in frame.select("clip_id", "label", "confidence").to_dicts()}
