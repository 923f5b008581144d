// The playground: a prompt, sampling controls, and the completion streaming in token by token.
//
// `POST /api/v1/models/{id}/generate` with `"stream": true` answers with server-sent events; EventSource cannot
// POST, so the response body is read as it arrives. Time to first token and tokens/s are measured here, as the
// person at the browser sees them, and the server's own figures are shown when the generation completes.

import { get, postEventStream } from "./api.js";
import { clear, errorText, fmtNumber, h } from "./dom.js";
import { clearErrors, field, formError, numberOf, showError } from "./forms.js";

function number(name, attrs) {
  return h("input", { type: "number", name, "data-field": name, ...attrs });
}

export async function playgroundPage(view, context, params) {
  clear(view, h("h1", {}, "Playground"), h("p", { class: "muted" }, "Loading models…"));
  let models;
  try {
    // Any model with a checkpoint serves: a cancelled or failed run's too, or one still training.
    models = (await get("/api/v1/models?limit=200")).items.filter((m) => m.serving_checkpoint);
  } catch (error) {
    clear(view, h("h1", {}, "Playground"), errorText(error.message));
    return () => {};
  }
  if (!models.length) {
    clear(view, h("h1", {}, "Playground"),
      h("p", {}, "No model has a checkpoint yet. ", h("a", { href: "#/train" }, "Train one"),
        " and come back after its first checkpoint."));
    return () => {};
  }
  const model = h("select", { name: "model", "data-field": "model_id" },
    models.map((m) => h("option", { value: m.id, selected: m.id === params.get("model") },
      `${m.name} (${m.tokenizer || "?"})`)));
  const prompt = h("textarea", { name: "prompt", rows: "4", "data-field": "prompt",
                                 placeholder: "Begin the text here" });
  const temperature = number("temperature", { min: "0", max: "5", step: "0.05", value: "0.8" });
  const topK = number("top_k", { min: "1", step: "1", placeholder: "off" });
  const topP = number("top_p", { min: "0.01", max: "1", step: "0.01", value: "1" });
  const maxTokens = number("max_tokens", { min: "1", step: "1", value: "200" });
  const seed = number("seed", { min: "0", step: "1", placeholder: "random" });
  const stop = h("textarea", { name: "stop", rows: "2", "data-field": "stop", placeholder: "One per line (optional)" });
  const generate = h("button", { type: "submit", id: "generate" }, "Generate");
  const abort = h("button", { type: "button", class: "secondary", id: "stop-generation", hidden: true }, "Stop");

  const promptEcho = h("span", { class: "prompt-echo" });
  const completion = h("span", { class: "completion", id: "completion", "data-chunks": "0" });
  const output = h("pre", { class: "generated output-box", id: "generation-output" }, promptEcho, completion);
  const stat = (label, key) => h("div", { class: "stat" }, h("dt", {}, label),
    h("dd", { "data-stat": key, id: `stat-${key}` }, "–"));
  const stats = h("dl", { class: "stats" }, stat("Time to first token", "ttft"), stat("Tokens/s", "tps"),
    stat("Tokens", "tokens"), stat("Finish", "finish"), stat("Server TTFT", "server-ttft"),
    stat("Server tokens/s", "server-tps"));

  const form = h("form", { class: "form-grid", id: "playground-form", novalidate: true },
    field("Model", model), field("Seed", seed),
    field("Prompt", prompt, { wide: true }),
    field("Temperature", temperature, { hint: "0 is greedy." }), field("Top-k", topK), field("Top-p", topP),
    field("Max new tokens", maxTokens), field("Stop strings", stop, { wide: true }),
    h("div", { class: "field wide buttons" }, generate, abort), formError());

  let controller = null;
  const setStat = (key, text) => { stats.querySelector(`[data-stat="${key}"]`).textContent = text; };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    controller?.abort();
    controller = new AbortController();
    const body = {
      prompt: prompt.value, temperature: numberOf(temperature), top_k: numberOf(topK), top_p: numberOf(topP),
      max_tokens: numberOf(maxTokens), seed: numberOf(seed), stream: true,
      stop: stop.value.split("\n").filter((s) => s !== ""),
    };
    if (!body.stop.length) delete body.stop;
    // The last completion stays until the gateway has accepted this request (a refused one leaves it be).
    const begin = () => {
      promptEcho.textContent = body.prompt;
      completion.textContent = "";
      completion.dataset.chunks = "0";
      output.dataset.state = "streaming";
      for (const key of ["ttft", "tps", "tokens", "finish", "server-ttft", "server-tps"]) setStat(key, "–");
    };
    generate.disabled = true;
    abort.hidden = false;
    const started = performance.now();
    let begun = false;
    let first = null;
    let tokens = 0;
    try {
      const path = `/api/v1/models/${encodeURIComponent(model.value)}/generate`;
      for await (const { event: type, data } of postEventStream(path, body, controller.signal)) {
        if (!begun) {
          begun = true;
          begin();
        }
        if (type === "error") throw Object.assign(new Error(data.error.message), data.error);
        if (type === "TokensGenerated" && data.sequence === 0) {
          const now = performance.now();
          if (first === null) {
            first = now;
            setStat("ttft", `${fmtNumber(now - started, 0)} ms`);
          }
          tokens += data.token_ids.length;
          completion.append(data.text);
          completion.dataset.chunks = String(Number(completion.dataset.chunks) + 1);
          setStat("tokens", String(tokens));
          const seconds = (now - first) / 1000;
          if (seconds > 0) setStat("tps", fmtNumber(tokens / seconds, 1));
        } else if (type === "GenerationCompleted") {
          const done = data.completions[0];
          setStat("finish", done?.finish_reason || "–");
          setStat("tokens", String(done?.completion_tokens ?? tokens));
          const seconds = first === null ? 0 : (performance.now() - first) / 1000;
          if (seconds > 0 && tokens > 1) setStat("tps", fmtNumber(tokens / seconds, 1));
          setStat("server-ttft", data.ttft_ms === null ? "–" : `${fmtNumber(data.ttft_ms, 0)} ms`);
          setStat("server-tps", fmtNumber(data.tokens_per_s, 1));
        } else if (type === "GenerationFailed") {
          throw Object.assign(new Error(data.reason), { field: data.field });
        }
      }
      output.dataset.state = "done";
    } catch (error) {
      if (begun) output.dataset.state = error.name === "AbortError" ? "stopped" : "failed";
      if (error.name !== "AbortError") showError(form, error);
    } finally {
      generate.disabled = false;
      abort.hidden = true;
    }
  });
  abort.addEventListener("click", () => controller?.abort());

  clear(view, h("h1", {}, "Playground"),
    h("div", { class: "playground" },
      h("section", { class: "card" }, form),
      h("section", { class: "card" }, h("h2", {}, "Completion"), output, stats)));
  return () => controller?.abort();
}
