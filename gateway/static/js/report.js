// An evaluation report as tables: one per section (the model, the held-out text, generation), each nested
// measurement on a row of its own under its dotted name, and lists of records (the samples) as tables of their own.

import { fmtNumber, h } from "./dom.js";

const SECTIONS = { "": "Evaluated", model: "Model", held_out: "Held-out text", generation: "Generation" };
const ORDER = ["", "model", "held_out", "generation"];

function flatten(value, path, rows, lists) {
  if (value === null || value === undefined) {
    rows.push([path, "–"]);
  } else if (Array.isArray(value)) {
    if (value.length && typeof value[0] === "object" && value[0] !== null) lists.push([path, value]);
    else rows.push([path, value.map((v) => fmtNumber(v)).join(", ") || "–"]);
  } else if (typeof value === "object") {
    const keys = Object.keys(value).sort(); // the stored report's key order is the database's, not the agent's
    for (const key of keys) flatten(value[key], path ? `${path}.${key}` : key, rows, lists);
  } else {
    rows.push([path, typeof value === "number" ? fmtNumber(value, 4) : String(value)]);
  }
}

function titleOf(path) {
  const [first, ...rest] = path.split(".");
  const title = SECTIONS[first] ?? first;
  return rest.length ? `${title}: ${rest.join(" ").replaceAll("_", " ")}` : title;
}

/** One section's table; each row is named relative to the section (`p50` under "Generation: speed"). */
function measurements(path, rows) {
  const prefix = path ? `${path}.` : "";
  return h("div", { class: "table-wrap report-section" }, h("h4", {}, titleOf(path)),
    h("table", { class: "report", "data-rows": String(rows.length) },
      h("tbody", {}, rows.map(([key, value]) => h("tr", { "data-key": key },
        h("th", { scope: "row", class: "mono", title: key }, key.slice(prefix.length)),
        h("td", { class: /^[-\d.,e+–]+$/.test(value) ? "num" : "value" }, value))))));
}

function records(key, items) {
  const columns = [...new Set(items.flatMap((item) => Object.keys(item)))];
  return h("div", { class: "table-wrap report-section samples-section" }, h("h4", {}, titleOf(key)),
    h("table", { class: "samples" },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((item) => h("tr", {}, columns.map((c) => h("td", { class: "text" },
        typeof item[c] === "object" ? JSON.stringify(item[c]) : String(item[c] ?? "–"))))))));
}

const isRecord = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

/**
 * The report: a table of measurement -> value per section, then a table per list of records. A section is a
 * top-level part of the report (`model`, `held_out`, `generation`); a part of a part that holds measurements of
 * its own (`generation.speed`) gets a table of its own, so that no table runs on for pages.
 */
export function reportView(report) {
  const sections = new Map([["", []]]); // section path -> rows; what was evaluated comes first
  const lists = [];
  const add = (section, key, value) => {
    if (!sections.has(section)) sections.set(section, []);
    flatten(value, key, sections.get(section), lists);
  };
  const top = Object.keys(report || {}).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  for (const key of top) {
    const value = report[key];
    if (!isRecord(value)) {
      add("", key, value);
      continue;
    }
    for (const part of Object.keys(value).sort()) {
      const path = `${key}.${part}`;
      add(isRecord(value[part]) ? path : key, path, value[part]);
    }
  }
  return h("div", { class: "report-view" },
    [...sections.entries()].filter(([, rows]) => rows.length).map(([path, rows]) => measurements(path, rows)),
    lists.map(([key, items]) => records(key, items)));
}

function rank(key) {
  const index = ORDER.indexOf(key);
  return index < 0 ? ORDER.length : index;
}
