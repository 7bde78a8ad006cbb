// emofs analyst page: search, cards with players and face thumbnails, filters kept in
// the URL, clip page, corrections. Plain JS, no build step; map.js and runs.js add views.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, offset: 0, lastList: null };
const PAGE = 40;
const FILTER_FIELDS = ["label", "split", "speaker", "modality", "dmin", "dmax", "run", "pred", "cmin", "cmax", "wrong", "where"];

// ------------------------------------------------------------------ helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function enc(clipId) { return encodeURIComponent(clipId); }

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

function say(text, ok = false) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
  box.className = ok ? "message ok" : "message";
}

function sqlQuote(v) { return "'" + String(v).replace(/'/g, "''") + "'"; }

function params() { return new URLSearchParams(location.search); }

function setParams(values, push = true) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== undefined && v !== null && v !== "" && v !== false) p.set(k, v === true ? "1" : v);
  const url = "?" + p.toString();
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function fmt(x, digits = 3) { return x === null || x === undefined ? "" : Number(x).toFixed(digits); }

function fillSelect(select, values, blank = true) {
  select.replaceChildren();
  if (blank) select.append(el("option", { value: "" }, ""));
  for (const v of values) select.append(el("option", { value: v }, v));
}

// ------------------------------------------------------------------ filters <-> URL
function readFilters() {
  const f = {};
  for (const name of FILTER_FIELDS) {
    const input = $("f-" + name);
    f[name] = input.type === "checkbox" ? input.checked : input.value.trim();
  }
  return f;
}

function writeFilters(p) {
  for (const name of FILTER_FIELDS) {
    const input = $("f-" + name);
    if (input.type === "checkbox") input.checked = p.get(name) === "1";
    else input.value = p.get(name) || "";
  }
}

function clipWhere(f) {
  const parts = [];
  for (const col of ["label", "split", "speaker", "modality"]) if (f[col]) parts.push(`${col} = ${sqlQuote(f[col])}`);
  if (f.dmin) parts.push(`duration_s >= ${Number(f.dmin)}`);
  if (f.dmax) parts.push(`duration_s <= ${Number(f.dmax)}`);
  if (f.where) parts.push(`(${f.where})`);
  return parts.join(" AND ");
}

function runParams(f) {
  const out = {};
  if (f.run) out.run = f.run;
  if (f.run && f.pred) out.pred_label = f.pred;
  if (f.run && f.cmin) out.conf_min = f.cmin;
  if (f.run && f.cmax) out.conf_max = f.cmax;
  if (f.run && f.wrong) out.wrong = "1";
  return out;
}

// ------------------------------------------------------------------ cards
function player(row) {
  if (window.emofsPlayer) return window.emofsPlayer.create(row);  // player.js: waveform, original download
  const src = "/media/" + enc(row.clip_id);
  const video = row.has_video;
  const media = el(video ? "video" : "audio", { controls: "", preload: "none", src, class: "media" });
  media.dataset.clip = row.clip_id;
  return media;
}

function card(row) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.clip = row.clip_id;
  const thumb = node.querySelector(".thumb");
  if (row.has_video) {
    thumb.src = "/thumb/" + enc(row.clip_id);
    thumb.alt = "peak-frame face";
    thumb.addEventListener("error", () => thumb.replaceWith(el("div", { class: "thumb audio" }, "no face")));
  } else thumb.replaceWith(el("div", { class: "thumb audio", title: "audio only" }, "♪"));
  const link = node.querySelector(".clip-link");
  link.textContent = row.clip_id;
  link.href = "?view=clip&clip=" + enc(row.clip_id);
  link.addEventListener("click", (e) => { e.preventDefault(); openClip(row.clip_id); });
  node.querySelector(".label-chip").textContent = row.label ?? "no label";
  const pred = node.querySelector(".pred");
  if (row.prediction) {
    pred.textContent = `→ ${row.prediction} ${fmt(row.confidence, 2)}`;
    if (row.label && row.label !== row.prediction) pred.classList.add("wrong");
  }
  node.querySelector(".score").textContent = row.score !== undefined ? `score ${fmt(row.score)}` : (row.modality || "") + (row.duration_s ? ` · ${fmt(row.duration_s, 1)} s` : "");
  node.querySelector(".tags").textContent = row.tags ? "tags: " + row.tags : "";
  node.querySelector(".player").append(player(row));
  const readOnly = state.info && state.info.app.read_only;
  for (const b of node.querySelectorAll(".correct input, .set-label, .add-tag")) b.disabled = readOnly;
  node.querySelector(".set-label").addEventListener("click", () => correct(row.clip_id, { label: node.querySelector(".new-label").value }, node));
  node.querySelector(".add-tag").addEventListener("click", () => correct(row.clip_id, { tags: [node.querySelector(".new-tag").value] }, node));
  node.querySelector(".like").addEventListener("click", () => { $("q").value = row.clip_id; runSearch(true); });
  return node;
}

function showCards(container, rows, append = false) {
  if (!append) container.replaceChildren();
  for (const row of rows) container.append(card(row));
}

// ------------------------------------------------------------------ corrections
function who() {
  let name = $("who").value.trim();
  if (!name) {
    name = (prompt("Your name (kept with every correction):") || "").trim();
    $("who").value = name;
    localStorage.setItem("emofs.who", name);
  }
  return name;
}

async function correct(clipId, change, node) {
  const name = who();
  if (!name) return say("type your name first: corrections record who made them");
  try {
    const body = await api("/api/corrections", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ clip_id: clipId, who: name, ...change }),
    });
    const done = body.corrections.map((c) => `${c.column}: ${c.old_value ?? "∅"} → ${c.new_value}`).join("; ");
    say(done ? `saved ${clipId}: ${done}` : "nothing changed", true);
    if (node && change.label) node.querySelector(".label-chip").textContent = change.label;
    if (node && change.tags) {
      const row = (await api("/api/clip/" + enc(clipId))).clip;
      node.querySelector(".tags").textContent = row.tags ? "tags: " + row.tags : "";
    }
  } catch (err) { say(err.message); }
}

async function undo(correctionId, clipId) {
  const name = who();
  if (!name) return say("type your name first");
  try {
    await api(`/api/corrections/${correctionId}/undo`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ who: name }),
    });
    say("undone", true);
    openClip(clipId, false);
  } catch (err) { say(err.message); }
}

// ------------------------------------------------------------------ search / browse
async function runSearch(push = true, append = false) {
  const f = readFilters();
  const q = $("q").value.trim();
  const k = $("k").value || "10";
  const index = $("index").value;
  setParams({ view: "search", q, k, index, ...f }, push);
  say("");
  if (!append) state.offset = 0;
  try {
    if (q) {
      const p = new URLSearchParams({ k, ...(index ? { index } : {}), ...(f.run ? { run: f.run } : {}) });
      const where = clipWhere(f);
      if (where) p.set("where", where);
      const body = await api(`/api/similar/${enc(q)}?${p}`);
      showSpace(body);
      $("summary").textContent = `${body.results.length} clips like ${body.query.clip_id} (index ${body.index})` + (body.vote ? ` · ${body.vote}` : "");
      showCards($("results"), body.results);
      $("more").hidden = true;
    } else {
      const p = new URLSearchParams({ limit: PAGE, offset: state.offset, ...runParams(f) });
      const where = clipWhere(f);
      if (where) p.set("where", where);
      const body = await api(`/api/clips?${p}`);
      showSpace(null);
      $("summary").textContent = `${body.total} clips match`;
      showCards($("results"), body.rows, append);
      state.offset += body.rows.length;
      $("more").hidden = state.offset >= body.total;
    }
  } catch (err) { say(err.message); $("results").replaceChildren(); $("summary").textContent = ""; }
}

// ------------------------------------------------------------------ search spaces
// A run's learned emotion space is offered first and searched by default; every result
// list says which space it comes from; one click builds a space from a finished head run.
function fillSpaces(spaces) {
  const select = $("index");
  select.replaceChildren(...spaces.map((s) => el("option", { value: s.index, "data-kind": s.kind }, s.label)));
  state.spaces = spaces;
}

function defaultSpace() { return (state.spaces && state.spaces[0] && state.spaces[0].index) || ""; }

function showSpace(body) {
  const line = $("result-space");
  const space = body && body.space;
  line.hidden = !space;
  if (!space) return line.replaceChildren();
  line.dataset.kind = space.kind;
  line.dataset.index = space.index;
  line.replaceChildren(el("span", { class: "space-chip " + space.kind }, space.kind === "learned" ? "emotion space" : "raw space"),
    " results from " + space.label);
}

async function loadSpaceRuns() {
  const body = await api("/api/spaces").catch(() => ({ runs: [] }));
  fillSelect($("space-run"), body.runs || [], false);
  $("space-build").hidden = !(body.runs || []).length || (state.info && state.info.app.read_only);
}

async function buildSpace() {
  const run = $("space-run").value;
  if (!run) return say("no finished head run to build a space from: train one with `emofs train head`");
  $("build-space").disabled = true;
  say(`building the emotion space of run ${run} (embed every clip, then index) …`, true);
  try {
    const body = await api("/api/spaces", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ run }),
    });
    const spaces = await api("/api/spaces");
    fillSpaces(spaces.spaces);
    $("index").value = body.space.index;
    say(`built ${body.space.label}: ${body.embedded} clips`, true);
    if ($("q").value.trim()) runSearch(true);
  } catch (err) { say(err.message); }
  finally { $("build-space").disabled = false; }
}

// Drop a media file anywhere on the search box: the same search as the file picker.
function dropZone(zone) {
  const has = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  let depth = 0;  // dragenter/leave fire for every child element crossed
  zone.addEventListener("dragenter", (e) => { if (!has(e)) return; e.preventDefault(); depth += 1; zone.classList.add("dropping"); });
  zone.addEventListener("dragover", (e) => { if (!has(e)) return; e.preventDefault(); e.dataTransfer.dropEffect = "copy"; });
  zone.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) zone.classList.remove("dropping"); });
  zone.addEventListener("drop", (e) => {
    if (!has(e)) return;
    e.preventDefault();
    depth = 0;
    zone.classList.remove("dropping");
    const files = [...e.dataTransfer.files];
    if (files.length !== 1) return say(`drop one media file (got ${files.length})`);
    uploadSearch(files[0]);
  });
}

async function uploadSearch(file) {
  const f = readFilters();
  const p = new URLSearchParams({ name: file.name, k: $("k").value || "10" });
  if ($("index").value) p.set("index", $("index").value);
  if (f.run) p.set("run", f.run);
  const where = clipWhere(f);
  if (where) p.set("where", where);
  say(`extracting ${file.name} …`, true);
  try {
    const body = await api(`/api/upload?${p}`, {
      method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
    });
    say("");
    showSpace(body);
    $("summary").textContent = `${body.results.length} clips like ${file.name} (index ${body.index})` + (body.vote ? ` · ${body.vote}` : "");
    showCards($("results"), body.results);
  } catch (err) { say(err.message); }
}

// ------------------------------------------------------------------ clip page
async function openClip(clipId, push = true) {
  setParams({ view: "clip", clip: clipId, run: $("f-run").value }, push);
  showView("clip");
  const box = $("clip-detail");
  box.replaceChildren(el("p", { class: "muted" }, "loading …"));
  try {
    const body = await api("/api/clip/" + enc(clipId));
    const row = body.clip;
    const facts = el("dl", { class: "facts-table" });
    for (const key of ["clip_id", "label", "tags", "split", "speaker", "modality", "duration_s", "fps", "width", "height",
      "sample_rate", "video_codec", "audio_codec", "container", "peak_frame", "face_ratio", "subtitle", "rel_path", "sha256"]) {
      if (row[key] !== null && row[key] !== undefined) facts.append(el("dt", {}, key), el("dd", {}, String(row[key])));
    }
    const top = el("div", { class: "cards" }, card(row), facts);
    const preds = el("div");
    for (const p of body.predictions) {
      const table = el("table", { class: "grid" }, el("tr", {}, el("th", {}, `run ${p.run}: ${p.label}`), el("th", {}, "p")));
      for (const [label, prob] of Object.entries(p.probs).sort((a, b) => b[1] - a[1])) {
        const bar = el("span", { class: "bar" });
        bar.style.width = Math.round(prob * 120) + "px";
        table.append(el("tr", {}, el("td", {}, label), el("td", {}, bar, " ", fmt(prob, 3))));
      }
      preds.append(table);
      if (p.explanation) preds.append(el("p", {}, el("b", {}, "LLM reasoning: "), p.explanation));
      if (p.modality_weights) {
        // attention fusion: how much each feature set weighed in this clip's prediction
        const weights = el("table", { class: "grid modality-weights" }, el("tr", {}, el("th", {}, `run ${p.run}: modality`), el("th", {}, "weight")));
        for (const [name, w] of Object.entries(p.modality_weights).sort((a, b) => b[1] - a[1])) {
          const bar = el("span", { class: "bar" });
          bar.style.width = Math.round(w * 120) + "px";
          weights.append(el("tr", {}, el("td", {}, name), el("td", {}, bar, " ", fmt(w, 3))));
        }
        preds.append(weights);
      }
    }
    const errors = el("div");
    for (const e of body.errors) errors.append(el("p", { class: "message" }, `${e.stage}${e.encoder ? " / " + e.encoder : ""}: ${e.message}`));
    const history = el("table", { class: "grid" });
    if (body.corrections.length) history.append(el("tr", {}, ...["when", "who", "column", "before", "after", ""].map((h) => el("th", {}, h))));
    for (const c of body.corrections) {
      const action = c.undone_by || c.undoes ? el("span", { class: "muted" }, c.undoes ? "undo" : "undone")
        : el("button", { type: "button", class: "undo", onclick: () => undo(c.correction_id, clipId) }, "Undo");
      history.append(el("tr", {}, el("td", {}, String(c.at).slice(0, 19)), el("td", {}, c.who), el("td", {}, c.column),
        el("td", {}, c.old_value ?? "∅"), el("td", {}, c.new_value ?? "∅"), el("td", {}, action)));
    }
    box.replaceChildren(el("h2", {}, row.clip_id), top, el("h3", {}, "Predictions"), preds,
      ...(body.errors.length ? [el("h3", {}, "Errors"), errors] : []),
      ...(body.corrections.length ? [el("h3", {}, "Corrections"), history] : []));
    const p = new URLSearchParams({ k: 8 });
    if ($("f-run").value) p.set("run", $("f-run").value);
    const near = await api(`/api/similar/${enc(clipId)}?${p}`).catch((err) => ({ results: [], error: err.message }));
    showCards($("clip-neighbours"), near.results);
    if (near.error) $("clip-neighbours").append(el("p", { class: "muted" }, near.error));
  } catch (err) { box.replaceChildren(); say(err.message); }
}

// ------------------------------------------------------------------ views
function showView(name) {
  for (const v of ["search", "clip", "map", "runs"]) $("view-" + v).hidden = v !== name;
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.view === name);
}

async function route() {
  const p = params();
  const view = p.get("view") || "search";
  say("");
  if (view === "clip" && p.get("clip")) return openClip(p.get("clip"), false);
  showView(view);
  if (view === "map") return window.emofsMap && window.emofsMap.open(p);
  if (view === "runs") return window.emofsRuns && window.emofsRuns.open(p);
  $("q").value = p.get("q") || "";
  $("k").value = p.get("k") || "10";
  $("index").value = p.get("index") || defaultSpace();
  writeFilters(p);
  await updatePredOptions();
  $("f-pred").value = p.get("pred") || "";
  return runSearch(false);
}

async function updatePredOptions() {
  const run = $("f-run").value;
  if (!run) return fillSelect($("f-pred"), []);
  try {
    const report = await api("/api/runs/" + enc(run));
    fillSelect($("f-pred"), report.vocabulary);
  } catch (err) { fillSelect($("f-pred"), []); }
}

async function init() {
  $("who").value = localStorage.getItem("emofs.who") || "";
  $("who").addEventListener("change", () => localStorage.setItem("emofs.who", $("who").value.trim()));
  try {
    state.info = await api("/api/info");
  } catch (err) { return say(err.message); }
  const info = state.info;
  $("store-name").textContent = `${info.clips} clips · ${info.store}`;
  $("read-only").hidden = !info.app.read_only;
  fillSpaces(info.spaces || []);
  loadSpaceRuns();
  $("build-space").addEventListener("click", buildSpace);
  fillSelect($("f-label"), Object.keys(info.labels || {}));
  fillSelect($("f-run"), info.predictions || []);
  const splits = await api("/api/clips?limit=1000&where=" + encodeURIComponent("split IS NOT NULL")).catch(() => ({ rows: [] }));
  fillSelect($("f-split"), [...new Set(splits.rows.map((r) => r.split))].sort());
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(true); });
  $("apply-filters").addEventListener("click", () => runSearch(true));
  $("clear-filters").addEventListener("click", () => { writeFilters(new URLSearchParams()); runSearch(true); });
  $("f-run").addEventListener("change", updatePredOptions);
  $("more").addEventListener("click", () => runSearch(false, true));
  $("upload").addEventListener("change", (e) => e.target.files[0] && uploadSearch(e.target.files[0]));
  dropZone($("search-form"));
  for (const a of document.querySelectorAll("header nav a")) {
    a.addEventListener("click", (e) => { e.preventDefault(); history.pushState(null, "", "?view=" + a.dataset.view); route(); });
  }
  window.addEventListener("popstate", route);
  await route();
}

window.emofs = { api, el, enc, card, showCards, openClip, setParams, fillSelect, say, sqlQuote, state, showView, route };
document.addEventListener("DOMContentLoaded", init);
