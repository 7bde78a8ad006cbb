"""How the `emofs` process ends: Python's clean-up runs, native teardown never does, so a
finished command cannot abort at exit (`terminate called without an active exception`)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from commands import process

REPO = Path(__file__).resolve().parents[1]


class _Exited(Exception):
    pass


@pytest.fixture()
def exits(monkeypatch):
    codes = []

    def fake_exit(code):
        codes.append(code)
        raise _Exited

    monkeypatch.setattr(process.os, "_exit", fake_exit)
    monkeypatch.setattr(process.threading, "_shutdown", lambda: codes.append("threads"))
    monkeypatch.setattr(process.atexit, "_run_exitfuncs", lambda: codes.append("atexit"))
    return codes


@pytest.mark.parametrize("outcome, code", [(None, 0), (SystemExit(2), 2), (SystemExit("bad"), 1),
                                           (SystemExit(None), 0), (ValueError("boom"), 1)])
def test_run_and_exit_ends_with_the_commands_code_after_atexit(exits, outcome, code):
    def run():
        if outcome is not None:
            raise outcome

    with pytest.raises(_Exited):
        process.run_and_exit(run)
    assert exits == ["threads", "atexit", code]


def test_the_emofs_script_runs_atexit_but_no_interpreter_teardown(tmp_path):
    setup = ("import atexit, sys\n"
             "atexit.register(lambda: print('py-atexit', flush=True))\n"
             "class Teardown:\n"
             "    def __del__(self):\n"
             "        print('finalized', flush=True)\n"
             "keep = Teardown()\n")
    code = setup + "from cli import main\nmain()\n"  # what the `emofs` console script runs
    ok = subprocess.run([sys.executable, "-c", code, "--help"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "Usage" in ok.stdout and "py-atexit" in ok.stdout, ok.stderr[-2000:]
    assert "finalized" not in ok.stdout  # ended by os._exit: no interpreter / native teardown
    bad = subprocess.run([sys.executable, "-c", code, "check", "--store", str(tmp_path / "none")],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: "), bad.stderr[-2000:]
    # Called from Python (not as the emofs script), app() raises SystemExit as before.
    plain = setup + "from cli import app\nsys.exit(app())\n"
    run = subprocess.run([sys.executable, "-c", plain, "--help"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and "py-atexit" in run.stdout


def test_check_exits_zero_every_time(tmp_path):
    """`emofs check` on a store with features and an index, many times in a row: every run
    exits 0 (an abort at exit used to end 2-3 runs in 30 with code 134 after "ok")."""
    from featurestore import Store
    from featurestore.features import write_features
    from featurestore.index import IndexConfig, build_index

    store = Store(tmp_path / "store")
    ids = [f"clip{i:03d}.wav" for i in range(80)]
    store.upsert_clips(pa.table({"clip_id": ids, "uri": ids, "rel_path": ids, "has_audio": [True] * 80}))
    write_features(store, "enc_a", ids, np.random.default_rng(0).normal(size=(80, 8)).astype(np.float32),
                   {"encoder": "enc_a", "dim": 8, "weights": "test"}, dtype="float32")
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    script = Path(sys.executable).parent / "emofs"
    launch = [str(script)] if script.is_file() else [sys.executable, "-c", "from cli import main; main()"]

    def once(_):
        proc = subprocess.run([*launch, "check", "--store", store.uri], cwd=REPO, capture_output=True, text=True)
        return proc.returncode, proc.stdout + proc.stderr

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(once, range(16)))
    failed = [(rc, out[-300:]) for rc, out in results if rc != 0 or ": ok" not in out]
    assert not failed, failed
