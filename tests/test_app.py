"""The analyst app's JSON API (Starlette TestClient): clips, similar, media with ranges,
uploads, corrections and undo, map, runs, and the security cases (traversal, token, Host,
CORS, errors as one line)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app as cli_app
from featurestore import Store

starlette = pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from workflows.app import AppConfig, create_app  # noqa: E402

runner = CliRunner()
BASE = "http://127.0.0.1:8765"
#: What the page sends with every write: its own origin (writes without it are refused).
PAGE = {"Origin": BASE}
RUN = "centroid"


def _centroid_predictions(store: Store) -> None:
    """A real (if simple) model: nearest class centroid of the train split's eGeMAPS vectors."""
    from featurestore.features import read_features
    from featurestore.predictions import write_predictions

    matrix = read_features(store, "egemaps")
    x = matrix.vectors  # (N, 88)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    clips = store.clips(columns=["clip_id", "label", "split"])
    info = {r["clip_id"]: r for r in clips.to_dicts()}
    labels = sorted({info[c]["label"] for c in matrix.clip_ids if info[c]["label"]})
    centroids = np.stack([x[[info[c]["label"] == lab for c in matrix.clip_ids]].mean(axis=0) for lab in labels])
    dist = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)  # (N, C)
    logits = -dist / dist.std()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)  # (N, C)
    write_predictions(store, RUN, matrix.clip_ids, probs, labels, model_fingerprint="centroid-test")


@pytest.fixture(scope="module")
def app_store(shared_store, tmp_path_factory) -> Store:
    """The shared clips with real eGeMAPS features, a flat index and one prediction run."""
    from extractors import extract
    from featurestore.index import IndexConfig, build_index

    root = tmp_path_factory.mktemp("app") / "store"
    shutil.copytree(shared_store.uri, root)
    store = Store(root)
    extract(store, ["egemaps"], where="has_audio", progress=False, workers=1)
    build_index(store, IndexConfig(["egemaps"]), progress=False)
    _centroid_predictions(store)
    return store


@pytest.fixture()
def client(app_store) -> TestClient:
    return TestClient(create_app(AppConfig(store=app_store.uri), store=app_store), base_url=BASE, headers=PAGE)


def _cli_error(args: list[str]) -> str:
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 1, result.output
    return result.output.strip().splitlines()[-1]


def _slash_clip(store: Store) -> str:
    ids = store.clips(where="has_audio AND clip_id LIKE '%/%'", columns=["clip_id"])["clip_id"].to_list()
    from featurestore.index import load_index

    indexed = load_index(store, "egemaps").row_of()
    return next(c for c in ids if c in indexed)


# ------------------------------------------------------------------------ clips
def test_clips_filter_paging_and_run_filters(client, app_store):
    sad = app_store.clips(where="label = 'sad'")
    body = client.get("/api/clips", params={"where": "label = 'sad'", "limit": 5}).json()
    assert body["total"] == sad.height > 5 and len(body["rows"]) == 5
    assert all(r["label"] == "sad" for r in body["rows"]) and "uri" in body["rows"][0]
    second = client.get("/api/clips", params={"where": "label = 'sad'", "limit": 5, "offset": 5}).json()
    assert not {r["clip_id"] for r in body["rows"]} & {r["clip_id"] for r in second["rows"]}

    wrong = client.get("/api/clips", params={"run": RUN, "wrong": "1", "limit": 1000}).json()
    assert wrong["total"] > 0
    assert all(r["label"] != r["prediction"] and r["prediction"] for r in wrong["rows"])
    confident = client.get("/api/clips", params={"run": RUN, "pred_label": "sad", "conf_min": 0.3,
                                                 "limit": 1000}).json()
    assert all(r["prediction"] == "sad" and r["confidence"] >= 0.3 for r in confident["rows"])


def test_bad_parameters_are_the_clis_one_line_json(client, app_store):
    clip = _slash_clip(app_store)
    answer = client.get(f"/api/similar/{clip}", params={"k": 0})
    assert answer.status_code == 400
    assert "error: " + answer.json()["error"] == _cli_error(["similar", clip, "-k", "0", "--store", app_store.uri])
    bad_where = "label = = 'sad'"
    answer = client.get("/api/clips", params={"where": bad_where})
    assert answer.status_code == 400
    assert "error: " + answer.json()["error"] == _cli_error(["clips", "--where", bad_where, "--store", app_store.uri])
    answer = client.get("/api/clips", params={"run": "no-such-run"})
    assert answer.status_code == 404 and "unknown prediction run 'no-such-run'" in answer.json()["error"]
    for url in ("/api/similar/nope.wav", "/api/clip/nope.wav", "/api/runs/nope", "/api/nothing"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert "\n" not in answer.json()["error"] and "Traceback" not in answer.text
    assert client.get("/api/clips", params={"limit": "many"}).status_code == 400


def test_internal_errors_are_json_without_traceback(app_store, monkeypatch):
    import workflows.app.api as api

    def boom(store):
        raise RuntimeError("secret internals\n  File x.py, line 1")

    monkeypatch.setattr(api, "store_info", boom)
    client = TestClient(create_app(AppConfig(store=app_store.uri), store=app_store), base_url=BASE,
                        raise_server_exceptions=False)
    answer = client.get("/api/info")
    assert answer.status_code == 500
    assert answer.json()["error"].startswith("internal error (RuntimeError)")
    assert "secret" not in answer.text and "Traceback" not in answer.text


# ---------------------------------------------------------------------- similar
def test_similar_encoded_and_plain_ids_match_the_library(client, app_store):
    from workflows.similar import find_similar

    clip = _slash_clip(app_store)
    plain = client.get(f"/api/similar/{clip}", params={"k": 6, "run": RUN}).json()
    encoded = client.get("/api/similar/" + quote(clip, safe=""), params={"k": 6, "run": RUN}).json()
    assert plain == encoded
    expected = find_similar(app_store, clip, k=6).frame
    assert [r["clip_id"] for r in plain["results"]] == expected["clip_id"].to_list()
    assert [r["score"] for r in plain["results"]] == pytest.approx(expected["score"].to_list())
    assert all(r["prediction"] is not None and "label" in r for r in plain["results"])
    filtered = client.get(f"/api/similar/{clip}", params={"k": 4, "where": "label = 'sad'"}).json()
    assert len(filtered["results"]) == 4 and {r["label"] for r in filtered["results"]} == {"sad"}
    # a stored relative path resolves to its clip; a path outside the store never does
    rel = app_store.clips(where=f"clip_id = '{clip}'")["rel_path"][0]
    assert client.get(f"/api/similar/{rel}", params={"k": 2}).status_code == 200
    assert client.get("/api/similar//etc/passwd").status_code == 404


def test_clip_page_shows_predictions_with_probabilities(client, app_store):
    clip = _slash_clip(app_store)
    body = client.get("/api/clip/" + quote(clip, safe="")).json()
    assert body["clip"]["clip_id"] == clip
    (pred,) = body["predictions"]
    assert pred["run"] == RUN and sum(pred["probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert pred["label"] == max(pred["probs"], key=pred["probs"].get)


# ------------------------------------------------------------------------ media
def test_media_full_and_range_requests(client, app_store):
    row = app_store.clips(where="has_video AND uri LIKE '%.mp4'", limit=1).to_dicts()[0]
    data = Path(row["uri"]).read_bytes()
    full = client.get("/media/" + row["clip_id"])
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes" and full.headers["content-type"] == "video/mp4"
    part = client.get("/media/" + quote(row["clip_id"], safe=""), headers={"Range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == data[100:1124]
    assert part.headers["content-range"] == f"bytes 100-1123/{len(data)}"
    tail = client.get("/media/" + row["clip_id"], headers={"Range": f"bytes={len(data) - 10}-"})
    assert tail.status_code == 206 and tail.content == data[-10:]


def test_media_serves_only_registered_files_inside_the_roots(tmp_path, media_samples):
    root = tmp_path / "root"
    root.mkdir()
    inside = root / "ok.wav"
    shutil.copyfile(media_samples["wav"], inside)
    outside = tmp_path / "outside.wav"
    shutil.copyfile(media_samples["wav"], outside)
    os.symlink(outside, root / "link.wav")
    store = Store(tmp_path / "store")
    store.upsert_clips(pa.table({
        "clip_id": ["ok.wav", "link.wav", "gone.wav"], "root": [str(root)] * 3,
        "uri": [str(inside), str(root / "link.wav"), str(root / "gone.wav")],
        "has_media": [True] * 3, "has_audio": [True] * 3}))
    client = TestClient(create_app(AppConfig(store=store.uri), store=store), base_url=BASE, headers=PAGE)
    assert client.get("/media/ok.wav").content == inside.read_bytes()
    for url in ["/media/link.wav", "/media/gone.wav", "/media/../outside.wav", "/media/%2e%2e/outside.wav",
                "/media/..%2Foutside.wav", "/media/%2F" + quote(str(outside)[1:], safe=""),
                "/media/" + str(outside), "/media/" + str(inside), "/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                "/media/ok.wav/../../outside.wav"]:
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert answer.content != outside.read_bytes()


def test_face_thumbnail_is_a_jpeg_cached_in_the_store(client, app_store):
    row = app_store.clips(where="has_video", limit=1).to_dicts()[0]
    first = client.get("/thumb/" + row["clip_id"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content[:3] == b"\xff\xd8\xff"
    cached = list((Path(app_store.uri) / "app" / "thumbs").glob("*.jpg"))
    assert len(cached) >= 1
    assert client.get("/thumb/" + row["clip_id"]).content == first.content
    audio = app_store.clips(where="NOT has_video", limit=1)["clip_id"][0]
    assert client.get("/thumb/" + audio).status_code == 404


# ---------------------------------------------------------------------- security
def test_token_host_and_cors(app_store, monkeypatch):
    from featurestore.errors import InputError
    from workflows.app.config import RUNS_ENV

    monkeypatch.setenv(RUNS_ENV, str(Path(app_store.uri) / "runs-made-later"))  # may not exist yet
    assert AppConfig(store=app_store.uri).runs_dir.endswith("runs-made-later")
    monkeypatch.delenv(RUNS_ENV)

    with pytest.raises(InputError, match="--token"):
        AppConfig(store=app_store.uri, host="0.0.0.0")
    with pytest.raises(InputError, match="--runs .* is not a folder"):
        AppConfig(store=app_store.uri, runs_dir=str(Path(app_store.uri) / "no-runs-here"))
    open_client = TestClient(create_app(AppConfig(store=app_store.uri), store=app_store), base_url=BASE, headers=PAGE)
    assert open_client.get("/api/info", headers={"Host": "evil.example:8765"}).status_code == 421
    answer = open_client.get("/api/info", headers={"Origin": "http://evil.example"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    preflight = open_client.options("/api/corrections", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    cross = open_client.post("/api/corrections", headers={"Origin": "http://evil.example"},
                             json={"clip_id": "x", "who": "me", "label": "sad"})
    assert cross.status_code == 403

    config = AppConfig(store=app_store.uri, host="0.0.0.0", token="s3cret-token")
    client = TestClient(create_app(config, store=app_store), base_url="http://192.0.2.1:8765")
    assert client.get("/api/info").status_code == 401
    assert client.get("/media/x").status_code == 401
    assert client.get("/", params={"token": "wrong-token"}).status_code == 401
    assert client.get("/api/info", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    page = client.get("/", params={"token": "s3cret-token"})
    assert page.status_code == 200 and "emofs_token=" in page.headers["set-cookie"]
    assert "HttpOnly" in page.headers["set-cookie"]
    assert client.get("/api/info").status_code == 200  # the cookie carries it now


def test_openapi_schema_and_no_remote_assets(client):
    schema = client.get("/api/openapi.json").json()
    for path in ("/api/clips", "/api/similar/{clip_id}", "/media/{clip_id}", "/api/corrections"):
        assert path in schema["paths"], path
    assert client.get("/docs").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    from workflows.app.server import STATIC_DIR

    for asset in STATIC_DIR.iterdir():
        text = asset.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, asset.name
        assert client.get(f"/static/{asset.name}").status_code == 200


# ------------------------------------------------------------------------ uploads
def test_upload_search_extracts_on_the_fly_and_cleans_up(client, app_store, media_samples, tmp_path):
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("emofs-app-upload-*"))
    clips_before = app_store.clips().height
    data = media_samples["wav"].read_bytes()
    answer = client.post("/api/upload", params={"name": "query.wav", "k": 3}, content=data)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 3 and results[0]["score"] > 0.99  # the same clip is in the store
    assert app_store.clips().height == clips_before  # never added
    bad = client.post("/api/upload", params={"name": "fake.wav"}, content=b"RIFF not really a wav")
    assert bad.status_code == 422 and "cannot read the uploaded file" in bad.json()["error"]
    assert client.post("/api/upload", params={"name": "notes.txt"}, content=b"hi").status_code == 415
    small = TestClient(create_app(AppConfig(store=app_store.uri, max_upload_mb=0.001), store=app_store),
                       base_url=BASE, headers=PAGE)
    assert small.post("/api/upload", params={"name": "q.wav"}, content=data).status_code == 413
    assert client.get("/api/info").status_code == 200  # the server keeps running
    assert set(Path(tempfile.gettempdir()).glob("emofs-app-upload-*")) == before


# -------------------------------------------------------------------- CSRF and bodies
def test_writes_need_the_pages_own_origin_and_json(app_store):
    clip = _slash_clip(app_store)
    before = app_store.clips(where=f"clip_id = '{clip}'")["label"][0]
    bare = TestClient(create_app(AppConfig(store=app_store.uri), store=app_store), base_url=BASE)
    change = {"clip_id": clip, "who": "evil", "label": "k3_6"}
    form = '{"clip_id": "%s", "who": "evil", "label": "k3_6", "x": "="}' % clip
    # the probe: a sandboxed frame on another port posts a text/plain form (Origin: null)
    forged = bare.post("/api/corrections", content=form.encode(),
                       headers={"Origin": "null", "Content-Type": "text/plain"})
    assert forged.status_code == 403 and "Origin: null" in forged.json()["error"]
    assert bare.post("/api/corrections", json=change).status_code == 403  # no Origin, no Referer
    assert bare.post("/api/corrections", json=change,
                     headers={"Origin": "http://127.0.0.1:9999"}).status_code == 403  # another port
    assert bare.post("/api/corrections", json=change,
                     headers={"Referer": "http://evil.example/page"}).status_code == 403
    # the page's own origin, but a form encoding or no JSON type: refused before reading
    assert bare.post("/api/corrections", content=form.encode(),
                     headers={"Origin": BASE, "Content-Type": "text/plain"}).status_code == 415
    assert bare.post("/api/corrections", content=form.encode(), headers={"Origin": BASE}).status_code == 415
    assert app_store.clips(where=f"clip_id = '{clip}'")["label"][0] == before  # nothing changed
    # a Referer from the page itself is enough (clients that strip Origin)
    ok = bare.post("/api/corrections", json={**change, "label": before or "neutral"},
                   headers={"Referer": BASE + "/?q=1"})
    assert ok.status_code in (200, 201)

    config = AppConfig(store=app_store.uri, token="s3cret-token")
    with_token = TestClient(create_app(config, store=app_store), base_url=BASE)
    # the cookie alone travels with a forged request too: a write needs the header or the Origin
    with_token.cookies.set("emofs_token", "s3cret-token")
    assert with_token.post("/api/corrections", json=change).status_code == 403
    header_write = with_token.post("/api/corrections", json={**change, "label": before or "neutral"},
                                   headers={"X-Emofs-Token": "s3cret-token"})
    assert header_write.status_code in (200, 201)


def test_bodies_are_bounded_and_fields_typed(client, app_store):
    from workflows.app.security import JSON_BODY_LIMIT

    clip = _slash_clip(app_store)
    before = app_store.clips(where=f"clip_id = '{clip}'")["label"][0]
    huge = b'{"clip_id": "' + b"x" * (JSON_BODY_LIMIT + 1) + b'"}'
    declared = client.post("/api/corrections", content=huge, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "limit" in declared.json()["error"]

    def chunks():  # no Content-Length: counted while it arrives
        for _ in range(40):
            yield b" " * 4096

    streamed = client.post("/api/corrections", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    deep = b"[" * 100_000 + b"]" * 100_000
    small = TestClient(create_app(AppConfig(store=app_store.uri), store=app_store), base_url=BASE,
                       headers=PAGE)
    nested = small.post("/api/corrections", content=deep[:30000] + deep[-30000:],
                        headers={"Content-Type": "application/json"})
    assert nested.status_code == 400
    for field, value in [("label", {"a": 1}), ("label", 12345), ("who", ["x"]), ("clip_id", 3),
                         ("tags", {"a": 1}), ("tags", [1, 2])]:
        body = {"clip_id": clip, "who": "Ana", "label": "sad", field: value}
        answer = client.post("/api/corrections", json=body)
        assert answer.status_code == 400 and f'"{field}"' in answer.json()["error"], (field, answer.text)
    nul = client.post("/api/corrections", json={"clip_id": clip, "who": "Ana", "label": "s\x00d"})
    assert nul.status_code == 400 and "one line" in nul.json()["error"]
    assert app_store.clips(where=f"clip_id = '{clip}'")["label"][0] == before


# -------------------------------------------------------------------- corrections
def test_correct_label_add_tags_undo_and_read_only(client, app_store):
    clip = _slash_clip(app_store)
    old = app_store.clips(where=f"clip_id = '{clip}'")["label"][0]
    new = "surprised" if old != "surprised" else "calm"
    answer = client.post("/api/corrections", json={"clip_id": clip, "who": "Ana", "label": new,
                                                   "tags": ["noisy", "check"]})
    assert answer.status_code == 201, answer.text
    label_fix, tag_fix = answer.json()["corrections"]
    assert (label_fix["old_value"], label_fix["new_value"], label_fix["who"]) == (old, new, "Ana")
    row = client.get("/api/clips", params={"where": f"clip_id = '{clip}'"}).json()["rows"][0]
    assert row["label"] == new and row["tags"] == "noisy,check"
    listed = runner.invoke(cli_app, ["clips", "--where", f"clip_id = '{clip}'", "--format", "json",
                                     "--store", app_store.uri])
    assert json.loads(listed.output)[0]["label"] == new
    history = client.get("/api/corrections", params={"clip_id": clip}).json()["corrections"]
    assert {h["correction_id"] for h in history} >= {label_fix["correction_id"], tag_fix["correction_id"]}

    undo = client.post(f"/api/corrections/{label_fix['correction_id']}/undo", json={"who": "Ben"})
    assert undo.status_code == 201 and undo.json()["correction"]["undoes"] == label_fix["correction_id"]
    assert app_store.clips(where=f"clip_id = '{clip}'")["label"][0] == old
    again = client.post(f"/api/corrections/{label_fix['correction_id']}/undo", json={"who": "Ben"})
    assert again.status_code == 400 and "already undone" in again.json()["error"]
    client.post(f"/api/corrections/{tag_fix['correction_id']}/undo", json={"who": "Ben"})
    assert app_store.clips(where=f"clip_id = '{clip}'")["tags"][0] is None

    assert client.post("/api/corrections", json={"clip_id": clip, "label": "sad"}).status_code == 400  # no who
    assert client.post("/api/corrections", content=b"not json",
                       headers={"Content-Type": "application/json"}).status_code == 400
    read_only = TestClient(create_app(AppConfig(store=app_store.uri, read_only=True), store=app_store),
                           base_url=BASE, headers=PAGE)
    refused = read_only.post("/api/corrections", json={"clip_id": clip, "who": "Ana", "label": "sad"})
    assert refused.status_code == 403 and "--read-only" in refused.json()["error"]
    assert app_store.clips(where=f"clip_id = '{clip}'")["label"][0] == old


# --------------------------------------------------------------------------- map
def test_map_projection_is_pca_cached_and_coloured(client, app_store):
    from featurestore.features import read_features
    from workflows.app.projection import pca_2d

    first = client.get("/api/map", params={"source": "features:egemaps", "colour": "label"}).json()
    matrix = read_features(app_store, "egemaps")
    assert first["method"] == "pca" and first["clip_ids"] == list(matrix.clip_ids)
    expected = pca_2d(matrix.vectors)  # (N, 2), up to the sign of each axis
    for axis, key in enumerate(("x", "y")):
        got = np.array(first[key])
        sign = np.sign(got @ expected[:, axis]) or 1.0
        assert np.allclose(got, sign * expected[:, axis], atol=1e-3)
    labels = dict(zip(*app_store.clips(columns=["clip_id", "label"]).to_dict(as_series=False).values()))
    assert first["values"] == [labels[c] for c in first["clip_ids"]]
    again = client.get("/api/map", params={"source": "features:egemaps", "colour": "label"}).json()
    assert again["cached"] and again["x"] == first["x"]
    assert (Path(app_store.uri) / "app" / "projections" / "features-egemaps.arrow").is_file()
    by_run = client.get("/api/map", params={"source": f"run:{RUN}", "colour": "prediction", "run": RUN}).json()
    assert len(by_run["x"]) == len(by_run["values"]) > 0 and set(by_run["values"]) <= set(labels.values())
    assert client.get("/api/map", params={"source": "features:nope"}).status_code == 404
    assert client.get("/api/map", params={"source": "bogus"}).status_code == 400
    assert client.get("/api/map", params={"source": "features:egemaps", "colour": "nope"}).status_code == 400


# -------------------------------------------------------------------------- runs
def test_runs_metrics_and_confusion_cells_list_their_clips(client, app_store):
    runs = client.get("/api/runs").json()["runs"]
    assert [r["run"] for r in runs] == [RUN] and 0 < runs[0]["accuracy"] <= 1
    report = client.get(f"/api/runs/{RUN}").json()
    cm = np.array(report["metrics"]["confusion"])
    assert cm.sum() == report["scored"] and report["metrics"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    i, j = np.unravel_index(np.argmax(cm - np.diag(np.diag(cm)) if (cm - np.diag(np.diag(cm))).any() else cm), cm.shape)
    cell = report["cells"][i][j]
    listed = client.get("/api/clips", params={"where": cell["where"], "run": RUN, "pred_label": cell["pred_label"],
                                              "limit": 1000}).json()
    assert listed["total"] == cell["count"] == cm[i, j] > 0
    assert all(r["label"] == report["vocabulary"][i] and r["prediction"] == cell["pred_label"] for r in listed["rows"])


def test_app_command_refuses_an_open_address_without_token_and_a_missing_store(tmp_path, monkeypatch):
    monkeypatch.delenv("EMOFS_APP_TOKEN", raising=False)
    line = _cli_error(["app", "--host", "0.0.0.0", "--store", str(tmp_path / "nope")])
    assert line.startswith("error: --host 0.0.0.0 exposes the store") and "--token" in line
    line = _cli_error(["app", "--store", str(tmp_path / "nope")])
    assert line.startswith("error: no emofs store")


# ------------------------------------------------------------------ run directories
@pytest.fixture(scope="module")
def cv_app(tmp_path_factory):
    """A two-modality store, a 2-fold cross-validation of an attention head under
    ``runs/`` and fold 0's predictions: the clip page's weights and the Runs page's tables."""
    from featurestore.features import write_features
    from heads import HeadConfig
    from heads.cv import cross_validate
    from heads.predict import predict_to_store

    root = tmp_path_factory.mktemp("cvapp")
    store = Store(root / "store")
    rng = np.random.default_rng(0)
    n, labels = 96, ["angry", "happy", "sad"]
    cls = np.arange(n) % 3
    ids = [f"spk{i % 4}/clip{i:03d}.wav" for i in range(n)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": [labels[c] for c in cls],
                                 "speaker": [f"spk{i % 4}" for i in range(n)]}))
    for name, dim, noise in (("aud", 12, 0.5), ("vis", 8, 3.0)):  # aud is the informative one
        x = rng.normal(0, 1, (3, dim))[cls] + rng.normal(0, noise, (n, dim))
        keep = slice(None) if name == "aud" else slice(0, n - 6)  # 6 clips have no video
        write_features(store, name, ids[keep], x[keep], {"weights": f"synthetic-{name}", "dim": dim})
    runs = root / "runs"
    cfg = HeadConfig(encoders=["aud", "vis"], split_by="speaker", folds=2, fusion="attention",
                     epochs=3, batch_size=32, hidden=16, threads=1, seed=1)
    cv = cross_validate(store, cfg, out=runs / "cv-aud-vis", quiet=True)
    predict_to_store(store, runs / "cv-aud-vis" / "fold-0")
    config = AppConfig(store=store.uri, runs_dir=str(runs))
    return store, cv, ids, TestClient(create_app(config, store=store), base_url=BASE, headers=PAGE)


def test_clip_page_shows_the_attention_heads_modality_weights(cv_app):
    from heads.predict import modality_weights

    store, cv, ids, client = cv_app
    body = client.get(f"/api/clip/{ids[0]}").json()
    (pred,) = body["predictions"]
    assert pred["run"] == "fold-0"
    weights = pred["modality_weights"]
    assert set(weights) == {"aud", "vis"} and sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    direct = modality_weights(store, cv.run_dir / "fold-0", [ids[0], ids[-1]])
    assert weights == pytest.approx(direct[ids[0]], abs=1e-6)
    # a clip without video: its absent modality weighs nothing
    missing = client.get(f"/api/clip/{ids[-1]}").json()["predictions"][0]["modality_weights"]
    assert missing["vis"] == 0.0 and missing["aud"] == pytest.approx(1.0)
    # a concat head has no weights to show
    from dataclasses import replace

    from heads.models import FusionHead
    from heads.predict import load_run

    run = load_run(cv.run_dir / "fold-1")
    concat = replace(run, head=FusionHead([12, 8], 3, hidden=16, fusion="concat").eval())
    assert modality_weights(store, concat, ids[:2]) is None


def test_runs_page_lists_cross_validation_folds_with_mean_and_std(cv_app):
    store, cv, ids, client = cv_app
    (table,) = client.get("/api/runs").json()["cv"]
    assert table["dir"] == "cv-aud-vis" and table["folds"] == 2
    assert [r["fold"] for r in table["per_fold"]] == [0, 1]
    for figure in ("uar", "accuracy", "weighted_f1"):
        values = [r[figure] for r in table["per_fold"]]
        assert table["mean"][figure] == pytest.approx(np.mean(values), abs=1e-4)
        assert table["std"][figure] == pytest.approx(np.std(values), abs=1e-4)
    run = client.get("/api/runs/fold-0").json()
    assert run["cv"]["dir"] == "cv-aud-vis" and run["cv"]["per_fold"] == table["per_fold"]
    assert client.get(f"/api/runs/{RUN}").status_code == 404  # not a run of this store
