"""Shared fixtures: the real clips in ../shared/data and tiny stores in tmp_path."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
SHARED_LABELS = SHARED_DATA / "labels.csv"


def _require_shared_data() -> Path:
    if not SHARED_LABELS.is_file():
        pytest.skip(f"real clips not found at {SHARED_DATA} (the ../shared/data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CREMA-D / RAVDESS clips, read in place."""
    return _require_shared_data()


@pytest.fixture(scope="session")
def shared_rows(shared_data) -> list[dict[str, str]]:
    """Rows of ../shared/data/labels.csv."""
    with open(SHARED_LABELS, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory, shared_data):
    """A store holding every shared clip with its labels (built once per session)."""
    from extractors import ingest
    from featurestore import Store

    store = Store(tmp_path_factory.mktemp("shared") / "store")
    ingest([shared_data], store, labels=SHARED_LABELS, progress=False)
    return store


@pytest.fixture()
def media_samples(shared_data) -> dict[str, Path]:
    """One real file per kind, for tests that build their own folders."""
    return {
        "mp4": next((shared_data / "crema_d" / "mp4").glob("*.mp4")),
        "wav": next((shared_data / "crema_d" / "wav16k").glob("*.wav")),
        "avi": next((shared_data / "ravdess_actor05" / "facecrop").glob("*.avi")),
        "flv": next((shared_data / "crema_d").glob("*.flv")),
    }


def copy_to(src: Path, dst: Path) -> Path:
    """Copy a file, creating the folder; returns ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst
