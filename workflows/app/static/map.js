// The map view: a canvas scatter of a 2-D projection (PCA of a search space, precomputed
// by the index build; UMAP for small sets when installed), coloured by label / prediction
// / any column; hover names the clip, click opens it, a dragged box becomes the result
// list. The points come as one binary answer (typed arrays, no per-point objects) and are
// bucketed in a grid for fast hover.
"use strict";

(function () {
  const { api, el, showCards, openClip, setParams, fillSelect, state } = window.emofs;
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#2f6fdf", "#e4572e", "#29a36a", "#f3a712", "#8e44ad", "#17becf", "#d62780", "#7f7f7f", "#bcbd22", "#8c564b"];
  const map = { data: null, sx: null, sy: null, colours: null, grid: null, drag: null, ready: false };

  // The answer of /api/map?format=bin: "EMAP", uint32 header length, JSON header, then
  // 8-byte aligned sections (x, y float32; codes int32 into header.values; clip ids as
  // int32 offsets + UTF-8 bytes, decoded only for the points shown).
  function parseMap(buf) {
    const magic = new TextDecoder().decode(new Uint8Array(buf, 0, 4));
    if (magic !== "EMAP") throw new Error("the map answer is not an emofs map");
    const len = new DataView(buf).getUint32(4, true);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, len)));
    const sec = (name, Type) => { const [at, bytes] = head.sections[name]; return new Type(buf, at, bytes / Type.BYTES_PER_ELEMENT); };
    const offsets = sec("id_offsets", Int32Array), bytes = sec("id_bytes", Uint8Array), decoder = new TextDecoder();
    return {
      ...head, x: sec("x", Float32Array), y: sec("y", Float32Array), codes: sec("codes", Int32Array),
      idAt: (i) => decoder.decode(bytes.subarray(offsets[i], offsets[i + 1])),
      valueAt(i) { const c = this.codes[i]; return c < 0 ? null : this.values[c]; },
    };
  }

  function colourTable(d) {
    const counts = new Array(d.values.length + 1).fill(0);
    for (let i = 0; i < d.n; i++) counts[d.codes[i] + 1] += 1;
    const keys = [...counts.keys()].filter((k) => counts[k] > 0).sort((a, b) => counts[b] - counts[a]);
    const colours = new Array(d.values.length + 1).fill("#aab");
    keys.forEach((k, rank) => { if (rank < PALETTE.length) colours[k] = PALETTE[rank]; });
    return { colours, keys: keys.map((k) => ({ label: k === 0 ? "∅" : d.values[k - 1], colour: colours[k] })) };
  }

  const CELL = 12;
  function layout(canvas) {
    const d = map.data, pad = 16;
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (let i = 0; i < d.n; i++) {
      const x = d.x[i], y = d.y[i];
      if (x < minX) minX = x; if (x > maxX) maxX = x; if (y < minY) minY = y; if (y > maxY) maxY = y;
    }
    const w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
    map.sx = new Float32Array(d.n);
    map.sy = new Float32Array(d.n);
    for (let i = 0; i < d.n; i++) {
      map.sx[i] = pad + ((d.x[i] - minX) / (maxX - minX || 1)) * w;
      map.sy[i] = pad + h - ((d.y[i] - minY) / (maxY - minY || 1)) * h;
    }
    // points bucketed by grid cell (a counting sort): hover looks at 9 cells
    map.gw = Math.ceil(canvas.width / CELL) + 1;
    const cells = map.gw * (Math.ceil(canvas.height / CELL) + 1);
    const cellOf = new Int32Array(d.n), start = new Int32Array(cells + 1);
    for (let i = 0; i < d.n; i++) { cellOf[i] = Math.floor(map.sx[i] / CELL) + Math.floor(map.sy[i] / CELL) * map.gw; start[cellOf[i] + 1] += 1; }
    for (let c = 0; c < cells; c++) start[c + 1] += start[c];
    const fill = start.slice(0, cells), items = new Int32Array(d.n);
    for (let i = 0; i < d.n; i++) items[fill[cellOf[i]]++] = i;
    map.grid = { start, items, cells };
  }

  function draw() {
    const canvas = $("map-canvas"), ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const d = map.data, n = d.n, r = n > 20000 ? 1.2 : n > 2000 ? 2 : 3.5;
    const { colours } = colourTable(d);
    if (n > 5000) {  // pixels straight into an ImageData: a million points in a few ms
      const img = ctx.createImageData(canvas.width, canvas.height), px = new Uint32Array(img.data.buffer);
      const rgba = colours.map((c) => { const v = parseInt(c.slice(1), 16); return (255 << 24) | ((v & 255) << 16) | (v & 0xff00) | (v >> 16); });
      for (let i = 0; i < n; i++) {
        const x = Math.round(map.sx[i]), y = Math.round(map.sy[i]), c = rgba[d.codes[i] + 1];
        const at = y * canvas.width + x;
        px[at] = c; px[at + 1] = c; px[at + canvas.width] = c; px[at + canvas.width + 1] = c;
      }
      ctx.putImageData(img, 0, 0);
    } else {
      for (let i = 0; i < n; i++) {
        ctx.fillStyle = colours[d.codes[i] + 1];
        ctx.beginPath();
        ctx.arc(map.sx[i], map.sy[i], r, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    if (map.drag && map.drag.moved) {
      ctx.strokeStyle = "#1d2330";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(map.drag.x0, map.drag.y0, map.drag.x1 - map.drag.x0, map.drag.y1 - map.drag.y0);
      ctx.setLineDash([]);
    }
  }

  function nearest(x, y) {
    let best = -1, bestD = 64;
    const gx = Math.floor(x / CELL), gy = Math.floor(y / CELL), { start, items, cells } = map.grid;
    for (let i = gx - 1; i <= gx + 1; i++) for (let j = gy - 1; j <= gy + 1; j++) {
      const c = i + j * map.gw;
      if (i < 0 || j < 0 || i >= map.gw || c >= cells) continue;
      for (let k = start[c]; k < start[c + 1]; k++) {
        const p = items[k], dd = (map.sx[p] - x) ** 2 + (map.sy[p] - y) ** 2;
        if (dd < bestD) { bestD = dd; best = p; }
      }
    }
    return best;
  }

  function pos(e) {
    const rect = e.target.getBoundingClientRect();
    return [(e.clientX - rect.left) * (e.target.width / rect.width), (e.clientY - rect.top) * (e.target.height / rect.height)];
  }

  function legend() {
    const { keys } = colourTable(map.data);
    $("map-legend").replaceChildren(...keys.slice(0, 12).map((k) => {
      const dot = el("i");
      dot.style.background = k.colour;
      return el("div", {}, dot, k.label);
    }));
  }

  async function selectBox(d) {
    const [x0, x1] = [Math.min(d.x0, d.x1), Math.max(d.x0, d.x1)], [y0, y1] = [Math.min(d.y0, d.y1), Math.max(d.y0, d.y1)];
    let count = 0;
    const shown = [];
    for (let i = 0; i < map.data.n; i++) {
      const x = map.sx[i], y = map.sy[i];
      if (x >= x0 && x <= x1 && y >= y0 && y <= y1) { count += 1; if (shown.length < 60) shown.push(map.data.idAt(i)); }
    }
    $("map-selection").textContent = `${count} clips selected` + (count > 60 ? " (first 60 shown)" : "");
    if (!count) return $("map-results").replaceChildren();
    const where = "clip_id IN (" + shown.map(window.emofs.sqlQuote).join(", ") + ")";
    const p = new URLSearchParams({ where, limit: 60 });
    const run = $("map-colour").value === "prediction" || state.mapRun ? state.mapRun : "";
    if (run) p.set("run", run);
    const body = await api("/api/clips?" + p);
    showCards($("map-results"), body.rows);
  }

  function bind() {
    const canvas = $("map-canvas"), tip = $("map-tip");
    canvas.addEventListener("mousemove", (e) => {
      if (!map.data) return;
      const [x, y] = pos(e);
      if (map.drag) { map.drag.x1 = x; map.drag.y1 = y; map.drag.moved = map.drag.moved || Math.abs(x - map.drag.x0) + Math.abs(y - map.drag.y0) > 4; draw(); return; }
      const i = nearest(x, y);
      if (i < 0) { tip.hidden = true; canvas.title = ""; return; }
      tip.hidden = false;
      tip.textContent = `${map.data.idAt(i)} · ${map.data.valueAt(i) ?? "∅"}`;
      tip.style.left = (map.sx[i] * canvas.clientWidth / canvas.width + 10) + "px";
      tip.style.top = (map.sy[i] * canvas.clientHeight / canvas.height - 10) + "px";
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("mousedown", (e) => { const [x, y] = pos(e); map.drag = { x0: x, y0: y, x1: x, y1: y, moved: false }; });
    canvas.addEventListener("mouseup", (e) => {
      const d = map.drag;
      map.drag = null;
      if (!d || !map.data) return;
      if (d.moved) { draw(); selectBox(d); return; }
      const [x, y] = pos(e);
      const i = nearest(x, y);
      if (i >= 0) openClip(map.data.idAt(i));
    });
    $("map-source").addEventListener("change", () => load(true));
    $("map-colour").addEventListener("change", () => load(true));
  }

  async function load(push) {
    const source = $("map-source").value, colour = $("map-colour").value || "label";
    if (!source) { $("map-info").textContent = "no feature set or run to map yet (run `emofs extract`)"; return; }
    state.mapRun = source.startsWith("run:") ? source.slice(4) : (state.info.predictions || [])[0] || "";
    setParams({ view: "map", source, colour }, push);
    const p = new URLSearchParams({ source, colour, format: "bin" });
    if (state.mapRun) p.set("run", state.mapRun);
    $("map-info").textContent = "projecting …";
    const t0 = performance.now();
    try {
      const res = await fetch("/api/map?" + p);
      if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || `HTTP ${res.status}`);
      map.data = parseMap(await res.arrayBuffer());
    } catch (err) { $("map-info").textContent = err.message; return; }
    layout($("map-canvas"));
    draw();
    legend();
    map.ready = true;
    $("map-canvas").dataset.points = String(map.data.n);
    $("map-info").textContent = `${map.data.n} clips · ${map.data.method}${map.data.cached ? " (cached)" : ""} · ${Math.round(performance.now() - t0)} ms`;
  }

  let bound = false;
  window.emofsMap = {
    async open(p) {
      if (!bound) { bind(); bound = true; }
      const info = state.info;
      // the searched spaces first (a learned emotion space leads), then raw feature sets and runs
      const sources = [...(info.spaces || []).map((s) => "index:" + s.index),
        ...(info.features ? Object.keys(info.features).map((f) => "features:" + f) : []), ...(info.predictions || []).map((r) => "run:" + r)];
      fillSelect($("map-source"), sources, false);
      fillSelect($("map-colour"), ["label", ...((info.predictions || []).length ? ["prediction"] : []), ...info.clip_columns.filter((c) => ["split", "speaker", "modality", "dataset", "tags", "container"].includes(c))], false);
      if (p.get("source")) $("map-source").value = p.get("source");
      if (p.get("colour")) $("map-colour").value = p.get("colour");
      await load(false);
    },
    // For tests: screen position (canvas pixels) of a clip.
    pointOf(i) { return map.sx ? [map.sx[i], map.sy[i]] : null; },
  };
})();
