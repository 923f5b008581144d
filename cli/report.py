"""What a demo run leaves behind: `report.json` (everything measured) and `loss.png` (the loss curves).

The plot is drawn on matplotlib's Agg canvas directly, without pyplot, so it needs no display and touches no global
backend state; matplotlib is imported only when a plot is drawn, so that every other `lfz` command starts fast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORT_NAME = "report.json"
PLOT_NAME = "loss.png"


def write_json(path: Path, report: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
    return path


def plot_losses(path: Path, train: Sequence[tuple[int, float]], validation: Sequence[tuple[int, float]],
                title: str = "") -> Path:
    """Training loss per progress report and validation loss per validation, against the step (nats per token)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: matplotlib takes a second to import
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if train:
        steps, losses = zip(*train)
        axes.plot(steps, losses, color="#4878d0", linewidth=1.2, alpha=0.85, label="training loss")
    if validation:
        steps, losses = zip(*validation)
        axes.plot(steps, losses, color="#d65f5f", marker="o", markersize=4, linewidth=1.5, label="validation loss")
        axes.annotate(f"{losses[-1]:.3f}", (steps[-1], losses[-1]), textcoords="offset points", xytext=(-10, 8),
                      ha="right", color="#d65f5f")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title)
    if train or validation:
        axes.legend(loc="upper right")
    else:
        axes.text(0.5, 0.5, "no loss was reported", ha="center", va="center", transform=axes.transAxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def curves(events: Sequence[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(training, validation) loss points from a training job's log; a step reported twice (a resumed run) keeps
    its last value."""
    train: dict[int, float] = {}
    validation: dict[int, float] = {}
    for event in events:
        if event.get("type") == "TrainProgress":
            train[event["step"]] = event["loss"]
        elif event.get("type") == "ValidationCompleted":
            validation[event["step"]] = event["val_loss"]
    return sorted(train.items()), sorted(validation.items())


def write_outputs(out_dir: Path, report: dict[str, Any], train: Sequence[tuple[int, float]],
                  validation: Sequence[tuple[int, float]], title: str = "") -> tuple[Path, Path]:
    """`report.json` (with the curves in it) and `loss.png` in `out_dir`; returns both paths."""
    report = {**report, "curves": {"training": [list(p) for p in train], "validation": [list(p) for p in validation]}}
    plot = plot_losses(out_dir / PLOT_NAME, train, validation, title)
    return write_json(out_dir / REPORT_NAME, report), plot
