// Experiments: runs side by side (#/compare?runs=a,b,...) and a sweep's trials live (#/sweeps/<id>).
//
// The comparison overlays the runs' loss curves on one chart, by step or by wall time since each run started, over
// a table of their hyperparameters with the ones that differ marked. A sweep's page lists its trials and plots the
// sweep's metric against one hyperparameter (a scatter chart); the live feed's facts of the sweep or of its trials
// reload it, at most once a second.

import { get } from "./api.js";
import { loadUPlot } from "./charts.js";
import { clear, errorText, fmtNumber, h, progressBar, shortId, statusBadge } from "./dom.js";

const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563", "#65a30d",
                 "#9333ea"];
const HEIGHT = 300;

function label(run) {
  return run.version ? `${run.name}/${run.version}` : shortId(run.id);
}

/** Series aligned on one x axis (uPlot's data form): the union of every run's x, with gaps where a run has none. */
export function aligned(curves) {
  const xs = [...new Set(curves.flatMap((points) => points.map(([x]) => x)))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = curves.map((points) => {
    const column = new Array(xs.length).fill(null);
    for (const [x, y] of points) column[index.get(x)] = y;
    return column;
  });
  return [xs, ...ys];
}

function chartWidth(element) {
  return Math.max(280, Math.floor(element.getBoundingClientRect().width || element.parentElement.clientWidth));
}

async function plot(element, xLabel, series, data, scatter = false) {
  const uPlot = await loadUPlot();
  if (!uPlot) {
    clear(element, h("p", { class: "notice chart-missing" }, "Charts need the uPlot library: run ",
      h("code", {}, "npm ci"), " in the repository, then restart the gateway."));
    return null;
  }
  element.replaceChildren();
  const options = {
    width: chartWidth(element), height: HEIGHT, scales: { x: { time: false } },
    axes: [{ label: xLabel, stroke: "#4b5563" }, { label: "loss", stroke: "#4b5563", size: 64 }],
    series: [{ label: xLabel }, ...series.map((s, i) => ({
      label: s, stroke: PALETTE[i % PALETTE.length], width: scatter ? 0 : 2, spanGaps: true,
      points: { show: scatter, size: 9, fill: PALETTE[i % PALETTE.length] },
      ...(scatter ? { paths: () => null } : {}),
    }))],
    legend: { live: true },
  };
  return new uPlot(options, data, element);
}

export async function comparePage(view, _context, params) {
  const runs = (params.get("runs") || "").split(",").filter(Boolean);
  clear(view, h("h1", {}, "Compare runs"), h("p", { class: "muted" }, "Loading…"));
  let answer;
  try {
    answer = await get(`/api/v1/compare?runs=${encodeURIComponent(runs.join(","))}`);
  } catch (error) {
    clear(view, h("h1", {}, "Compare runs"), errorText(error.message));
    return () => {};
  }
  const names = answer.runs.map(label);
  const chart = h("div", { class: "chart", id: "compare-chart" });
  let current = null;
  const draw = async () => {
    const byTime = view.querySelector("#compare-x").value === "time";
    const which = view.querySelector("#compare-y").value;
    const curves = answer.runs.map((run) => run.history[which].map(([step, loss, seconds]) =>
      [byTime ? seconds : step, loss]));
    chart.dataset.points = String(curves.reduce((n, c) => n + c.length, 0));
    chart.dataset.series = String(curves.length);
    current?.destroy();
    current = await plot(chart, byTime ? "seconds" : "step", names, aligned(curves));
  };
  const select = (id, options) => h("select", { id, onchange: draw },
    options.map(([value, text]) => h("option", { value }, text)));
  const differing = new Set(answer.differences);
  const rows = Object.entries(answer.parameters).map(([key, values]) =>
    h("tr", { class: differing.has(key) ? "differs" : "", "data-key": key },
      h("th", { scope: "row" }, differing.has(key) ? `* ${key}` : key), values.map((v) => h("td", {}, fmtNumber(v)))));
  const metric = (title, read) => h("tr", {}, h("th", { scope: "row" }, title),
    answer.runs.map((run) => h("td", { class: "num" }, fmtNumber(read(run)))));
  const table = h("div", { class: "table-wrap" }, h("table", { id: "compare-table" },
    h("thead", {}, h("tr", {}, h("th", {}, ""), names.map((n) => h("th", {}, n)))),
    h("tbody", {},
      metric("best validation loss", (r) => r.metrics.best_val_loss),
      metric("final validation loss", (r) => r.metrics.val_loss),
      metric("held-out perplexity", (r) => r.latest_evaluation?.report?.held_out?.perplexity),
      metric("tokens/s", (r) => r.metrics.tokens_per_s),
      rows)));
  clear(view, h("div", { class: "page-head" }, h("h1", {}, "Compare runs"),
    h("span", { class: "muted" }, `${answer.differences.length} hyperparameters differ (*)`)),
  h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Loss"),
    h("div", {}, select("compare-y", [["val", "validation loss"], ["train", "training loss"]]),
      select("compare-x", [["step", "by step"], ["time", "by wall time"]]))), chart),
  h("section", { class: "card" }, h("h2", {}, "Hyperparameters and metrics"), table));
  await draw();
  return () => current?.destroy();
}

function trialRow(trial, best) {
  return h("tr", { "data-trial": String(trial.index), "data-status": trial.status, class: trial.index === best ? "best" : "" },
    h("td", { class: "num" }, trial.index === best ? `★ ${trial.index}` : String(trial.index)),
    h("td", { class: "mono" }, JSON.stringify(trial.parameters)),
    h("td", {}, trial.version ? h("a", { href: `#/jobs/${trial.job_id}` }, `v${trial.version}`) : "–"),
    h("td", {}, statusBadge(trial.status)),
    h("td", { class: "num" }, `${fmtNumber(trial.step ?? 0)} / ${fmtNumber(trial.max_iters)}`),
    h("td", { class: "num" }, fmtNumber(trial.value, 4)),
    h("td", { class: "small" }, trial.stopped || ""));
}

export async function sweepPage(view, { feed }, sweepId) {
  const chart = h("div", { class: "chart", id: "sweep-chart" });
  const parameter = h("select", { id: "sweep-parameter", onchange: () => redraw() });
  let sweep = null;
  let current = null;
  let pending = 0;
  let watched = new Set([sweepId]);

  async function redraw() {
    const name = parameter.value;
    const points = sweep.trials.filter((t) => t.value !== null && typeof t.parameters[name] === "number")
      .map((t) => [t.parameters[name], t.value]);
    chart.dataset.points = String(points.length);
    current?.destroy();
    current = await plot(chart, name || "parameter", [sweep.result?.metric || "val_loss"], aligned([points]), true);
  }

  async function load() {
    pending = 0;
    try {
      sweep = await get(`/api/v1/sweeps/${encodeURIComponent(sweepId)}`);
    } catch (error) {
      clear(view, h("h1", {}, "Sweep"), errorText(error.message));
      return;
    }
    watched = new Set([sweepId, ...sweep.trials.map((t) => t.job_id)]);
    const names = [...new Set(sweep.trials.flatMap((t) => Object.keys(t.parameters)))];
    const chosen = parameter.value || names[0] || "";
    clear(parameter, names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
    const best = sweep.result?.best?.index;
    const summary = sweep.result?.summary;
    clear(view, h("div", { class: "page-head" }, h("h1", {}, `Sweep of ${sweep.model_name || shortId(sweepId)}`),
      statusBadge(sweep.status)),
    h("section", { class: "card", id: "sweep-summary" },
      progressBar(sweep.progress, "trials ended"),
      h("p", {}, sweep.result?.best
        ? `Best so far: trial ${best} ${JSON.stringify(sweep.result.best.parameters)}, ` +
          `${fmtNumber(sweep.result.best.value, 4)} at step ${sweep.result.best.step}`
        : "No trial has a metric yet."),
      summary ? h("p", { class: "muted" }, `${summary.stopped} stopped early; ${fmtNumber(summary.steps_run)} of ` +
        `${fmtNumber(summary.steps_planned)} planned steps run` + (summary.alias ? `; best is now @${summary.alias}` : ""))
        : null),
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Metric against"), parameter), chart),
    h("section", { class: "card" }, h("h2", {}, "Trials"), h("div", { class: "table-wrap" },
      h("table", { id: "trials-table" }, h("thead", {}, h("tr", {}, ["Trial", "Parameters", "Version", "Status",
        "Steps", sweep.result?.metric || "metric", "Stopped early"].map((t) => h("th", {}, t)))),
      h("tbody", {}, sweep.trials.map((t) => trialRow(t, best)))))));
    await redraw();
  }

  const stop = feed.listen((event) => {
    if (watched.has(event.job_id) && !pending) pending = setTimeout(load, 1000);
  });
  await load();
  return () => {
    stop();
    clearTimeout(pending);
    current?.destroy();
  };
}
