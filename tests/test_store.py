"""Store: locations, bad paths, schema version, upserts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from featurestore import QueryError, SchemaVersionError, Store, StoreError, StoreNotFoundError
from featurestore.schema import CLIPS, SCHEMA_VERSION, SCHEMA_VERSION_KEY


def test_store_path_that_is_a_file(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store(target)


def test_missing_store_for_reading(tmp_path):
    with pytest.raises(StoreNotFoundError, match="emofs ingest"):
        Store(tmp_path / "nothing", create=False)


def test_env_var_picks_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOFS_STORE", str(tmp_path / "from-env"))
    assert Store().uri == str(tmp_path / "from-env")


def test_upsert_is_idempotent_and_keeps_unmentioned_columns(tmp_path):
    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a", "b"], "label": ["sad", "happy"]}))
    store.upsert_clips(pa.table({"clip_id": ["b", "c"], "speaker": ["s1", "s2"]}))
    store.upsert_clips(pa.table({"clip_id": ["b", "c"], "speaker": ["s1", "s2"]}))
    rows = {r["clip_id"]: r for r in store.clips().to_dicts()}
    assert sorted(rows) == ["a", "b", "c"]
    assert rows["b"]["label"] == "happy" and rows["b"]["speaker"] == "s1"


def test_newer_schema_is_refused(tmp_path):
    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a"]}))
    store.dataset(CLIPS).replace_schema_metadata({SCHEMA_VERSION_KEY: str(SCHEMA_VERSION + 1)})
    with pytest.raises(SchemaVersionError, match="newer emofs"):
        Store(tmp_path / "s")


def test_bad_where_is_a_query_error(tmp_path):
    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a"]}))
    with pytest.raises(QueryError, match="no_such_column"):
        store.clips(where="no_such_column = 1")
