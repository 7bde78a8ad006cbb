// emofs page: media players. /media/CLIP answers with what the browser can play (the
// file, or the server's cached MP4 rendition of FLV, AVI, MKV ...); every player links the
// original file as a download, says why when a file cannot be played, and audio players
// get a waveform strip (/peaks/CLIP, computed once on the server) that seeks on click.
"use strict";

(function () {
  const enc = (id) => encodeURIComponent(id);

  function node(tag, attrs = {}, text = "") {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text) n.textContent = text;
    return n;
  }

  // Seek to t seconds, loading the metadata first when the player has none yet
  // (preload="none" players know no duration until they load).
  function seek(media, t) {
    const go = () => { media.currentTime = Math.max(0, Math.min(t, media.duration || t)); };
    if (media.readyState >= 1) return go();
    media.addEventListener("loadedmetadata", go, { once: true });
    media.preload = "metadata";
    media.load();
  }

  // The server's one-line reason (JSON) when the media cannot be played.
  async function explain(box, src) {
    if (box.querySelector(".media-error")) return;
    let text = "this media cannot be played here; download the original";
    try {
      const res = await fetch(src, { headers: { Range: "bytes=0-0" } });
      if (!res.ok) text = (await res.json()).error || text;
    } catch (err) { /* keep the generic line */ }
    box.append(node("div", { class: "media-error" }, text));
  }

  function draw(canvas, peaks, media) {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (!peaks || !peaks.bins) return;
    const top = peaks.top;
    const duration = media.duration || peaks.duration || 1;
    const played = Math.round((media.currentTime / duration) * w);
    const style = getComputedStyle(canvas);
    const colours = { played: style.getPropertyValue("--wave-played").trim() || "#2f6fdf",
      rest: style.getPropertyValue("--wave").trim() || "#a9b4c6" };
    for (let x = 0; x < w; x++) {
      const a = Math.floor((x / w) * peaks.bins), b = Math.max(a + 1, Math.floor(((x + 1) / w) * peaks.bins));
      let lo = 0, hi = 0;
      for (let i = a; i < b && i < peaks.bins; i++) { lo = Math.min(lo, peaks.min[i]); hi = Math.max(hi, peaks.max[i]); }
      const y0 = h / 2 - (hi / top) * (h / 2 - 1), y1 = h / 2 - (lo / top) * (h / 2 - 1);
      ctx.fillStyle = x < played ? colours.played : colours.rest;
      ctx.fillRect(x, y0, 1, Math.max(1, y1 - y0));
    }
  }

  // A strip under an audio player: the clip's waveform, the played part in the accent
  // colour; a click seeks there. Peaks load when the strip scrolls into view.
  function strip(media, clipId) {
    const canvas = node("canvas", { class: "wave", title: "waveform: click to seek" });
    canvas.dataset.clip = clipId;
    let peaks = null;
    const redraw = () => requestAnimationFrame(() => draw(canvas, peaks, media));
    const load = () => fetch("/peaks/" + enc(clipId))
      .then((r) => (r.ok ? r.json() : null))
      .then((p) => {
        // scaled to the loudest peak, so quiet recordings fill the strip too
        if (p) p.top = Math.max(1e-4, ...p.max.map(Math.abs), ...p.min.map(Math.abs));
        peaks = p;
        canvas.dataset.bins = p ? p.bins : 0;
        redraw();
      })
      .catch(() => {});
    if ("IntersectionObserver" in window) {
      const seen = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting)) { seen.disconnect(); load(); }
      });
      seen.observe(canvas);
    } else load();
    for (const type of ["timeupdate", "seeked", "loadedmetadata", "ended"]) media.addEventListener(type, redraw);
    canvas.addEventListener("click", (e) => {
      const rect = canvas.getBoundingClientRect();
      const frac = Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width));
      const duration = media.duration || (peaks && peaks.duration) || 0;
      seek(media, frac * duration);
      redraw();
    });
    return canvas;
  }

  // The player of a clip row: <video> or <audio> on /media/CLIP, the waveform strip for
  // audio, a download link to the original file.
  function create(row) {
    const src = "/media/" + enc(row.clip_id);
    const media = node(row.has_video ? "video" : "audio", { controls: "", preload: "none", src, class: "media" });
    media.dataset.clip = row.clip_id;
    const box = node("div", { class: "player-box" });
    box.append(media);
    if (!row.has_video && row.has_audio !== false) box.append(strip(media, row.clip_id));
    const name = String(row.uri || row.rel_path || row.clip_id).split("/").pop();
    box.append(node("a", { class: "original", href: src + "?original=1", download: name, title: "the file as ingested" }, "original ⤓"));
    media.addEventListener("error", () => explain(box, src));
    return box;
  }

  window.emofsPlayer = { create, seek, strip };
})();
