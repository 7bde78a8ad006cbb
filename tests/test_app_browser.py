"""The analyst page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium against the app served by uvicorn on 127.0.0.1.

Load, search a shared clip and see k cards, play one and watch its currentTime advance,
filter (and keep the filter in the URL), correct a label and find it in /api/clips, open
the map, hover and click a point, click through a confusion-matrix cell, and drop a media
file on the search box. Every shared clip's player (44 videos: mp4, flv, avi; 78 audio:
wav, mp3) reaches ``loadedmetadata`` with no media error, FLV and AVI through the server's
renditions; an audio player's waveform strip seeks where it is clicked; an ``s3://``
store's clips play from the local S3 server. Screenshots (one per page: search, clip, map,
runs) go to the test's tmp folder and to tests/artifacts/ (git-ignored), and to docs/
with ``EMOFS_DOCS_SCREENSHOTS=1``. Skips, saying why, where Chromium or its driver is not
installed (`.ci/run` installs them).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from test_app import RUN, _slash_clip, app_store  # noqa: F401 - the module-scoped store fixture

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if not browser or not driver:
        pytest.skip("headless Chromium not installed: `apt-get install -y chromium chromium-driver` (.ci/run does)")
    pytest.importorskip("selenium", reason="selenium not installed: pip install -e '.[dev]'")
    return browser, driver


@pytest.fixture(scope="module")
def server(app_store):  # noqa: F811
    import uvicorn

    from workflows.app import AppConfig, create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(AppConfig(store=app_store.uri, port=port), store=app_store)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 20, what: str = "condition"):
    """Wait for ``condition``; elements replaced by a re-render while it reads them
    (stale references) count as "not yet", never as a failure."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: condition(d), message=what)


def _shot(driver, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(tmp_path / name))
    shutil.copyfile(tmp_path / name, ARTIFACTS / name)
    if os.environ.get("EMOFS_DOCS_SCREENSHOTS") == "1":  # refresh the README's pictures
        shutil.copyfile(tmp_path / name, DOCS / name)


def _cards(driver, container: str = "results"):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, f"#{container} .card")


def test_page_search_play_filter_correct_map_runs(server, browser, app_store, tmp_path):  # noqa: F811
    import httpx
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    started = time.perf_counter()
    d.get(server + "/")
    _wait(d, lambda d: d.find_element(By.ID, "store-name").text.strip(), what="the page loads the store")
    load_s = time.perf_counter() - started

    # search a shared clip: k cards
    clip = _slash_clip(app_store)
    d.find_element(By.ID, "q").send_keys(clip)
    k = d.find_element(By.ID, "k")
    k.clear()
    k.send_keys("6")
    Select(d.find_element(By.ID, "f-run")).select_by_value(RUN)
    d.find_element(By.ID, "search-button").click()
    _wait(d, lambda d: len(_cards(d)) == 6 and all(c.find_element(By.CSS_SELECTOR, ".pred").text for c in _cards(d)),
          what="6 result cards with the run's predictions")
    assert "q=" in d.current_url and "k=6" in d.current_url
    assert all(c.find_element(By.CSS_SELECTOR, ".label-chip").text for c in _cards(d))

    # playback: an audio card's element advances
    audio = _wait(d, lambda d: next((m for m in d.find_elements(By.CSS_SELECTOR, "#results audio")
                                     if m.get_attribute("data-clip").endswith(".wav")), None),
                  what="an audio card with a wav")
    played = d.execute_async_script(
        "const [m, done] = arguments; m.muted = true; m.play().then(() => done('ok'), e => done(String(e)));", audio)
    assert played == "ok", played
    _wait(d, lambda d: d.execute_script("return arguments[0].currentTime", audio) > 0.3, what="currentTime advances")
    d.execute_script("arguments[0].pause()", audio)
    _shot(d, tmp_path, "app-search.png")

    # filter by label, kept in the URL
    Select(d.find_element(By.ID, "f-label")).select_by_value("sad")
    d.find_element(By.ID, "apply-filters").click()
    _wait(d, lambda d: "label=sad" in d.current_url and _cards(d)
          and all(c.find_element(By.CSS_SELECTOR, ".label-chip").text == "sad" for c in _cards(d)),
          what="only sad neighbours")
    d.get(d.current_url)  # a shared link restores the same filtered search
    _wait(d, lambda d: Select(d.find_element(By.ID, "f-label")).first_selected_option.text == "sad"
          and len(_cards(d)) == 6, what="the filter restored from the URL")

    # correct a label from a card
    d.find_element(By.ID, "who").send_keys("Selenium")
    target = _cards(d)[0]
    target_id = target.get_attribute("data-clip")
    target.find_element(By.CSS_SELECTOR, ".new-label").send_keys("surprised")
    target.find_element(By.CSS_SELECTOR, ".set-label").click()
    _wait(d, lambda d: "saved" in d.find_element(By.ID, "message").text, what="the correction is saved")
    rows = httpx.get(server + "/api/clips", params={"where": f"clip_id = '{target_id}'"}).json()["rows"]
    assert rows[0]["label"] == "surprised"

    # the map: hover a point, click it, the clip page opens
    d.find_element(By.ID, "nav-map").click()
    canvas = _wait(d, lambda d: d.find_element(By.ID, "map-canvas")
                   if int(d.find_element(By.ID, "map-canvas").get_attribute("data-points") or 0) else None,
                   what="the map draws its points")
    _shot(d, tmp_path, "app-map.png")
    width, height = canvas.size["width"], canvas.size["height"]
    # a box dragged over the whole canvas selects every point; the list shows them
    (ActionChains(d).move_to_element_with_offset(canvas, -width // 2 + 2, -height // 2 + 2).click_and_hold()
     .move_by_offset(width - 4, height - 4).release().perform())
    points = int(canvas.get_attribute("data-points"))
    _wait(d, lambda d: d.find_element(By.ID, "map-selection").text.startswith(f"{points} clips selected")
          and len(_cards(d, "map-results")) == min(points, 60), what="the box selection's clips")
    x, y = d.execute_script("return window.emofsMap.pointOf(0)")
    ActionChains(d).move_to_element_with_offset(canvas, int(x - width / 2), int(y - height / 2)).perform()
    _wait(d, lambda d: d.find_element(By.ID, "map-tip").is_displayed(), what="hover shows the clip")
    hovered = d.find_element(By.ID, "map-tip").text.split(" · ")[0]
    ActionChains(d).click().perform()
    _wait(d, lambda d: d.find_element(By.ID, "view-clip").is_displayed()
          and d.find_element(By.CSS_SELECTOR, "#clip-detail h2").text == hovered, what="the clip page opens")
    _wait(d, lambda d: len(_cards(d, "clip-neighbours")) == 8, what="the clip's neighbours")
    _shot(d, tmp_path, "app-clip.png")

    # runs: a confusion cell lists its clips
    d.find_element(By.ID, "nav-runs").click()
    cell = _wait(d, lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, "td.cell") if int(c.text) > 0), None),
                 what="a non-empty confusion cell")
    _shot(d, tmp_path, "app-runs.png")
    count, pred = int(cell.text), cell.get_attribute("data-pred")
    cell.click()
    _wait(d, lambda d: d.find_element(By.ID, "view-search").is_displayed() and len(_cards(d)) == min(count, 40),
          what="the cell's clips")
    assert all(c.find_element(By.CSS_SELECTOR, ".pred").text.startswith(f"→ {pred}") for c in _cards(d))

    # drag and drop: a media file dropped on the search box is extracted and searched
    d.find_element(By.ID, "nav-search").click()
    dropped = d.execute_async_script("""
        const [clip, done] = arguments;
        fetch('/media/' + encodeURIComponent(clip)).then(r => r.blob()).then(blob => {
          const dt = new DataTransfer();
          dt.items.add(new File([blob], 'dropped.wav', { type: 'audio/wav' }));
          const zone = document.getElementById('search-form');
          for (const type of ['dragenter', 'dragover', 'drop'])
            zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
          done('ok');
        }, e => done(String(e)));""", clip)
    assert dropped == "ok", dropped
    want = int(d.find_element(By.ID, "k").get_attribute("value"))
    _wait(d, lambda d: "clips like dropped.wav" in d.find_element(By.ID, "summary").text
          and len(_cards(d)) == want, what="the dropped file's neighbours")
    assert load_s < 10


def test_csrf_from_a_sandboxed_frame_on_another_port_is_refused(app_store, browser):  # noqa: F811
    """The reliability probe: a page on another local port posts a ``text/plain`` form to
    ``/api/corrections`` from a sandboxed iframe (``Origin: null``). The request reaches
    the app and is refused (403); the clip's label does not change."""
    import http.server

    import uvicorn

    from workflows.app import AppConfig, create_app

    clip = _slash_clip(app_store)
    before = app_store.clips(where=f"clip_id = '{clip}'")["label"][0]
    seen: list[tuple[str, str, int]] = []
    app = create_app(AppConfig(store=app_store.uri, port=_free_port()), store=app_store)

    async def recorded(scope, receive, send):  # outside the Guard: sees what it answers
        async def send_status(message):
            if message["type"] == "http.response.start":
                seen.append((scope["method"], scope["path"], message["status"]))
            await send(message)
        await app(scope, receive, send_status if scope["type"] == "http" else send)

    port = app.state.config.port
    srv = uvicorn.Server(uvicorn.Config(recorded, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    field = '{"clip_id": "%s", "who": "evil", "label": "k3_6", "pad": "' % clip
    inner = (f"<form method=POST enctype=text/plain action='http://127.0.0.1:{port}/api/corrections'>"
             f"<input name='{field}' value='\"}}'></form><script>document.forms[0].submit()</script>")
    attack = ("<html><body><iframe sandbox='allow-forms allow-scripts' srcdoc=\""
              + inner.replace("&", "&amp;").replace('"', "&quot;") + "\"></iframe></body></html>").encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(attack)))
            self.end_headers()
            self.wfile.write(attack)

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        deadline = time.time() + 20
        while not srv.started and time.time() < deadline:
            time.sleep(0.05)
        browser.get(f"http://127.0.0.1:{evil.server_address[1]}/")
        deadline = time.time() + 20
        while not any(path == "/api/corrections" for _, path, _ in seen) and time.time() < deadline:
            time.sleep(0.1)
    finally:
        evil.shutdown()
        srv.should_exit = True
    assert ("POST", "/api/corrections", 403) in seen, seen  # the forged post arrived and was refused
    assert app_store.clips(where=f"clip_id = '{clip}'")["label"][0] == before


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ every clip plays
#: Makes the page's own player (player.js) for each row, loads its metadata, and reports
#: per clip: loadedmetadata (duration, video size) or the media error code. Six at a time,
#: each player removed once it answered.
PLAY_ALL = """
const [rows, done] = arguments;
const out = {}, box = document.createElement('div');
document.body.append(box);
let next = 0, running = 0;
function one(row) {
  const player = window.emofsPlayer.create(row);
  const media = player.querySelector('video, audio');
  let finished = false;
  const finish = (result) => {
    if (finished) return;
    finished = true;
    out[row.clip_id] = result;
    media.removeAttribute('src'); media.load(); player.remove();
    running -= 1; pump();
  };
  media.addEventListener('loadedmetadata', () => finish({ok: true, duration: media.duration,
    width: media.videoWidth || 0, tag: media.tagName}));
  media.addEventListener('error', () => finish({ok: false, code: media.error && media.error.code,
    message: media.error && media.error.message}));
  setTimeout(() => finish({ok: false, message: 'no loadedmetadata in 60 s'}), 60000);
  box.append(player);
  media.preload = 'metadata';
  media.load();
}
function pump() {
  while (running < 6 && next < rows.length) { running += 1; one(rows[next++]); }
  if (running === 0 && next >= rows.length) { box.remove(); done(out); }
}
pump();
"""


def _play_all(driver, rows: list[dict]) -> dict[str, dict]:
    driver.set_script_timeout(600)
    return driver.execute_async_script(PLAY_ALL, rows)


def test_every_shared_clip_plays_in_chromium(server, browser, app_store, shared_data):  # noqa: F811
    """44 of 44 shared videos (mp4 as they are; flv and avi as renditions made on the first
    request) and 78 of 78 audio clips (wav, mp3) reach loadedmetadata without a media error;
    then an audio card's waveform strip seeks where it is clicked."""
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server + "/?view=runs")
    _wait(d, lambda d: d.execute_script("return !!(window.emofsPlayer && window.emofs.state.info)"),
          what="the page and player.js load")
    rows = app_store.clips(columns=["clip_id", "uri", "has_video", "has_audio"]).to_dicts()
    started = time.perf_counter()
    results = _play_all(d, rows)
    seconds = time.perf_counter() - started
    kinds: dict[str, list[bool]] = {}
    for row in rows:
        kind = "video" if row["has_video"] else "audio"
        kinds.setdefault(kind, []).append(bool(results[row["clip_id"]]["ok"]))
    failed = {c: r for c, r in results.items() if not r["ok"]}
    assert not failed, failed
    assert (sum(kinds["video"]), len(kinds["video"])) == (44, 44)
    assert (sum(kinds["audio"]), len(kinds["audio"])) == (78, 78)
    assert all(results[r["clip_id"]]["width"] > 0 for r in rows if r["has_video"])  # a picture, not just a track
    assert all(results[r["clip_id"]]["duration"] > 0.5 for r in rows)
    print(f"\n{len(rows)} shared clips reached loadedmetadata in {seconds:.1f} s (renditions made on the way)")

    # a rendition really plays and seeks: an flv (VP6 -> H.264, MP3 copied) and an MJPEG avi
    for suffix in (".flv", ".avi"):
        row = next(r for r in rows if r["uri"].endswith(suffix))
        video = d.execute_script("""
            const p = window.emofsPlayer.create(arguments[0]); document.body.prepend(p);
            const m = p.querySelector('video'); m.muted = true; return m;""", row)
        played = d.execute_async_script(
            "const [m, done] = arguments; m.play().then(() => done('ok'), e => done(String(e)));", video)
        assert played == "ok", (suffix, played)
        _wait(d, lambda d: d.execute_script("return arguments[0].currentTime", video) > 0.5, what=f"{suffix} plays")
        d.execute_script("arguments[0].pause(); arguments[0].currentTime = 0.3", video)
        _wait(d, lambda d: d.execute_script("return !arguments[0].seeking && Math.abs(arguments[0].currentTime - 0.3) < 0.1",
                                            video), what=f"{suffix} seeks back")
        d.execute_script("arguments[0].closest('.player-box').remove()", video)

    # the waveform strip of an audio card: peaks drawn, a click at 3/4 seeks to 3/4
    wav = next(r["clip_id"] for r in rows if r["uri"].endswith(".wav"))
    d.get(server + "/?" + urlencode({"where": f"clip_id = '{wav}'"}))
    strip = _wait(d, lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, "#results canvas.wave")
                                     if int(c.get_attribute("data-bins") or 0) > 0), None),
                  what="the waveform strip draws its peaks")
    from selenium.webdriver.common.action_chains import ActionChains

    width = strip.size["width"]
    ActionChains(d).move_to_element_with_offset(strip, int(width * 0.25), 0).click().perform()
    audio = d.find_element(By.CSS_SELECTOR, "#results audio")
    _wait(d, lambda d: d.execute_script("return arguments[0].readyState", audio) >= 1
          and abs(d.execute_script("return arguments[0].currentTime / arguments[0].duration", audio) - 0.75) < 0.05,
          what="a click on the strip seeks")
    link = d.find_element(By.CSS_SELECTOR, "#results .original")
    assert link.get_attribute("href").endswith("?original=1") and link.get_attribute("download")


def test_an_s3_stores_clips_play_from_the_local_s3_server(s3, browser, tmp_path, shared_data):
    """A store in a bucket, with media in the bucket (avi, wav) and on disk (flv): the page
    lists them and every player loads, the avi and flv through renditions kept in the bucket."""
    import pyarrow.fs as pafs
    import uvicorn
    from selenium.webdriver.common.by import By

    from conftest import copy_to
    from extractors import ingest
    from featurestore import Store
    from featurestore.remote import filesystem
    from workflows.app import AppConfig, create_app

    fs, prefix = filesystem(f"{s3}/raw")
    for src in (next((shared_data / "ravdess_actor05" / "facecrop").glob("*.avi")),
                next((shared_data / "crema_d" / "wav16k").glob("*.wav"))):
        with fs.open_output_stream(f"{prefix}/{src.name}") as out:
            out.write(src.read_bytes())
    local = tmp_path / "local"
    copy_to(next((shared_data / "crema_d").glob("*.flv")), local / "clip.flv")
    store = Store(f"{s3}/store")
    ingest([f"{s3}/raw"], store, progress=False)
    ingest([local], store, progress=False)
    port = _free_port()
    app = create_app(AppConfig(store=store.uri, port=port), store=store)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not srv.started and time.time() < deadline:
            time.sleep(0.05)
        browser.get(f"http://127.0.0.1:{port}/")
        _wait(browser, lambda d: len(_cards(d)) == 3, what="the bucket store's three cards")
        rows = store.clips(columns=["clip_id", "uri", "has_video", "has_audio"]).to_dicts()
        results = _play_all(browser, rows)
        assert all(r["ok"] for r in results.values()), results
        assert sorted(r["tag"] for r in results.values()) == ["AUDIO", "VIDEO", "VIDEO"]
        made = fs.get_file_info(pafs.FileSelector(f"{prefix.rsplit('/', 1)[0]}/store/app/renditions"))
        assert len(made) == 2  # avi and flv renditions, in the bucket
        assert browser.find_elements(By.CSS_SELECTOR, "#results canvas.wave")
    finally:
        srv.should_exit = True
        thread.join(10)
