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


# ------------------------------------------------------------------ a local S3 server
S3_BUCKET = "emofs-test"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto's server mode) on 127.0.0.1, with bucket ``emofs-test``.

    Runs as its own process for the session and is stopped after. Yields the environment a
    client needs (endpoint, region, dummy credentials, ``AWS_ALLOW_HTTP``); use the ``s3``
    fixture to have it set for a test.
    """
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the moto S3 server did not start on {endpoint}") from None
                time.sleep(0.1)
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=S3_BUCKET)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def s3(s3_server, monkeypatch, request) -> str:
    """The local S3 server's environment set for this test; returns a fresh ``s3://`` prefix."""
    import re
    import uuid

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40]
    return f"s3://{S3_BUCKET}/{slug}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (and do not fight other test processes)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
