// Datasets (#/datasets): each upload with its size, format and documents, and its tokenizations (tokens, vocabulary,
// shards, dtype), a running one with its progress. The live feed's tokenize facts reload the page, at most once a
// second; a training job that tokenizes its dataset first reports the same facts.

import { get } from "./api.js";
import { clear, errorText, fmtBytes, fmtNumber, fmtTime, h, progressBar, shortId, statusBadge } from "./dom.js";

const TOKENIZE_FACTS = new Set(["TokenizeProgress", "DatasetTokenized", "TokenizeCompleted", "TokenizeFailed",
                                "DatasetUploaded", "DatasetDeleted"]);

function count(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en");
}

function tokenizationRow(t) {
  const share = t.bytes_total ? t.bytes_done / t.bytes_total : 0;
  const state = t.status === "running" ? progressBar(share, `${t.phase || "starting"} ${Math.round(100 * share)}%`)
    : t.status === "failed" ? h("span", { class: "error" }, t.error || "failed") : statusBadge(t.status);
  const options = Object.entries(t.tokenizer_options || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  return h("tr", { "data-tokenization": t.id },
    h("td", {}, h("code", {}, shortId(t.id))), h("td", {}, `${t.tokenizer || "?"}${options ? ` (${options})` : ""}`),
    h("td", { class: "num" }, count(t.vocab_size)), h("td", { class: "num" }, count(t.tokens)),
    h("td", { class: "num" }, count(t.shards)), h("td", {}, t.dtype || "–"),
    h("td", {}, t.wall_s ? `${fmtNumber(t.wall_s, 3)} s` : ""), h("td", {}, state));
}

function datasetCard(d) {
  const format = d.format + (d.compression === "gzip" ? " (gzip)" : "");
  const tokenizations = d.tokenizations || [];
  return h("section", { class: "card", "data-dataset": d.id },
    h("h2", {}, d.name, " ", h("code", {}, shortId(d.id))),
    h("p", {}, `${fmtBytes(d.bytes)} of ${format} · ${count(d.characters)} characters · ${count(d.documents)} `
      + `documents · uploaded ${fmtTime(d.created_at)}`),
    d.preview ? h("pre", { class: "preview" }, d.preview.slice(0, 200)) : null,
    tokenizations.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Tokenization", "Tokenizer", "Vocabulary", "Tokens", "Shards", "dtype", "Took",
        "Status"].map((t) => h("th", {}, t)))),
      h("tbody", {}, tokenizations.map(tokenizationRow))))
      : h("p", { class: "notice" }, "Not tokenized yet: ", h("code", {}, `lfz datasets tokenize ${d.id}`),
        ", or train on it."));
}

export async function datasetsPage(page, { feed }) {
  let pending = null;

  async function load() {
    pending = null;
    try {
      const listing = await get("/api/v1/datasets?limit=50");
      const details = await Promise.all(listing.items.map((d) => get(`/api/v1/datasets/${encodeURIComponent(d.id)}`)));
      clear(page, h("h1", {}, "Datasets"),
        h("p", {}, `${listing.total} datasets. Upload one with `, h("code", {}, "lfz datasets upload FILE"),
          " (text, JSON Lines or Parquet, any size)."),
        ...details.map(datasetCard));
    } catch (error) {
      clear(page, h("h1", {}, "Datasets"), errorText(error.message));
    }
  }

  const stop = feed.listen((event) => {
    if (TOKENIZE_FACTS.has(event.type) && !pending) pending = setTimeout(load, 1000);
  });
  await load();
  return () => {
    stop();
    clearTimeout(pending);
  };
}
