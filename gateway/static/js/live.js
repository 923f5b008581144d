// The live feed: one EventSource on `GET /api/v1/events` for the whole page, shared by every view that listens.
//
// The feed has no replay: views load their lists once, then apply the events that follow. EventSource
// reconnects by itself after a dropped connection; if the browser gives up (the gateway was down), we retry.

import { FACT_TYPES, eventStreamUrl } from "./api.js";

const RETRY_MS = 3000;

export class LiveFeed {
  constructor(indicator) {
    this.indicator = indicator;
    this.listeners = new Set();
    this.source = null;
    this.retry = 0;
  }

  start() {
    this.stop();
    const source = new EventSource(eventStreamUrl("/api/v1/events"));
    const deliver = (message) => {
      const event = JSON.parse(message.data);
      for (const listener of this.listeners) listener(event);
    };
    for (const type of FACT_TYPES) source.addEventListener(type, deliver);
    source.onopen = () => this.show("live", "live");
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        this.show("off", "offline");
        this.retry = setTimeout(() => this.start(), RETRY_MS);
      } else {
        this.show("reconnecting", "reconnecting…");
      }
    };
    this.source = source;
    this.show("connecting", "connecting…");
  }

  stop() {
    clearTimeout(this.retry);
    this.source?.close();
    this.source = null;
    this.show("off", "offline");
  }

  /** Call `listener(event)` for every event from now on; returns the function that stops it. */
  listen(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  show(state, text) {
    if (!this.indicator) return;
    this.indicator.dataset.state = state;
    this.indicator.textContent = text;
  }
}
