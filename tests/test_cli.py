"""CLI through Typer's CliRunner: ingest, info --json, clips --where, one-line errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli import app
from conftest import SHARED_LABELS

runner = CliRunner()


def test_ingest_info_clips(tmp_path, shared_data, shared_rows):
    store = str(tmp_path / "store")
    result = runner.invoke(app, ["ingest", str(shared_data), "--labels", str(SHARED_LABELS), "--store", store])
    assert result.exit_code == 0, result.output
    assert "122 new" in result.output

    result = runner.invoke(app, ["info", "--json", "--store", store])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["clips"] == 122
    assert summary["modalities"] == {"audio": 78, "video": 29, "audio+video": 15, "none": 0}
    assert summary["labels"]["sad"] == sum(r["label"] == "sad" for r in shared_rows)
    assert summary["errors"] == 0 and summary["features"] == {}
    assert isinstance(summary["version"], int)

    result = runner.invoke(
        app, ["clips", "--where", "label = 'sad' AND modality = 'audio'", "--format", "json", "--store", store])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = sum(r["label"] == "sad" and r["modalities"] == "audio" for r in shared_rows)
    assert len(rows) == expected > 0
    assert all(r["label"] == "sad" for r in rows)


def test_errors_are_one_line_and_exit_1(tmp_path):
    result = runner.invoke(app, ["info", "--store", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: no emofs store")
    assert len(result.output.strip().splitlines()) == 1

    result = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--store", str(tmp_path / "s")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_bad_where_is_one_line(shared_store):
    result = runner.invoke(app, ["clips", "--where", "colour = 'red'", "--store", shared_store.uri])
    assert result.exit_code == 1
    assert "cannot evaluate --where" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------------ the thin CLI itself
def _command_paths():
    """Every group and command of the app as (argv prefix, is_a_command) pairs."""
    import typer

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        yield path, subs is None
        for name, sub in (subs or {}).items():
            yield from walk(sub, path + [name])

    return list(walk(typer.main.get_command(app), []))


def test_every_command_has_help_with_examples():
    paths = _command_paths()
    assert sum(leaf for _, leaf in paths) == 28  # llm import-checkpoint joined
    for path, leaf in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        if leaf:
            assert "Examples:" in result.output and "emofs " in result.output, path


def test_train_head_and_ablate_share_one_option_list():
    import typer

    root = typer.main.get_command(app)
    head = [p.opts for p in root.commands["train"].commands["head"].params]
    ablate = [p.opts for p in root.commands["ablate"].params]
    shared = [o for o in head if o not in (["--workers"], ["--json"])]
    assert [o for o in ablate if o != ["--format", "-f"]] == shared
    assert head[0] == ["--encoders", "-e"] and head.index(["--workers"]) == head.index(["--preload"]) + 1


def test_cli_stays_thin():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert len((root / "cli.py").read_text().splitlines()) < 80
    for path in sorted((root / "commands").glob("*.py")):
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
                   or isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "__all__"
                   for n in tree.body), f"{path.name} has no __all__"
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_command"):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                lines = body[-1].end_lineno - body[0].lineno + 1
                assert lines <= 40, f"{path.name}:{node.name} body is {lines} lines"


def test_import_cli_loads_no_heavy_library():
    import subprocess
    import sys

    code = ("import sys, cli; heavy = [m for m in ('torch', 'lightning', 'faiss', 'transformers') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_debug_env_shows_the_traceback(tmp_path, monkeypatch):
    from featurestore.errors import EmofsError

    monkeypatch.setenv("EMOFS_DEBUG", "1")
    result = runner.invoke(app, ["info", "--store", str(tmp_path / "missing")])
    assert result.exit_code == 1 and isinstance(result.exception, EmofsError)


def test_vocabulary_from_store(tmp_path):
    import pyarrow as pa
    import pytest

    from featurestore import Store
    from featurestore.errors import InputError
    from llm.tiny import vocabulary_from_store

    store = Store(tmp_path / "s", create=True)
    store.upsert_clips(pa.table({"clip_id": ["a", "b", "c"], "label": ["sad", "happy", None],
                                 "subtitle": ["hello there", None, "hello there"]}))
    words, texts = vocabulary_from_store(store)
    assert words == ["happy", "sad"] and texts == ["hello there"]
    assert vocabulary_from_store(store, ["angry"])[0] == ["angry"]
    empty = Store(tmp_path / "e", create=True)
    empty.upsert_clips(pa.table({"clip_id": ["x"], "label": pa.array([None], pa.string())}))
    with pytest.raises(InputError, match="--labels"):
        vocabulary_from_store(empty)
