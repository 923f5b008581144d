// A training run's curves: train and validation loss, and the learning rate, drawn with uPlot.
//
// uPlot comes from npm (`npm ci` installs it; the gateway serves its files at /vendor/uplot). Without it the page
// still works and says so in place of the charts. Points are added as events arrive and drawn at most once per
// frame; `data-points` on each chart's element counts the steps plotted so far.

import { h } from "./dom.js";

const UPLOT_MODULE = "/vendor/uplot/uPlot.esm.js";
const UPLOT_STYLES = "/vendor/uplot/uPlot.min.css";
let loading = null;

/** The uPlot constructor, or null when the library is not installed. Loaded once, on first use. */
export function loadUPlot() {
  if (!loading) {
    loading = import(UPLOT_MODULE).then((module) => {
      document.head.append(h("link", { rel: "stylesheet", href: UPLOT_STYLES }));
      return module.default;
    }, () => null);
  }
  return loading;
}

const COLORS = { train: "#2563eb", val: "#dc2626", lr: "#059669" };
const HEIGHT = 260;

function axes(yLabel, format) {
  return [
    { label: "step", stroke: "#4b5563", grid: { stroke: "#e5e7eb" }, ticks: { stroke: "#e5e7eb" } },
    { label: yLabel, stroke: "#4b5563", size: 64, grid: { stroke: "#e5e7eb" }, ticks: { stroke: "#e5e7eb" },
      values: (u, splits) => splits.map(format) },
  ];
}

const lossFormat = (v) => (v === null ? "" : v.toFixed(2));
const rateFormat = (v) => (v === null ? "" : v.toExponential(1));

/** The loss chart and the learning-rate chart of one job, fed with `addProgress` and `addValidation`. */
export class TrainingCharts {
  constructor(lossElement, rateElement) {
    this.lossElement = lossElement;
    this.rateElement = rateElement;
    this.steps = new Map(); // step -> {loss, val, lr}
    this.validations = 0;
    this.lossPlot = null;
    this.ratePlot = null;
    this.frame = 0;
    this.uPlot = undefined; // undefined: still loading; null: not installed
    this.onResize = () => this.resize();
    window.addEventListener("resize", this.onResize);
    loadUPlot().then((uPlot) => {
      this.uPlot = uPlot;
      if (!uPlot) this.showMissing();
      this.schedule();
    });
  }

  point(step) {
    let point = this.steps.get(step);
    if (!point) {
      point = { loss: null, val: null, lr: null };
      this.steps.set(step, point);
    }
    return point;
  }

  addProgress(step, loss, learningRate) {
    const point = this.point(step);
    point.loss = loss;
    point.lr = learningRate;
    this.schedule();
  }

  addValidation(step, valLoss) {
    const point = this.point(step);
    if (point.val === null) this.validations += 1;
    point.val = valLoss;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  data() {
    const steps = [...this.steps.keys()].sort((a, b) => a - b);
    const pick = (name) => steps.map((s) => this.steps.get(s)[name]);
    return { steps, loss: pick("loss"), val: pick("val"), lr: pick("lr") };
  }

  draw() {
    this.frame = 0;
    const { steps, loss, val, lr } = this.data();
    const trainPoints = loss.filter((v) => v !== null).length;
    this.lossElement.dataset.points = String(trainPoints + this.validations);
    this.lossElement.dataset.trainPoints = String(trainPoints);
    this.lossElement.dataset.valPoints = String(this.validations);
    this.rateElement.dataset.points = String(lr.filter((v) => v !== null).length);
    if (!this.uPlot || !steps.length) return;
    const lossData = [steps, loss, val];
    const rateData = [steps, lr];
    if (!this.lossPlot) {
      this.lossElement.replaceChildren();
      this.rateElement.replaceChildren();
      this.lossPlot = new this.uPlot(this.options("loss", lossFormat, [
        { label: "train loss", stroke: COLORS.train, width: 2, spanGaps: true, points: { show: false } },
        { label: "validation loss", stroke: COLORS.val, width: 2, spanGaps: true,
          points: { show: true, size: 7, fill: COLORS.val } },
      ], this.lossElement), lossData, this.lossElement);
      this.ratePlot = new this.uPlot(this.options("learning rate", rateFormat, [
        { label: "learning rate", stroke: COLORS.lr, width: 2, spanGaps: true, points: { show: false },
          value: (u, v) => (v === null ? "–" : v.toExponential(2)) },
      ], this.rateElement), rateData, this.rateElement);
    } else {
      this.lossPlot.setData(lossData);
      this.ratePlot.setData(rateData);
    }
  }

  options(yLabel, format, series, element) {
    return {
      width: this.widthOf(element),
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: axes(yLabel, format),
      series: [{ label: "step", value: (u, v) => (v === null ? "–" : String(v)) }, ...series],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    };
  }

  widthOf(element) {
    return Math.max(280, Math.floor(element.getBoundingClientRect().width || element.parentElement.clientWidth));
  }

  resize() {
    for (const [plot, element] of [[this.lossPlot, this.lossElement], [this.ratePlot, this.rateElement]]) {
      if (plot) plot.setSize({ width: this.widthOf(element), height: HEIGHT });
    }
  }

  showMissing() {
    const note = () => h("p", { class: "notice chart-missing" },
      "Charts need the uPlot library: run ", h("code", {}, "npm ci"), " (or ", h("code", {}, "make browser-deps"),
      ") in the repository, then restart the gateway. Everything else on this page works without it.");
    this.lossElement.replaceChildren(note());
    this.rateElement.replaceChildren();
    (this.rateElement.closest(".chart-box") || this.rateElement).hidden = true;
  }

  dispose() {
    window.removeEventListener("resize", this.onResize);
    if (this.frame) cancelAnimationFrame(this.frame);
    this.lossPlot?.destroy();
    this.ratePlot?.destroy();
  }
}
