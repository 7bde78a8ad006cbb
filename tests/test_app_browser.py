"""The analyst page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium against the app served by uvicorn on 127.0.0.1.

Load, search a shared clip and see k cards, play one and watch its currentTime advance,
filter (and keep the filter in the URL), correct a label and find it in /api/clips, open
the map, hover and click a point, click through a confusion-matrix cell, and drop a media
file on the search box. Screenshots
go to the test's tmp folder and to tests/artifacts/ (git-ignored). Skips, saying why,
where Chromium or its driver is not installed (`.ci/run` installs them).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from test_app import RUN, _slash_clip, app_store  # noqa: F401 - the module-scoped store fixture

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


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

    # runs: a confusion cell lists its clips
    d.find_element(By.ID, "nav-runs").click()
    cell = _wait(d, lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, "td.cell") if int(c.text) > 0), None),
                 what="a non-empty confusion cell")
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
