// The map view: a canvas scatter of a 2-D projection (PCA, or UMAP when installed),
// coloured by label / prediction / any column; hover names the clip, click opens it,
// a dragged box becomes the result list. Points are bucketed in a grid for fast hover.
"use strict";

(function () {
  const { api, el, showCards, openClip, setParams, fillSelect, state } = window.emofs;
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#2f6fdf", "#e4572e", "#29a36a", "#f3a712", "#8e44ad", "#17becf", "#d62780", "#7f7f7f", "#bcbd22", "#8c564b"];
  const map = { data: null, sx: null, sy: null, colours: null, grid: null, drag: null, ready: false };

  function colourTable(values) {
    const counts = new Map();
    for (const v of values) counts.set(v ?? "∅", (counts.get(v ?? "∅") || 0) + 1);
    const keys = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a));
    const table = new Map(keys.map((k, i) => [k, i < PALETTE.length ? PALETTE[i] : "#aab"]));
    return { table, keys };
  }

  function layout(canvas) {
    const d = map.data, pad = 16;
    const minX = Math.min(...d.x), maxX = Math.max(...d.x), minY = Math.min(...d.y), maxY = Math.max(...d.y);
    const w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
    map.sx = d.x.map((x) => pad + ((x - minX) / (maxX - minX || 1)) * w);
    map.sy = d.y.map((y) => pad + h - ((y - minY) / (maxY - minY || 1)) * h);
    map.grid = new Map();
    map.sx.forEach((x, i) => {
      const key = `${Math.floor(x / 12)},${Math.floor(map.sy[i] / 12)}`;
      if (!map.grid.has(key)) map.grid.set(key, []);
      map.grid.get(key).push(i);
    });
  }

  function draw() {
    const canvas = $("map-canvas"), ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const n = map.sx.length, r = n > 20000 ? 1.2 : n > 2000 ? 2 : 3.5;
    const { table } = colourTable(map.data.values);
    for (let i = 0; i < n; i++) {
      ctx.fillStyle = table.get(map.data.values[i] ?? "∅");
      if (n > 5000) { ctx.fillRect(map.sx[i] - r, map.sy[i] - r, 2 * r, 2 * r); continue; }
      ctx.beginPath();
      ctx.arc(map.sx[i], map.sy[i], r, 0, 2 * Math.PI);
      ctx.fill();
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
    const gx = Math.floor(x / 12), gy = Math.floor(y / 12);
    for (let i = gx - 1; i <= gx + 1; i++) for (let j = gy - 1; j <= gy + 1; j++) {
      for (const p of map.grid.get(`${i},${j}`) || []) {
        const d = (map.sx[p] - x) ** 2 + (map.sy[p] - y) ** 2;
        if (d < bestD) { bestD = d; best = p; }
      }
    }
    return best;
  }

  function pos(e) {
    const rect = e.target.getBoundingClientRect();
    return [(e.clientX - rect.left) * (e.target.width / rect.width), (e.clientY - rect.top) * (e.target.height / rect.height)];
  }

  function legend() {
    const { table, keys } = colourTable(map.data.values);
    $("map-legend").replaceChildren(...keys.slice(0, 12).map((k) => {
      const dot = el("i");
      dot.style.background = table.get(k);
      return el("div", {}, dot, k);
    }));
  }

  async function selectBox(d) {
    const [x0, x1] = [Math.min(d.x0, d.x1), Math.max(d.x0, d.x1)], [y0, y1] = [Math.min(d.y0, d.y1), Math.max(d.y0, d.y1)];
    const ids = [];
    map.sx.forEach((x, i) => { if (x >= x0 && x <= x1 && map.sy[i] >= y0 && map.sy[i] <= y1) ids.push(map.data.clip_ids[i]); });
    $("map-selection").textContent = `${ids.length} clips selected` + (ids.length > 60 ? " (first 60 shown)" : "");
    if (!ids.length) return $("map-results").replaceChildren();
    const shown = ids.slice(0, 60);
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
      tip.textContent = `${map.data.clip_ids[i]} · ${map.data.values[i] ?? "∅"}`;
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
      if (i >= 0) openClip(map.data.clip_ids[i]);
    });
    $("map-source").addEventListener("change", () => load(true));
    $("map-colour").addEventListener("change", () => load(true));
  }

  async function load(push) {
    const source = $("map-source").value, colour = $("map-colour").value || "label";
    if (!source) { $("map-info").textContent = "no feature set or run to map yet (run `emofs extract`)"; return; }
    state.mapRun = source.startsWith("run:") ? source.slice(4) : (state.info.predictions || [])[0] || "";
    setParams({ view: "map", source, colour }, push);
    const p = new URLSearchParams({ source, colour });
    if (state.mapRun) p.set("run", state.mapRun);
    $("map-info").textContent = "projecting …";
    const t0 = performance.now();
    try {
      map.data = await api("/api/map?" + p);
    } catch (err) { $("map-info").textContent = err.message; return; }
    layout($("map-canvas"));
    draw();
    legend();
    map.ready = true;
    $("map-canvas").dataset.points = String(map.data.clip_ids.length);
    $("map-info").textContent = `${map.data.clip_ids.length} clips · ${map.data.method}${map.data.cached ? " (cached)" : ""} · ${Math.round(performance.now() - t0)} ms`;
  }

  let bound = false;
  window.emofsMap = {
    async open(p) {
      if (!bound) { bind(); bound = true; }
      const info = state.info;
      const sources = [...(info.features ? Object.keys(info.features).map((f) => "features:" + f) : []), ...(info.predictions || []).map((r) => "run:" + r)];
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
