"""Arrow schemas of the store's tables and the names (paths) of its datasets.

Every dataset path inside a store is spelled here and nowhere else: the fixed
datasets (:data:`CLIPS`, :data:`ERRORS`), one feature set (:func:`features_name`), one
prediction run (:func:`predictions_name`), and the URI of any of them under a store URI
(:func:`dataset_uri`, also :meth:`featurestore.store.Store.path`).
"""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa

from .errors import InputError

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "schema_version_of",
    "CLIPS",
    "ERRORS",
    "FEATURES_DIR",
    "PREDICTIONS_DIR",
    "INDEX_DIR",
    "LANCE_SUFFIX",
    "features_name",
    "predictions_name",
    "dataset_uri",
    "MEDIA_COLUMNS",
    "ANNOTATION_COLUMNS",
    "clips_schema",
    "errors_schema",
    "error_key",
]

#: Bumped when a change makes old emofs unable to read the store.
SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = "emofs.schema_version"


def schema_version_of(ds) -> int:
    """The emofs schema version a Lance dataset's Arrow metadata records (0: none)."""
    return int((ds.schema.metadata or {}).get(SCHEMA_VERSION_KEY.encode(), b"0"))

CLIPS = "clips.lance"
ERRORS = "errors.lance"
FEATURES_DIR = "features"
PREDICTIONS_DIR = "predictions"
INDEX_DIR = "index"
LANCE_SUFFIX = ".lance"

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def features_name(name: str) -> str:
    """Dataset path of a feature set inside the store (``features/<name>.lance``).

    Raises:
        InputError: ``name`` is empty, holds ``/`` or starts with ``.``.
    """
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"invalid feature-set name {name!r}: use letters, digits, '-', '_'")
    return f"{FEATURES_DIR}/{name}{LANCE_SUFFIX}"


def predictions_name(run_id: str) -> str:
    """Dataset path of a prediction run inside the store (``predictions/<run>.lance``).

    Raises:
        InputError: ``run_id`` is not letters, digits, ``.``, ``+``, ``-``, ``_``.
    """
    if not run_id or not _RUN_NAME.match(run_id):
        raise InputError(
            f"invalid prediction run name {run_id!r}: use letters, digits, '.', '+', '-', '_' (--name)"
        )
    return f"{PREDICTIONS_DIR}/{run_id}{LANCE_SUFFIX}"


def dataset_uri(store_uri: str, *parts: str) -> str:
    """The URI of a dataset (or file) inside the store at ``store_uri``.

    Example:
        >>> dataset_uri("s3://bucket/store", features_name("hubert"))
        's3://bucket/store/features/hubert.lance'
    """
    return "/".join([store_uri, *parts])

#: Columns emofs derives from the media file; a labels file may not overwrite them.
MEDIA_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("name", pa.string()),  # file stem: how Emotion-LLaMA / MER key clips
    pa.field("uri", pa.string()),  # absolute path of the media file
    pa.field("root", pa.string()),  # the ingested folder the id is relative to
    pa.field("rel_path", pa.string()),
    pa.field("has_media", pa.bool_()),  # False for rows imported without a media file
    pa.field("sha256", pa.string()),
    pa.field("size_bytes", pa.int64()),
    pa.field("mtime_ns", pa.int64()),
    pa.field("container", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("has_audio", pa.bool_()),
    pa.field("has_video", pa.bool_()),
    pa.field("modality", pa.string()),  # audio | video | audio+video
    pa.field("fps", pa.float64()),
    pa.field("n_frames", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("video_codec", pa.string()),
    pa.field("sample_rate", pa.int32()),
    pa.field("channels", pa.int32()),
    pa.field("audio_codec", pa.string()),
    pa.field("peak_frame", pa.int32()),
    pa.field("face_ratio", pa.float32()),
    # Which face detector ran (yunet | haar) and its mean box confidence over the frames
    # with a face (null for Haar, which has none). Older stores gain both on the next extract.
    pa.field("face_detector", pa.string()),
    pa.field("face_confidence", pa.float32()),
    pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
)

#: Annotation columns every store has; labels files may add any others.
ANNOTATION_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("label", pa.string()),
    pa.field("split", pa.string()),
    pa.field("speaker", pa.string()),
    pa.field("subtitle", pa.string()),
    pa.field("description", pa.string()),
)


def clips_schema() -> pa.Schema:
    """Schema of ``clips.lance`` as created (labels files may add columns later)."""
    return pa.schema(
        [*MEDIA_COLUMNS, *ANNOTATION_COLUMNS],
        metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)},
    )


def errors_schema() -> pa.Schema:
    """Schema of ``errors.lance``: one row per failed (stage, encoder, file)."""
    return pa.schema(
        [
            pa.field("error_key", pa.string(), nullable=False),
            pa.field("clip_id", pa.string()),
            pa.field("uri", pa.string()),
            pa.field("stage", pa.string()),  # ingest | decode | encode | predict ...
            pa.field("encoder", pa.string()),
            pa.field("message", pa.string()),
            pa.field("at", pa.timestamp("us", tz="UTC")),
        ],
        metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)},
    )


def error_key(stage: str, encoder: str | None, uri: str) -> str:
    """Key of an errors row: one per stage, encoder and file."""
    digest = hashlib.sha1(uri.encode()).hexdigest()[:16]
    return f"{stage}:{encoder or '-'}:{digest}"
