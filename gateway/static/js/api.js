// The gateway's API as the dashboard uses it: the API key, JSON calls, errors, and event streams.
//
// The key is entered once and kept in localStorage. fetch() sends it as `Authorization: Bearer`; EventSource
// cannot send headers, so event-stream URLs carry it as `?api_key=`.

const KEY_STORAGE = "lfz.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

/** An answer other than success, as the gateway describes it: `{"error": {"code", "message", "field"}}`. */
export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }

  get needsKey() {
    return this.status === 401 || this.status === 403;
  }
}

async function errorOf(response) {
  let detail = null;
  try {
    detail = (await response.json()).error;
  } catch {
    // not JSON: a proxy's page, or the connection broke
  }
  const error = new ApiError(response.status, detail?.code || "error",
    detail?.message || `${response.status} ${response.statusText}`, detail?.field || null);
  if (error.needsKey) window.dispatchEvent(new CustomEvent("lfz:key-needed", { detail: error }));
  return error;
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function send(method, path, body, signal) {
  const init = { method, headers: headers({ Accept: "application/json" }), signal };
  if (body instanceof FormData) {
    init.body = body; // the browser writes the multipart boundary itself
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", `the gateway did not answer (${error.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** A JSON call: resolves to the parsed answer, rejects with an ApiError. */
export async function call(method, path, body) {
  const response = await send(method, path, body);
  return response.status === 204 ? null : response.json();
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);

/** The URL of a GET event stream, with the key in the query string when there is one. */
export function eventStreamUrl(path) {
  const key = apiKey();
  if (!key) return path;
  const url = new URL(path, window.location.origin);
  url.searchParams.set("api_key", key);
  return url.pathname + url.search;
}

// The fact types a job's stream may carry: EventSource delivers named events only to listeners of that name.
export const FACT_TYPES = [
  "JobAccepted", "JobCancelled", "TrainRendezvous", "TrainStarted", "TrainProgress", "ValidationCompleted", "CheckpointSaved",
  "TrainCompleted", "TrainFailed", "EvaluationCompleted", "EvaluationFailed", "TokensGenerated",
  "GenerationCompleted", "GenerationFailed", "ExportCompleted", "ExportFailed", "ModelImported", "ImportFailed",
  "DatasetUploaded", "ModelDeleted", "SweepStarted", "SweepTrialStopped", "SweepProgress", "SweepCompleted",
  "SweepFailed", "TokenizeProgress", "DatasetTokenized", "TokenizeCompleted", "TokenizeFailed",
];

export const TERMINAL_TYPES = new Set([
  "TrainCompleted", "TrainFailed", "JobCancelled", "EvaluationCompleted", "EvaluationFailed",
  "GenerationCompleted", "GenerationFailed", "ExportCompleted", "ExportFailed", "ModelImported", "ImportFailed",
  "DatasetUploaded", "ModelDeleted", "SweepCompleted", "SweepFailed", "TokenizeCompleted", "TokenizeFailed",
]);

/**
 * Follow a job's events: the past is replayed first, then live events until the terminal one. `onEvent` gets
 * each fact once, in order (EventSource reconnects on its own with Last-Event-ID). Returns a function that stops.
 */
export function followJob(jobId, onEvent, { onState = () => {} } = {}) {
  const source = new EventSource(eventStreamUrl(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`));
  let lastSeq = 0;
  const handle = (message) => {
    const event = JSON.parse(message.data);
    if (event.seq <= lastSeq) return; // already shown: a reconnect overlapped
    lastSeq = event.seq;
    onEvent(event);
    if (TERMINAL_TYPES.has(event.type)) {
      source.close(); // the server ends the stream here; reconnecting would only wait
      onState("ended");
    }
  };
  for (const type of FACT_TYPES) source.addEventListener(type, handle);
  source.onopen = () => onState("open");
  source.onerror = () => onState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  return () => source.close();
}

/**
 * POST a request whose answer is server-sent events (generation with `"stream": true`): EventSource cannot
 * POST, so the body is read here chunk by chunk. Yields `{event, data}` as each event arrives.
 */
export async function* postEventStream(path, body, signal) {
  const response = await send("POST", path, body, signal);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const parsed = parseBlock(block);
        if (parsed) yield parsed;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment: the keep-alive
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "event") event = value;
    else if (name === "data") data.push(value);
  }
  if (!data.length) return null;
  return { event, data: JSON.parse(data.join("\n")) };
}
