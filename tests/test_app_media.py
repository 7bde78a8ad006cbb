"""The app's media: browser renditions (probe -> direct / remux / transcode, made once per
file and cached in the store, served with ranges), the original as a download, waveform
peaks, corrupt files as one JSON line, the roots check, an ``s3://`` store's media, and
``emofs app renditions``. Real shared clips (one per kind, copied into tmp_path) and tiny
files written here with PyAV for the codec combinations the shared data lacks."""

from __future__ import annotations

import json
import os
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app as cli_app
from conftest import copy_to
from featurestore import Store

starlette = pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from workflows.app import AppConfig, create_app  # noqa: E402
from workflows.app import renditions  # noqa: E402
from workflows.app.renditions import Plan, Probe, StreamInfo, plan_for, probe, render  # noqa: E402

BASE = "http://127.0.0.1:8765"
KINDS = ("flv", "avi", "mp4", "wav", "mp3")


def _client(store: Store) -> TestClient:
    return TestClient(create_app(AppConfig(store=store.uri), store=store), base_url=BASE, headers={"Origin": BASE})


@pytest.fixture(scope="module")
def samples(shared_data) -> dict[str, Path]:
    return {
        "flv": next((shared_data / "crema_d").glob("*.flv")),
        "avi": next((shared_data / "ravdess_actor05" / "facecrop").glob("*.avi")),
        "mp4": next((shared_data / "crema_d" / "mp4").glob("*.mp4")),
        "wav": next((shared_data / "crema_d" / "wav16k").glob("*.wav")),
        "mp3": next((shared_data / "crema_d").glob("*.mp3")),
    }


@pytest.fixture()
def media_store(tmp_path, samples) -> Store:
    """One real clip of each kind, ingested (clip ids: ``clip.<kind>``)."""
    from extractors import ingest

    root = tmp_path / "root"
    for kind, src in samples.items():
        copy_to(src, root / f"clip.{kind}")
    store = Store(tmp_path / "store")
    ingest([root], store, progress=False)
    return store


def _row(store: Store, clip_id: str) -> dict:
    return store.clips(where=f"clip_id = '{clip_id}'").to_dicts()[0]


def _streams(data_or_path) -> tuple[str, list[tuple[str, str]]]:
    import io

    import av

    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    with av.open(source) as c:
        return c.format.name, [(s.type, s.codec_context.codec.canonical_name) for s in c.streams]


def _synth(path: Path, video: str | None, audio: str | None, fmt: str | None = None,
           pix_fmt: str = "yuv420p") -> Path:
    """A 0.4 s test file written with PyAV: a moving gradient and a 440 Hz tone."""
    import av

    with av.open(str(path), "w", format=fmt) as out:
        vs = aus = None
        if video:
            vs = out.add_stream(video, rate=25)
            vs.width, vs.height, vs.pix_fmt = 64, 48, pix_fmt
        if audio:
            aus = out.add_stream(audio, rate=48000)
            aus.layout = "stereo"
        for i in range(10):
            if vs is not None:
                img = np.full((48, 64, 3), (i * 20) % 255, np.uint8)  # (H, W, 3)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 25)
                out.mux(vs.encode(frame.reformat(format=pix_fmt)))
            if aus is not None:
                t = (np.arange(1920) + i * 1920) / 48000
                tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = 48000, i * 1920, Fraction(1, 48000)
                out.mux(aus.encode(frame))
        for s in (vs, aus):
            if s is not None:
                out.mux(s.encode(None))
    return path


# ------------------------------------------------------------------------ probe and plan
def test_probe_decides_direct_remux_or_transcode(samples, tmp_path):
    plans = {kind: plan_for(probe(str(path))) for kind, path in samples.items()}
    assert {k: p.action for k, p in plans.items()} == {
        "flv": "transcode", "avi": "transcode", "mp4": "direct", "wav": "direct", "mp3": "direct"}
    # flv: VP6 video re-encoded, its MP3 audio copied; the MJPEG avi has no audio track
    assert (plans["flv"].container, plans["flv"].video, plans["flv"].audio) == ("mp4", "libx264", "copy")
    assert (plans["avi"].video, plans["avi"].audio) == ("libx264", None)

    made = {
        "h264_aac.mkv": ("libx264", "aac", None, "remux", "mp4"),
        "h264_mp3.avi": ("libx264", "libmp3lame", None, "remux", "mp4"),
        "vp9_opus.mkv": ("libvpx-vp9", "libopus", None, "remux", "webm"),
        "h264_aac.mov": ("libx264", "aac", "mov", "remux", "mp4"),
        "h264_pcm.mkv": ("libx264", "pcm_s16le", None, "transcode", "mp4"),
        "mpeg2.mkv": ("mpeg2video", "aac", None, "transcode", "mp4"),
        "vp9_opus.webm": ("libvpx-vp9", "libopus", None, "direct", None),
        "flac.flac": (None, "flac", None, "direct", None),
    }
    for name, (video, audio, fmt, action, container) in made.items():
        plan = plan_for(probe(str(_synth(tmp_path / name, video, audio, fmt))))
        assert (plan.action, plan.container) == (action, container), (name, plan)
    # the mixed case copies what plays: H.264 kept, PCM re-encoded to AAC
    mixed = plan_for(probe(str(tmp_path / "h264_pcm.mkv")))
    assert (mixed.video, mixed.audio) == ("copy", "aac")

    # H.264 the browser cannot decode (4:4:4) in an mp4 is re-encoded, not served
    p444 = Probe("mov,mp4,m4a,3gp,3g2,mj2", ".mp4", StreamInfo("h264", "yuv444p", 64, 48))
    assert plan_for(p444).action == "transcode" and plan_for(p444).video == "libx264"
    # without libx264 in PyAV's build, renditions are VP9 / Opus WebM
    flv = probe(str(samples["flv"]))
    assert plan_for(flv, encoder="libvpx-vp9") == Plan(
        "transcode", "webm", "libvpx-vp9", "libopus", plan_for(flv, encoder="libvpx-vp9").reason)


def test_remux_copies_packets_and_transcode_bounds_the_size(samples, tmp_path):
    for name, video, audio in (("a.avi", "libx264", "libmp3lame"), ("b.mkv", "libvpx-vp9", "libopus")):
        src = _synth(tmp_path / name, video, audio)
        plan = plan_for(probe(str(src)))
        out = tmp_path / f"{name}.{plan.container}"
        assert render(str(src), str(out), plan) == plan  # no fallback: the copy was accepted
        fmt, streams = _streams(out)
        assert streams == _streams(src)[1] and plan.container in fmt
    # a 1280x720 MPEG-4 part 2 clip transcoded: long side 720, 8-bit 4:2:0 H.264
    import av

    src_720 = tmp_path / "hd.mkv"
    with av.open(str(src_720), "w") as out:
        vs = out.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = 1280, 720, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((720, 1280, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(frame.reformat(format="yuv420p")))
        out.mux(vs.encode(None))
    out_path = tmp_path / "hd.mp4"
    render(str(src_720), str(out_path), plan_for(probe(str(src_720))))
    with av.open(str(out_path)) as c:
        v = c.streams.video[0].codec_context
        assert (v.codec.canonical_name, v.width, v.pix_fmt) == ("h264", 720, "yuv420p")
        assert abs(v.height - 405) <= 1 and v.height % 2 == 0


# ------------------------------------------------------------------------ cache, ranges, original
def test_rendition_made_once_then_served_from_the_store(media_store, monkeypatch):
    calls = []
    real_render = renditions.render

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real_render(*args, **kwargs)

    monkeypatch.setattr(renditions, "render", counting)
    client = _client(media_store)
    first = client.get("/media/clip.flv")
    assert first.status_code == 200 and first.headers["content-type"] == "video/mp4"
    assert first.headers["x-emofs-rendition"] == "transcode" and first.content[4:8] == b"ftyp"
    assert _streams(first.content)[1] == [("video", "h264"), ("audio", "mp3")]
    sha = _row(media_store, "clip.flv")["sha256"]
    cached = Path(media_store.uri) / "app" / "renditions" / f"{sha}.{renditions.PROFILE}.mp4"
    assert cached.read_bytes() == first.content
    stamp = cached.stat().st_mtime_ns
    # a second request, and one from a fresh process (no in-memory state): the same file
    monkeypatch.setattr(renditions, "_MADE", set())
    monkeypatch.setattr(renditions, "_PLANS", {})
    second = client.get("/media/clip.flv")
    assert second.content == first.content and len(calls) == 1
    assert cached.stat().st_mtime_ns == stamp
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".tmp-")]

    # concurrent first requests for one file wait for one encode
    barrier = threading.Barrier(4)
    answers = []

    def fetch():
        barrier.wait()
        answers.append(client.get("/media/clip.avi"))

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * 4 and len({a.content for a in answers}) == 1
    assert calls.count(str(Path(_row(media_store, "clip.avi")["uri"]).resolve())) == 1


def test_ranges_on_a_rendition_and_the_original_as_download(media_store):
    client = _client(media_store)
    whole = client.get("/media/clip.avi").content
    part = client.get("/media/clip.avi", headers={"Range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == whole[100:1124]
    assert part.headers["content-range"] == f"bytes 100-1123/{len(whole)}"
    tail = client.get("/media/clip.avi", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole[-10:]
    assert client.get("/media/clip.avi", headers={"Range": f"bytes={len(whole)}-"}).status_code == 416
    original = client.get("/media/clip.avi", params={"original": "1"})
    assert original.content == Path(_row(media_store, "clip.avi")["uri"]).read_bytes()
    assert original.headers["content-disposition"].startswith("attachment;")
    assert original.headers["content-type"] == "video/x-msvideo"


def test_playable_files_are_served_as_they_are(media_store):
    client = _client(media_store)
    for kind in ("mp4", "wav", "mp3"):
        answer = client.get(f"/media/clip.{kind}")
        assert answer.content == Path(_row(media_store, f"clip.{kind}")["uri"]).read_bytes(), kind
        assert "x-emofs-rendition" not in answer.headers
    assert not (Path(media_store.uri) / "app" / "renditions").exists()


def test_corrupt_media_is_one_json_line_saying_what_to_do(media_store):
    # the file was fine at ingest and is garbage now (a disk error, a half-copied sync)
    Path(_row(media_store, "clip.flv")["uri"]).write_bytes(b"FLV\x01" + os.urandom(4000))
    Path(_row(media_store, "clip.mp3")["uri"]).write_bytes(b"\x00" * 3000)
    client = _client(media_store)
    for clip in ("clip.flv", "clip.mp3"):
        for url in (f"/media/{clip}", f"/peaks/{clip}"):
            answer = client.get(url)
            assert answer.status_code == 422, (url, answer.text)
            body = answer.json()
            assert len(body["error"].splitlines()) == 1 and "?original=1" in body["error"], body
            assert "Traceback" not in answer.text
    assert client.get("/media/clip.flv", params={"original": "1"}).status_code == 200  # still downloadable


def test_a_file_outside_the_roots_is_404_and_never_rendered(tmp_path, samples):
    root = tmp_path / "root"
    inside = copy_to(samples["avi"], root / "ok.avi")
    outside = copy_to(samples["flv"], tmp_path / "outside.flv")
    os.symlink(outside, root / "link.flv")
    store = Store(tmp_path / "store")
    store.upsert_clips(pa.table({
        "clip_id": ["ok.avi", "link.flv", "out.flv", "bucket.flv", "dots.flv"], "root": [str(root)] * 5,
        "uri": [str(inside), str(root / "link.flv"), str(outside), "s3://emofs-test/raw/a.flv",
                f"{root}/../outside.flv"],
        "sha256": ["a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64],
        "has_media": [True] * 5, "has_video": [True] * 5}))
    client = _client(store)
    assert client.get("/media/ok.avi").headers["x-emofs-rendition"] == "transcode"
    for clip in ("link.flv", "out.flv", "bucket.flv", "dots.flv", "../outside.flv"):
        for route in ("media", "peaks", "thumb"):
            answer = client.get(f"/{route}/{clip}")
            assert answer.status_code == 404, (route, clip)
            assert answer.content != outside.read_bytes()
    made = list((Path(store.uri) / "app" / "renditions").iterdir())
    assert [p.name.split(".")[0] for p in made] == ["a" * 64]


def test_waveform_peaks_are_cached_and_match_the_audio(media_store):
    client = _client(media_store)
    peaks = client.get("/peaks/clip.wav").json()
    row = _row(media_store, "clip.wav")
    assert peaks["duration"] == pytest.approx(row["duration_s"], abs=0.05)
    assert 100 <= peaks["bins"] <= 1000 and len(peaks["min"]) == len(peaks["max"]) == peaks["bins"]
    assert all(lo <= hi for lo, hi in zip(peaks["min"], peaks["max"]))
    assert 0 < max(peaks["max"]) <= 1 and -1 <= min(peaks["min"]) < 0
    cached = list((Path(media_store.uri) / "app" / "peaks").glob(f"{row['sha256']}.*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_bytes()) == peaks
    assert client.get("/peaks/clip.flv").json()["bins"] > 100  # audio of a video
    assert client.get("/peaks/clip.avi").status_code == 404  # no audio track


def test_renditions_command_makes_them_ahead_then_finds_them(media_store):
    runner = CliRunner()
    first = runner.invoke(cli_app, ["app", "renditions", "--store", media_store.uri, "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["clips"], report["made"], report["direct"], report["failed"]) == (5, 2, 3, [])
    assert report["bytes"] > 0
    again = json.loads(runner.invoke(cli_app, ["app", "renditions", "--store", media_store.uri, "--json",
                                               "--where", "clip_id = 'clip.flv'"]).stdout)
    assert (again["clips"], again["cached"], again["made"]) == (1, 1, 0)
    wrong = runner.invoke(cli_app, ["app", "render", "--store", media_store.uri])
    assert wrong.exit_code != 0 and "renditions" in wrong.output


# ------------------------------------------------------------------------ s3:// stores
def test_media_of_an_s3_store_served_with_ranges(s3, tmp_path, samples):
    import pyarrow.fs as pafs

    from extractors import ingest
    from featurestore.remote import filesystem

    raw = tmp_path / "raw"
    for kind in ("avi", "wav"):
        copy_to(samples[kind], raw / f"clip.{kind}")
    fs, prefix = filesystem(f"{s3}/raw")
    for file in raw.iterdir():
        with fs.open_output_stream(f"{prefix}/{file.name}") as out:
            out.write(file.read_bytes())
    local = tmp_path / "local"
    copy_to(samples["flv"], local / "clip.flv")
    store = Store(f"{s3}/store")
    ingest([f"{s3}/raw"], store, progress=False)  # media in the bucket
    ingest([local], store, progress=False)  # local media, the store in the bucket
    client = _client(store)

    wav = client.get("/media/clip.wav")
    assert wav.status_code == 200 and wav.content == (raw / "clip.wav").read_bytes()
    part = client.get("/media/clip.wav", headers={"Range": "bytes=44-1067"})
    assert part.status_code == 206 and part.content == wav.content[44:1068]
    assert part.headers["content-range"] == f"bytes 44-1067/{len(wav.content)}"
    for clip in ("clip.avi", "clip.flv"):  # renditions kept in the bucket
        video = client.get(f"/media/{clip}")
        assert video.status_code == 200 and video.headers["x-emofs-rendition"] == "transcode"
        assert _streams(video.content)[1][0] == ("video", "h264")
        ranged = client.get(f"/media/{clip}", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == video.content[10:20]
    kept = fs.get_file_info(pafs.FileSelector(f"{s3.split('://')[1]}/store/app/renditions"))
    assert len(kept) == 2
    assert client.get("/media/clip.avi", params={"original": "1"}).content == (raw / "clip.avi").read_bytes()
    assert client.get("/peaks/clip.wav").json()["bins"] > 100

    # an object outside the ingested bucket prefix, or a key with '..', is refused
    with fs.open_output_stream(f"{s3.split('://')[1]}/secret/x.wav") as out:
        out.write((raw / "clip.wav").read_bytes())
    store.upsert_clips(pa.table({
        "clip_id": ["evil.wav", "dots.wav"], "root": [f"{s3}/raw"] * 2,
        "uri": [f"{s3}/secret/x.wav", f"{s3}/raw/../secret/x.wav"],
        "has_media": [True] * 2, "has_audio": [True] * 2}))
    for clip in ("evil.wav", "dots.wav"):
        assert client.get(f"/media/{clip}").status_code == 404
        assert client.get(f"/media/{clip}", params={"original": "1"}).status_code == 404
