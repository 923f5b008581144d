// One job: its state, loss curves and learning rate, checkpoints, evaluation report, output and raw event log.
//
// Everything is drawn from the job's event stream, which replays the log from the start and then follows live:
// opening the page mid-way or after the end draws the same curves as watching from the beginning.

import { ApiError, TERMINAL_TYPES, followJob, get, post } from "./api.js";
import { TrainingCharts } from "./charts.js";
import {
  clear, errorText, fmtBytes, fmtDuration, fmtNumber, fmtTime, h, progressBar, shortId, statusBadge,
} from "./dom.js";
import { clearErrors, field, formError, numberOf, showError } from "./forms.js";
import { reportView } from "./report.js";

const FINISHED = new Set(["completed", "failed", "cancelled"]);
const TITLES = { train: "Training job", evaluate: "Evaluation job", generate: "Generation", dataset: "Upload" };
const LOG_LIMIT = 2000; // rows kept in the raw log table; the stream itself is never cut
const ENVELOPE = new Set(["event_id", "job_id", "seq", "time", "producer", "owner", "kind", "type", "schema_version"]);

// What the summary shows, by kind of job: [label, key of `values` in showStatus].
const STATS = {
  train: [["Step", "step"], ["Train loss", "loss"], ["Validation loss", "val_loss"], ["Tokens/s", "tokens_per_s"],
          ["Elapsed", "elapsed"], ["ETA", "eta"], ["Parameters", "parameters"], ["Device", "device"]],
  generate: [["Tokens/s", "tokens_per_s"], ["Submitted", "created"], ["Finished", "finished"], ["Took", "took"]],
  other: [["Submitted", "created"], ["Finished", "finished"], ["Took", "took"]],
};

function stat([label, key]) {
  return h("div", { class: "stat" }, h("dt", {}, label), h("dd", { "data-stat": key }, "–"));
}

/** The fields of an event that say something, without the envelope every event carries. */
function details(event) {
  const rest = Object.fromEntries(Object.entries(event).filter(([k]) => !ENVELOPE.has(k)));
  const text = JSON.stringify(rest);
  return text.length > 400 ? `${text.slice(0, 400)}…` : text;
}

export async function jobPage(view, context, jobId) {
  clear(view, h("p", { class: "muted" }, "Loading…"));
  let job;
  try {
    job = await get(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    const hint = error instanceof ApiError && error.status === 404
      ? " If it was just submitted, no agent may have accepted it yet: is a worker running?" : "";
    clear(view, h("h1", {}, `Job ${shortId(jobId)}`), errorText(error.message + hint),
      h("p", {}, h("a", { href: "#/" }, "Back to models and jobs")));
    return () => {};
  }
  const page = new JobView(view, job);
  const stop = followJob(jobId, (event) => page.apply(event), { onState: (s) => page.streamState(s) });
  return () => {
    stop();
    page.dispose();
  };
}

class JobView {
  constructor(view, job) {
    this.job = job;
    this.disposers = [];
    this.summary = h("dl", { class: "stats" }, (STATS[job.kind] || STATS.other).map(stat));
    this.badge = h("span", { id: "job-status" });
    this.progress = h("div", { id: "job-progress" });
    this.cancelButton = h("button", { class: "secondary", type: "button", onclick: () => this.cancel() }, "Cancel job");
    this.streamNote = h("span", { class: "muted small", id: "stream-state" });
    this.failure = h("div");
    this.logBody = h("tbody");
    this.logCount = h("span", { class: "muted small" });
    this.logWrap = h("div", { class: "log-wrap" }, h("table", { class: "log" },
      h("thead", {}, h("tr", {}, ["#", "Time", "Type", "Details"].map((t) => h("th", {}, t)))), this.logBody));
    const sections = [this.header(), this.stateCard()];
    if (job.kind === "train") sections.push(...this.trainingCards());
    if (job.kind === "evaluate") sections.push(this.evaluationCard());
    if (job.kind === "generate") sections.push(this.outputCard());
    sections.push(h("section", { class: "card", id: "event-log" },
      h("div", { class: "card-head" }, h("h2", {}, "Event log"), this.logCount), this.logWrap));
    clear(view, sections);
    this.showStatus();
  }

  header() {
    const { job } = this;
    const playground = h("span", { id: "playground-link", hidden: true }, " · ",
      h("a", { href: `#/playground?model=${encodeURIComponent(job.model_id)}` }, "Open in the playground"));
    const model = job.model_id
      ? h("p", { class: "muted" }, "Model ", h("strong", { id: "job-model" }, job.model_name || shortId(job.model_id)),
        job.kind === "train" ? playground : null)
      : null;
    const title = h("h1", {}, `${TITLES[job.kind] || "Job"} `, h("span", { class: "mono" }, shortId(job.id)), " ",
      this.badge);
    return h("div", { class: "page-head" },
      h("div", {}, title, model),
      h("div", { class: "actions" }, this.streamNote, this.cancelButton));
  }

  stateCard() {
    return h("section", { class: "card", id: "job-state" }, this.progress, this.summary, this.failure);
  }

  trainingCards() {
    this.lossChart = h("div", { class: "chart", id: "loss-chart", "data-points": "0" });
    this.rateChart = h("div", { class: "chart", id: "lr-chart", "data-points": "0" });
    this.charts = new TrainingCharts(this.lossChart, this.rateChart);
    this.disposers.push(() => this.charts.dispose());
    this.checkpoints = h("tbody");
    this.evaluation = h("div", { id: "latest-evaluation" },
      h("p", { class: "muted" }, "Available once training completes."));
    this.evaluateForm = this.evaluationForm();
    return [
      h("section", { class: "card charts" },
        h("div", { class: "chart-box" }, h("h2", {}, "Loss"), this.lossChart),
        h("div", { class: "chart-box" }, h("h2", {}, "Learning rate"), this.rateChart)),
      h("section", { class: "card", id: "checkpoints" }, h("h2", {}, "Checkpoints"),
        h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, ["Step", "Key", "Size", "Best", "SHA-256"].map((t) => h("th", {}, t)))),
          this.checkpoints))),
      h("section", { class: "card", id: "evaluation" }, h("h2", {}, "Evaluation"), this.evaluation, this.evaluateForm),
    ];
  }

  evaluationCard() {
    this.evaluation = h("div", { id: "latest-evaluation" },
      h("p", { class: "muted" }, "The report appears when the job ends."));
    return h("section", { class: "card", id: "evaluation" }, h("h2", {}, "Evaluation report"), this.evaluation);
  }

  outputCard() {
    this.outputs = new Map();
    this.output = h("div", { id: "generation-output" });
    return h("section", { class: "card" }, h("h2", {}, "Output"), this.output);
  }

  evaluationForm() {
    const prompts = h("textarea", { rows: "3", "data-field": "prompts" });
    prompts.value = "The\nA";
    const heldOut = h("textarea", { rows: "3", "data-field": "held_out.text",
      placeholder: "Blank: the validation split of the training text" });
    const tokens = h("input", { type: "number", min: "1", max: "1024", value: "32", "data-field": "max_new_tokens" });
    const status = h("p", { class: "muted", id: "evaluation-status" });
    const form = h("form", { class: "form-grid", id: "evaluate-form", novalidate: true, hidden: true },
      h("h3", { class: "wide" }, "Run an evaluation"),
      field("Prompts (one per line)", prompts, { hint: "Generation statistics are measured over these." }),
      field("Held-out text", heldOut),
      field("New tokens per prompt", tokens),
      h("div", { class: "field wide buttons" }, h("button", { type: "submit" }, "Run evaluation"), status),
      formError());
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(form);
      const body = { prompts: prompts.value.split("\n").map((p) => p.trim()).filter(Boolean),
                     max_new_tokens: numberOf(tokens) };
      if (heldOut.value.trim()) body.held_out = { text: heldOut.value };
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const submitted = await post(`/api/v1/models/${encodeURIComponent(this.job.model_id)}/evaluate`, body);
        this.followEvaluation(submitted.job_id, status, button);
      } catch (error) {
        showError(form, error);
        button.disabled = false;
      }
    });
    return form;
  }

  followEvaluation(jobId, status, button) {
    clear(status, "Evaluating: job ", h("a", { href: `#/jobs/${jobId}`, class: "mono" }, shortId(jobId)), "…");
    const stop = followJob(jobId, (event) => {
      if (event.type === "EvaluationCompleted") {
        this.showReport(event.report, jobId, event.time);
        clear(status, "Done: job ", h("a", { href: `#/jobs/${jobId}`, class: "mono" }, shortId(jobId)), ".");
        button.disabled = false;
      } else if (event.type === "EvaluationFailed" || event.type === "JobCancelled") {
        showError(this.evaluateForm, { message: event.reason, field: event.field });
        clear(status);
        button.disabled = false;
      }
    });
    this.disposers.push(stop);
  }

  showReport(report, jobId, time) {
    clear(this.evaluation,
      h("p", { class: "muted" }, "Evaluation ", h("a", { href: `#/jobs/${jobId}`, class: "mono" }, shortId(jobId)),
        time ? ` at ${fmtTime(time)}` : ""),
      reportView(report));
    this.evaluation.dataset.job = jobId;
  }

  async loadLatestEvaluation() {
    try {
      const model = await get(`/api/v1/models/${encodeURIComponent(this.job.model_id)}`);
      if (this.evaluation.dataset.job) return; // one run from this page arrived first
      const latest = model.latest_evaluation;
      if (latest) this.showReport(latest.report, latest.job_id, latest.created_at);
      else clear(this.evaluation, h("p", { class: "muted" }, "No evaluation yet."));
    } catch (error) {
      clear(this.evaluation, errorText(error.message));
    }
  }

  streamState(state) {
    const text = { open: "following live", reconnecting: "reconnecting…", closed: "stream closed", ended: "" };
    this.streamNote.textContent = text[state] ?? "";
  }

  /** One fact from the stream: the log row, the summary, the charts and the sections it concerns. */
  apply(event) {
    this.log(event);
    const job = this.job;
    if (TERMINAL_TYPES.has(event.type)) job.finished_at = event.time;
    switch (event.type) {
      case "JobAccepted":
        job.created_at = job.created_at || event.time;
        break;
      case "TrainRendezvous":  // a job of several hosts waits for the others to join
        Object.assign(job, { status: "running", device: `waiting for ${event.hosts} hosts to join at ${event.endpoint}` });
        break;
      case "TrainStarted":
        // Several processes (DDP): the ranks' devices, and tokens/s is their sum.
        Object.assign(job, { status: "running", max_iters: event.max_iters, num_parameters: event.num_parameters,
                             device: (event.world_size || 1) > 1
                               ? `${event.world_size} processes: ${(event.ranks || []).join(", ")}` : event.device });
        break;
      case "TrainProgress":
        Object.assign(job, { status: "running", step: event.step, max_iters: event.max_iters, loss: event.loss,
                             progress: event.progress, tokens_per_s: event.tokens_per_s, eta_s: event.eta_s,
                             elapsed_s: event.elapsed_s });
        this.charts?.addProgress(event.step, event.loss, event.learning_rate);
        break;
      case "ValidationCompleted":
        job.val_loss = event.val_loss;
        this.charts?.addValidation(event.step, event.val_loss);
        break;
      case "CheckpointSaved":
        this.checkpoints?.append(h("tr", { "data-step": String(event.step) },
          h("td", { class: "num" }, fmtNumber(event.step)), h("td", { class: "mono" }, event.key),
          h("td", { class: "num" }, fmtBytes(event.bytes)), h("td", {}, event.is_best ? "best" : ""),
          h("td", { class: "mono", title: event.sha256 }, event.sha256.slice(0, 12))));
        break;
      case "TrainCompleted":
        Object.assign(job, { status: "completed", progress: 1, step: event.final_step, eta_s: 0,
                             loss: event.train_loss ?? job.loss, val_loss: event.val_loss ?? job.val_loss,
                             tokens_per_s: event.tokens_per_s ?? job.tokens_per_s, elapsed_s: event.wall_s });
        break;
      case "EvaluationCompleted":
        job.status = "completed";
        if (job.kind === "evaluate") this.showReport(event.report, job.id, event.time);
        break;
      case "TokensGenerated": {
        job.status = "running";
        this.outputs?.set(event.sequence, (this.outputs.get(event.sequence) || "") + event.text);
        break;
      }
      case "GenerationCompleted":
        job.status = "completed";
        Object.assign(job, { tokens_per_s: event.tokens_per_s });
        break;
      case "TrainFailed":
      case "EvaluationFailed":
      case "GenerationFailed":
        Object.assign(job, { status: "failed", error: event.reason });
        break;
      case "JobCancelled":
        Object.assign(job, { status: "cancelled", error: event.reason });
        break;
      default:
        break;
    }
    this.scheduleStatus();
  }

  log(event) {
    const box = this.logWrap;
    const following = box.scrollTop + box.clientHeight >= box.scrollHeight - 8; // at the newest: stay there
    this.logBody.append(h("tr", { "data-type": event.type },
      h("td", { class: "num" }, String(event.seq)), h("td", {}, fmtTime(event.time)),
      h("td", {}, h("span", { class: "event-type" }, event.type)), h("td", { class: "mono details" }, details(event))));
    while (this.logBody.rows.length > LOG_LIMIT) this.logBody.deleteRow(0);
    this.logCount.textContent = `${event.seq} events`;
    if (following) box.scrollTop = box.scrollHeight;
  }

  scheduleStatus() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.showStatus(); });
  }

  showStatus() {
    const job = this.job;
    clear(this.badge, statusBadge(job.status));
    const finished = FINISHED.has(job.status);
    this.cancelButton.hidden = finished;
    if (job.kind === "train") clear(this.progress, progressBar(job.progress, "training progress"));
    const values = {
      step: job.max_iters ? `${fmtNumber(job.step ?? 0)} / ${fmtNumber(job.max_iters)}` : fmtNumber(job.step),
      loss: fmtNumber(job.loss, 4), val_loss: fmtNumber(job.val_loss, 4), tokens_per_s: fmtNumber(job.tokens_per_s, 0),
      elapsed: fmtDuration(job.elapsed_s), eta: finished ? "–" : fmtDuration(job.eta_s),
      parameters: fmtNumber(job.num_parameters), device: job.device || "–",
      created: fmtTime(job.created_at), finished: fmtTime(job.finished_at),
      took: job.finished_at && job.created_at
        ? fmtDuration((new Date(job.finished_at) - new Date(job.created_at)) / 1000) : "–",
    };
    for (const [key, text] of Object.entries(values)) {
      const cell = this.summary.querySelector(`[data-stat="${key}"]`);
      if (cell) cell.textContent = text;
    }
    clear(this.failure, job.error && job.status !== "completed" ? errorText(job.error) : null);
    if (this.output) {
      clear(this.output, [...this.outputs.entries()].map(([sequence, text]) =>
        h("pre", { class: "generated", "data-sequence": String(sequence) }, text)));
    }
    if (job.kind === "train" && job.status === "completed" && !this.evaluationLoaded) {
      this.evaluationLoaded = true;
      this.evaluateForm.hidden = false;
      const link = document.getElementById("playground-link");
      if (link) link.hidden = false;
      this.loadLatestEvaluation();
    }
  }

  async cancel() {
    this.cancelButton.disabled = true;
    try {
      await post(`/api/v1/jobs/${encodeURIComponent(this.job.id)}/cancel`);
    } catch (error) {
      clear(this.failure, errorText(error.message));
      this.cancelButton.disabled = false;
    }
  }

  dispose() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.disposers.forEach((stop) => stop());
  }
}
