// Building elements and formatting numbers for display: the dashboard's few shared pieces of markup.

/** `h("a", {href: "#/"}, "text", child)`: an element with attributes (`on*` become listeners) and children. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export function clear(element, ...children) {
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

export function fmtNumber(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6)) return value.toExponential(2);
  return value.toLocaleString("en", { maximumFractionDigits: digits });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toLocaleString("en", { maximumFractionDigits: unit ? 1 : 0 })} ${units[unit]}`;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString("en-GB");
}

/** A progress bar for a fraction in [0, 1]; `data-progress` carries the value for tests and styles. */
export function progressBar(fraction, label = "") {
  const value = Math.max(0, Math.min(1, Number(fraction) || 0));
  const percent = Math.round(value * 1000) / 10;
  const attrs = {
    class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-valuenow": String(percent), "aria-label": label || "progress", "data-progress": String(value),
  };
  return h("div", attrs, h("div", { class: "progress-fill", style: `width: ${percent}%` }),
    h("span", { class: "progress-text" }, `${percent}%`));
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status || "unknown"}`, "data-status": status || "" }, status || "unknown");
}

/** A message beside a form field, or at the top of a view. */
export function errorText(message) {
  return h("p", { class: "error", role: "alert" }, message);
}
