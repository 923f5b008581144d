// The dashboard's entry point: the API key, the live feed and the hash routes.
//
//   #/                 models and jobs           #/train        the training form
//   #/jobs/<id>        one job                   #/playground   generation (?model=<id> picks one)
//   #/compare?runs=    runs side by side         #/sweeps/<id>  a sweep's trials
//   #/datasets         datasets and their tokenizations

import { apiKey, get, setApiKey } from "./api.js";
import { datasetsPage } from "./datasets.js";
import { clear, errorText, h } from "./dom.js";
import { comparePage, sweepPage } from "./experiments.js";
import { jobPage } from "./job.js";
import { LiveFeed } from "./live.js";
import { overview } from "./overview.js";
import { playgroundPage } from "./playground.js";
import { trainPage } from "./train.js";

const view = document.getElementById("view");
const feed = new LiveFeed(document.getElementById("live-state"));
const keyPanel = document.getElementById("key-panel");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyMessage = document.getElementById("key-message");
let dispose = () => {};
let routeCount = 0;
let ready = false;

function parse(hash) {
  const [path, query = ""] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  return { parts, params: new URLSearchParams(query) };
}

async function route() {
  dispose();
  dispose = () => {};
  const mine = ++routeCount;
  const { parts, params } = parse(window.location.hash || "#/");
  const name = parts[0] || "overview";
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === name || (name === "jobs" && link.dataset.nav === "overview"));
  }
  // Each page draws into a box of its own: one still loading when the person moves on draws into a box that is
  // no longer shown, instead of over the page that replaced it.
  const page = h("div", { class: "page", "data-route": name });
  clear(view, page);
  const context = { feed };
  let result;
  try {
    if (name === "overview") result = overview(page, context);
    else if (name === "train") result = trainPage(page, context);
    else if (name === "playground") result = playgroundPage(page, context, params);
    else if (name === "jobs" && parts[1]) result = jobPage(page, context, decodeURIComponent(parts[1]));
    else if (name === "datasets") result = datasetsPage(page, context);
    else if (name === "compare") result = comparePage(page, context, params);
    else if (name === "sweeps" && parts[1]) result = sweepPage(page, context, decodeURIComponent(parts[1]));
    else clear(page, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to models and jobs")));
    const stop = (await result) || (() => {});
    if (mine === routeCount) dispose = stop;
    else stop(); // the person moved on while this page loaded
  } catch (error) {
    clear(page, errorText(error.message));
  }
}

function showKeyPanel(message) {
  keyMessage.textContent = message;
  keyPanel.hidden = false;
  keyInput.value = apiKey();
  keyInput.focus();
}

/** Check that the gateway takes our key (or needs none), then start the feed and show the page. */
async function start() {
  ready = false; // until the gateway has answered: a 401 meanwhile must not start another check
  feed.stop();
  try {
    await get("/api/v1/jobs?limit=1");
  } catch (error) {
    if (error.needsKey) {
      dispose();
      dispose = () => {};
      clear(view, h("h1", {}, "API key needed"),
        h("p", {}, error.status === 403 ? "The gateway does not accept the saved key. Enter another one above."
          : "This gateway needs an API key. Enter it above; this browser keeps it."));
      showKeyPanel(error.status === 403 ? "This key is not valid." : "This gateway needs an API key.");
      return;
    }
    clear(view, h("h1", {}, "The gateway is not answering"), errorText(error.message));
    return;
  }
  ready = true;
  keyPanel.hidden = true;
  feed.start();
  route();
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(keyInput.value.trim());
  start();
});
document.getElementById("key-forget").addEventListener("click", () => {
  setApiKey("");
  keyInput.value = "";
  start();
});
document.getElementById("key-button").addEventListener("click", () => {
  if (keyPanel.hidden) showKeyPanel(apiKey() ? "A key is saved; enter another to replace it." : "No key saved.");
  else keyPanel.hidden = true;
});
window.addEventListener("lfz:key-needed", () => {
  if (ready) start(); // the key was revoked or changed elsewhere: ask again
});
window.addEventListener("hashchange", () => {
  if (ready) route();
});

start();
