// The overview: models and jobs, loaded once and then kept current by the live feed (no polling).

import { get } from "./api.js";
import { clear, errorText, fmtDuration, fmtNumber, fmtTime, h, progressBar, shortId, statusBadge } from "./dom.js";

const HIDDEN_KINDS = new Set(["dataset", "delete"]); // facts about uploads and deletions, not jobs to follow
const FINISHED = new Set(["completed", "failed", "cancelled"]);
let kindFilter = "";

/** Models and jobs by id, changed by the facts of the live feed as they arrive. */
export class Board {
  constructor(models, jobs) {
    this.models = new Map(models.map((m) => [m.id, { ...m }]));
    this.jobs = new Map(jobs.map((j) => [j.id, { ...j }]));
    this.picked = new Set(); // models chosen to compare
  }

  job(event) {
    let job = this.jobs.get(event.job_id);
    if (!job) {
      job = { id: event.job_id, kind: event.kind, status: "accepted", progress: 0, model_id: event.model_id || null,
              model_name: event.model_name || null, created_at: event.time };
      this.jobs.set(job.id, job);
    }
    job.updated_at = event.time;
    return job;
  }

  model(id) {
    return id ? this.models.get(id) : undefined;
  }

  /** Apply one fact; returns whether anything shown changed. */
  apply(event) {
    if (event.type === "ModelDeleted") return this.models.delete(event.model_id);
    if (HIDDEN_KINDS.has(event.kind)) return false;
    // A fact older than the lists (it arrived while they loaded) must not move a job back.
    const known = this.jobs.get(event.job_id);
    if (known && (FINISHED.has(known.status) || (event.type === "JobAccepted" && known.status !== "accepted"))) {
      return false;
    }
    if (known && event.type === "TrainProgress" && (known.step ?? -1) > event.step) return false;
    const job = this.job(event);
    if (event.model_id && !job.model_id) job.model_id = event.model_id;
    const model = this.model(job.model_id);
    const isTrain = job.kind === "train";
    switch (event.type) {
      case "JobAccepted":
        job.status = "accepted";
        job.model_name = event.model_name || job.model_name;
        if (isTrain) this.accepted(event, job);
        break;
      case "TrainStarted":
        Object.assign(job, { status: "running", max_iters: event.max_iters, started_at: event.time });
        if (model) Object.assign(model, { status: "training", max_iters: event.max_iters });
        break;
      case "TrainProgress": {
        const values = { step: event.step, max_iters: event.max_iters, loss: event.loss, progress: event.progress,
                         eta_s: event.eta_s, tokens_per_s: event.tokens_per_s };
        Object.assign(job, values, { status: "running" });
        if (model) Object.assign(model, values, { status: "training" });
        break;
      }
      case "ValidationCompleted":
        job.val_loss = event.val_loss;
        if (model) model.val_loss = event.val_loss;
        break;
      case "CheckpointSaved":
        if (model) model.latest_checkpoint = event.key;
        break;
      case "TrainCompleted":
        Object.assign(job, { status: "completed", progress: 1, step: event.final_step, eta_s: 0 });
        if (model) Object.assign(model, { status: "completed", progress: 1, step: event.final_step, eta_s: 0 });
        break;
      case "TrainFailed":
        Object.assign(job, { status: "failed", error: event.reason });
        if (model) Object.assign(model, { status: "failed", error: event.reason });
        break;
      case "JobCancelled":
        job.status = "cancelled";
        if (model && isTrain && model.train_job_id === job.id) model.status = "cancelled";
        break;
      case "EvaluationCompleted":
      case "GenerationCompleted":
        Object.assign(job, { status: "completed", progress: 1 });
        break;
      case "EvaluationFailed":
      case "GenerationFailed":
        Object.assign(job, { status: "failed", error: event.reason });
        break;
      case "TokensGenerated":
        job.status = "running";
        break;
      case "SweepStarted":
        job.status = "running";
        break;
      case "SweepProgress":
        Object.assign(job, { status: "running", progress: event.total ? event.finished / event.total : 0 });
        break;
      case "SweepCompleted":
        Object.assign(job, { status: "completed", progress: 1 });
        break;
      case "SweepFailed":
        Object.assign(job, { status: "failed", error: event.reason });
        break;
      default:
        return false;
    }
    return true;
  }

  accepted(event, job) {
    const known = this.model(event.model_id);
    const fields = { status: "pending", progress: 0, train_job_id: job.id, eta_s: null, loss: null };
    if (known) {
      Object.assign(known, fields);
    } else if (event.model_id) {
      this.models.set(event.model_id, { id: event.model_id, name: event.model_name, step: 0, max_iters: null,
                                        tokenizer: event.tokenizer, created_at: event.time, ...fields });
    }
  }

  sortedModels() {
    return [...this.models.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  }

  sortedJobs() {
    return [...this.jobs.values()]
      .filter((j) => !HIDDEN_KINDS.has(j.kind) && (!kindFilter || j.kind === kindFilter))
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  }
}

function stepText(item) {
  if (item.step === null || item.step === undefined) return "–";
  return item.max_iters ? `${fmtNumber(item.step)} / ${fmtNumber(item.max_iters)}` : fmtNumber(item.step);
}

function etaText(item) {
  return item.status === "training" || item.status === "running" ? fmtDuration(item.eta_s) : "–";
}

// Validation loss, as the CLI shows it: the loss on text the model did not train on.
function valLoss(model, job) {
  return model.val_loss ?? model.metrics?.val_loss ?? job?.val_loss;
}

function modelRow(model, board) {
  const job = board.jobs.get(model.train_job_id);
  const name = model.version ? `${model.name}/${model.version}` : model.name;
  const link = model.train_job_id ? h("a", { href: `#/jobs/${model.train_job_id}` }, name) : name;
  const aliases = (model.aliases || []).map((a) => h("span", { class: "badge alias" }, `@${a}`));
  const pick = h("input", { type: "checkbox", class: "compare-pick", value: model.id, "aria-label": `compare ${name}`,
    checked: board.picked.has(model.id),
    onchange: (e) => { if (e.target.checked) board.picked.add(model.id); else board.picked.delete(model.id); } });
  // Any checkpoint serves, a cancelled or failed run's too.
  const playground = model.latest_checkpoint || model.best_checkpoint
    ? h("a", { class: "button-link small", href: `#/playground?model=${encodeURIComponent(model.id)}` }, "Playground")
    : null;
  return h("tr", { "data-model-id": model.id, "data-status": model.status },
    h("td", {}, pick),
    h("td", { class: "name" }, link, " ", aliases, model.error ? h("div", { class: "error small" }, model.error) : null),
    h("td", {}, statusBadge(model.status)),
    h("td", { class: "progress-cell" }, progressBar(model.progress, `${model.name} progress`)),
    h("td", { class: "num" }, stepText(model)),
    h("td", { class: "num" }, fmtNumber(valLoss(model, job))),
    h("td", { class: "num" }, etaText({ ...model, eta_s: model.eta_s ?? job?.eta_s })),
    h("td", {}, playground));
}

function jobRow(job) {
  const page = job.kind === "sweep" ? `#/sweeps/${job.id}` : `#/jobs/${job.id}`;
  return h("tr", { "data-job-id": job.id, "data-status": job.status },
    h("td", {}, h("a", { href: page, class: "mono" }, shortId(job.id))),
    h("td", {}, job.kind),
    h("td", {}, job.model_name || shortId(job.model_id) || "–"),
    h("td", {}, statusBadge(job.status)),
    h("td", { class: "progress-cell" },
      ["train", "sweep"].includes(job.kind) ? progressBar(job.progress, `job ${shortId(job.id)}`) : null),
    h("td", { class: "num" }, job.kind === "train" ? stepText(job) : "–"),
    h("td", { class: "num" }, fmtNumber(job.val_loss)),
    h("td", { class: "num" }, etaText(job)),
    h("td", {}, fmtTime(job.updated_at || job.created_at)));
}

function table(headers, rows, empty, id) {
  const body = rows.length ? rows : [h("tr", {}, h("td", { colspan: String(headers.length), class: "muted" }, empty))];
  return h("div", { class: "table-wrap" }, h("table", { id },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))), h("tbody", {}, body)));
}

export async function overview(view, { feed }) {
  clear(view, h("h1", {}, "Models and jobs"), h("p", { class: "muted" }, "Loading…"));
  // Listen before loading, so that nothing that happens while the lists load is missed; applying a fact twice
  // leaves the same state.
  let board = null;
  const early = [];
  let frame = 0;
  const stop = feed.listen((event) => {
    if (!board) early.push(event);
    else if (board.apply(event) && !frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
  });
  const dispose = () => {
    stop();
    if (frame) cancelAnimationFrame(frame);
  };
  let models;
  let jobs;
  try {
    [models, jobs] = await Promise.all([get("/api/v1/models?limit=50"), get("/api/v1/jobs?limit=50")]);
  } catch (error) {
    clear(view, h("h1", {}, "Models and jobs"), errorText(error.message));
    return dispose;
  }
  board = new Board(models.items, jobs.items);
  early.forEach((event) => board.apply(event));
  const modelsBox = h("section", { class: "card", id: "models" });
  const jobsBox = h("section", { class: "card", id: "jobs" });
  const compare = h("button", { id: "compare-button", class: "secondary small", type: "button",
    onclick: () => {
      if (board.picked.size >= 2) window.location.hash = `#/compare?runs=${[...board.picked].join(",")}`;
    } }, "Compare selected");
  const filter = h("select", { id: "job-kind", "aria-label": "Show jobs of kind",
    onchange: (e) => { kindFilter = e.target.value; render(); } },
    ["", "train", "evaluate", "generate", "sweep"].map((kind) =>
      h("option", { value: kind, selected: kind === kindFilter }, kind || "all kinds")));

  function render() {
    clear(modelsBox, h("div", { class: "card-head" }, h("h2", {}, "Models"), compare),
      table(["", "Name", "Status", "Progress", "Step", "Val loss", "ETA", ""],
        board.sortedModels().map((m) => modelRow(m, board)), "No models yet: train one.", "models-table"));
    clear(jobsBox, h("div", { class: "card-head" }, h("h2", {}, "Jobs"), filter),
      table(["Job", "Kind", "Model", "Status", "Progress", "Step", "Val loss", "ETA", "Updated"],
        board.sortedJobs().map(jobRow), "No jobs yet.", "jobs-table"));
  }

  clear(view, h("div", { class: "page-head" }, h("h1", {}, "Models and jobs"),
    h("a", { class: "button-link", href: "#/train" }, "Train a model")), modelsBox, jobsBox);
  render();
  return dispose;
}
