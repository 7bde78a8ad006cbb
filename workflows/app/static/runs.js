// The Runs view: every prediction run's figures; a run's per-class table and confusion
// matrix, whose cells open the clips of that (true label, predicted label) pair.
"use strict";

(function () {
  const { api, el, enc, fmt = (x) => (x === null || x === undefined ? "" : Number(x).toFixed(3)), setParams } = window.emofs;
  const $ = (id) => document.getElementById(id);

  async function detail(run, push) {
    setParams({ view: "runs", run }, push);
    const r = await api("/api/runs/" + enc(run));
    const box = $("run-detail");
    if (!r.metrics) return box.replaceChildren(el("p", { class: "muted" }, `run ${run}: no clip has a label of its vocabulary, so nothing to score`));
    const m = r.metrics;
    const head = el("p", {}, `run ${run}: ${r.predictions} predictions, ${r.scored} scored · accuracy ${fmt(m.accuracy)} · weighted F1 ${fmt(m.weighted_f1)} · UAR ${fmt(m.uar)} · WAR ${fmt(m.war)}`);
    const perClass = el("table", { class: "grid" }, el("tr", {}, ...["class", "precision", "recall", "F1", "support"].map((h) => el("th", {}, h))));
    for (const [label, c] of Object.entries(m.per_class)) {
      perClass.append(el("tr", {}, el("td", {}, label), el("td", {}, fmt(c.precision)), el("td", {}, fmt(c.recall)), el("td", {}, fmt(c.f1)), el("td", {}, String(c.support))));
    }
    const max = Math.max(1, ...m.confusion.flat());
    const cm = el("table", { class: "grid confusion" }, el("tr", {}, el("th", {}, "true \\ predicted"), ...r.vocabulary.map((v) => el("th", {}, v))));
    r.cells.forEach((row, i) => {
      const tr = el("tr", {}, el("th", {}, r.vocabulary[i]));
      row.forEach((cell) => {
        const td = el("td", { class: "cell", title: `${cell.count} clips: ${r.vocabulary[i]} predicted as ${cell.pred_label}` }, String(cell.count));
        td.dataset.true = r.vocabulary[i];
        td.dataset.pred = cell.pred_label;
        td.style.background = `rgba(47, 111, 223, ${(0.85 * cell.count) / max})`;
        td.addEventListener("click", () => {
          history.pushState(null, "", "?" + new URLSearchParams({ view: "search", where: cell.where, run, pred: cell.pred_label }));
          window.emofs.route();
        });
        tr.append(td);
      });
      cm.append(tr);
    });
    box.replaceChildren(head, el("h3", {}, "Confusion matrix (click a cell for its clips)"), cm, el("h3", {}, "Per class"), perClass,
      ...(r.cv ? [el("h3", {}, `Cross-validation of its head (${r.cv.dir})`), cvTable(r.cv)] : []));
  }

  // One cross-validation (cv.json): a row per fold, then mean ± std over the folds.
  function cvTable(cv) {
    const table = el("table", { class: "grid cv", "data-dir": cv.dir },
      el("tr", {}, ...["fold", "test groups", "test clips", ...cv.figures, "best epoch"].map((h) => el("th", {}, h))));
    for (const r of cv.per_fold) {
      table.append(el("tr", {}, el("td", {}, String(r.fold)), el("td", {}, String(r.test_groups ?? "")), el("td", {}, String(r.n_test ?? "")),
        ...cv.figures.map((f) => el("td", {}, fmt(r[f]))), el("td", {}, String(r.best_epoch ?? ""))));
    }
    table.append(el("tr", { class: "cv-mean" }, el("th", {}, "mean ± std"), el("td", {}), el("td", {}),
      ...cv.figures.map((f) => el("td", {}, `${fmt(cv.mean[f])} ± ${fmt(cv.std[f])}`)), el("td", {})));
    return table;
  }

  window.emofsRuns = {
    async open(p) {
      const body = await api("/api/runs");
      const table = $("runs-table");
      table.replaceChildren(el("tr", {}, ...["run", "predictions", "scored", "accuracy", "weighted F1", "UAR", "predicted at"].map((h) => el("th", {}, h))));
      for (const r of body.runs) {
        const tr = el("tr", { class: "clickable" }, el("td", {}, r.run), el("td", {}, String(r.predictions)), el("td", {}, String(r.scored)),
          el("td", {}, fmt(r.accuracy)), el("td", {}, fmt(r.weighted_f1)), el("td", {}, fmt(r.uar)), el("td", {}, String(r.predicted_at || "").slice(0, 19)));
        tr.addEventListener("click", () => detail(r.run, true));
        table.append(tr);
      }
      const cvBox = $("runs-cv");
      cvBox.replaceChildren(...(body.cv || []).flatMap((cv) => [el("h3", {}, `Cross-validation ${cv.dir}: ${cv.folds} folds`), cvTable(cv)]));
      if (!body.runs.length) $("run-detail").replaceChildren(el("p", { class: "muted" }, "no prediction runs yet: `emofs predict` or `emofs label` writes one"));
      const run = p.get("run") || (body.runs[0] && body.runs[0].run);
      if (run) await detail(run, false);
    },
  };
})();
