"""A full disk is one line naming the path and the space needed; temporaries are removed
and what was written before stays intact."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import Store
from featurestore.check import check_store
from featurestore.diskspace import is_disk_full
from featurestore.errors import DiskFullError
from featurestore.features import write_features
from featurestore.index import IndexConfig, build_index, load_index
from featurestore.index import files as index_files

runner = CliRunner()
SPEC = {"encoder": "enc_a", "dim": 8, "weights": "test"}
LANCE_ENOSPC = ("LanceError(IO): No space left on device (os error 28), "
                "/home/runner/work/lance/lance/rust/lance-file/src/writer/structural.rs:254:9")


def _add(store: Store, start: int, n: int) -> None:
    ids = [f"clip{i:03d}.wav" for i in range(start, start + n)]
    store.upsert_clips(pa.table({"clip_id": ids, "uri": ids, "rel_path": ids, "has_audio": [True] * n}))
    vectors = np.random.default_rng(start).normal(size=(n, 8)).astype(np.float32)  # (N, 8)
    write_features(store, "enc_a", ids, vectors, SPEC, dtype="float32")


class _FullFS:
    """A pyarrow filesystem whose writes run out of space after a few bytes."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def open_output_stream(self, path):
        real = self._fs.open_output_stream(path)

        class _Stream:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                real.close()

            def write(self, data):
                real.write(bytes(data[:10]))
                raise OSError(errno.ENOSPC, "No space left on device")

        return _Stream()


def _disk_fills_up(monkeypatch):
    real = index_files._fs
    monkeypatch.setattr(index_files, "_fs", lambda store, rel: (_FullFS(real(store, rel)[0]), real(store, rel)[1]))


def test_index_save_on_a_full_disk_names_the_path_and_size_and_keeps_the_old_index(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    _add(store, 0, 40)
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    _add(store, 40, 10)
    _disk_fills_up(monkeypatch)

    with pytest.raises(DiskFullError, match=r"^no space left on device writing .*index/enc_a\.faiss "
                                            r"\(\+2 files\): it needs [0-9.]+ KiB.*free at least"):
        build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    result = runner.invoke(app, ["index", "build", "--encoder", "enc_a", "--store", store.uri])
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.strip().splitlines() if not ln.startswith("index enc_a:")]
    assert len(lines) == 1 and lines[0].startswith("error: no space left on device writing "), result.output
    assert not list((tmp_path / "store" / "index").glob("*.tmp"))  # temporaries removed
    assert len(load_index(store, "enc_a", use_cache=False).clip_ids) == 40  # the old index, whole
    assert check_store(store).ok

    monkeypatch.undo()
    assert build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False).rows == 50


def test_a_full_disk_in_a_lance_write_is_one_line_naming_the_store(tmp_path, monkeypatch):
    import featurestore.maintenance as maintenance

    store = Store(tmp_path / "store")
    _add(store, 0, 5)

    def full(*args, **kwargs):
        raise OSError(LANCE_ENOSPC)

    monkeypatch.setattr(maintenance, "vacuum", full)
    result = runner.invoke(app, ["vacuum", "--store", store.uri])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(f"error: no space left on device writing {store.uri}: ")
    assert " is free" in result.output and "Traceback" not in result.output


def test_only_a_full_disk_is_taken_for_one():
    assert is_disk_full(OSError(errno.ENOSPC, "x")) and is_disk_full(OSError(LANCE_ENOSPC))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.ENOENT, "No such file")) and not is_disk_full(ValueError("bad"))
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError:
            raise RuntimeError("while reporting")  # a context, not a cause
    except RuntimeError as exc:
        assert not is_disk_full(exc)


@pytest.fixture()
def tiny_tmpfs(tmp_path):
    """A 20 MB tmpfs (root and a working `mount` only; skipped otherwise)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_really_full_tmpfs_store_gives_one_line_per_command(tiny_tmpfs):
    store = Store(tiny_tmpfs / "store")
    _add(store, 0, 30)
    _add(store, 30, 30)  # a second fragment: vacuum has something to rewrite
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    with open(tiny_tmpfs / "filler", "wb") as handle:  # fill the disk to the last byte
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass
    for argv in (["index", "build", "--encoder", "enc_a", "--rebuild"], ["vacuum", "--older-than", "0"]):
        result = runner.invoke(app, [*argv, "--store", store.uri])
        assert result.exit_code == 1, (argv, result.output)
        errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "no space left on device writing" in errors[0], (argv, result.output)
        assert "Traceback" not in result.output
    assert not [p for p in (tiny_tmpfs / "store").rglob("*.tmp")]
    os.remove(tiny_tmpfs / "filler")
    assert check_store(store).ok and len(load_index(store, "enc_a", use_cache=False).clip_ids) == 60
