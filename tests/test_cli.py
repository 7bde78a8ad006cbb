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
