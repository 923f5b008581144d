"""The figures section of docs/benchmarks.md, written from the runner's JSON document.

Only the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` is generated; the rest of the file (the demo's
section, notes on how to read the figures) is written by hand and kept as it is.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from bench.targets import Row, format_value, lookup, rows

STEP_TITLES = {"model_train": "bench model train", "model_generate": "bench model generate",
               "agents": "bench pipeline", "gateway": "bench gateway"}


def markers(section: str) -> tuple[str, str]:
    if not re.fullmatch(r"[\w-]+", section):
        raise ValueError(f"a section name is letters, digits, '-' and '_', got {section!r}")
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"


def replace_section(text: str, body: str, section: str = "bench") -> str:
    """`text` with what lies between the section's markers replaced by `body`; the markers stay."""
    begin, end = markers(section)
    first, last = text.find(begin), text.find(end)
    if first < 0 or last < 0 or last < first or text.count(begin) > 1 or text.count(end) > 1:
        raise ValueError(f"expected one {begin} followed by one {end}; add them where the figures belong")
    return text[:first + len(begin)] + "\n" + body.strip("\n") + "\n" + text[last:]


def _table(header: list[str], align: list[str], lines: list[list[str]]) -> str:
    def cell(value: str) -> str:
        return value.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(cell(v) for v in line) + " |" for line in lines]
    return "\n".join(out)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "-"


def _n(value: Any, digits: int = 1) -> str:
    return "-" if value is None else format_value(value, digits)


def _header(document: dict[str, Any]) -> str:
    machine, versions, corpus = document.get("machine", {}), document.get("versions", {}), document.get("corpus", {})
    when = document.get("date", "")
    try:
        when = datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        pass
    load = document.get("load_average", {})
    servers = document.get("servers", {})
    packages = ", ".join(f"{name} {version}" for name, version in versions.items()
                         if name not in ("python", "kafka", "database") and version)
    lines = [
        f"**Run.** {when}, {_duration(document.get('wall_s'))} in all. Reproduce: `{document.get('reproduce', '')}`.",
        f"**Machine.** {machine.get('cpu', '?')}, {machine.get('usable_cores', '?')} cores usable "
        f"({machine.get('cores_logical', '?')} logical, {machine.get('cores_physical', '?')} physical), "
        f"{machine.get('ram_gib', '?')} GiB RAM, {machine.get('platform', '?')}. Load average (1/5/15 min) "
        f"{_load(load.get('before'))} before, {_load(load.get('after'))} after.",
        f"**Versions.** Python {versions.get('python', '?')}, {packages}; broker {versions.get('kafka', '?')}; "
        f"database {versions.get('database', '?')}; object store: {servers.get('object_store', '?')}.",
        f"**Corpus.** {corpus.get('name', '?')} ({_n(corpus.get('chars'), 0)} characters): "
        + ("the model's targets apply." if corpus.get("targets_apply") else
           "the model's targets are set for tinyshakespeare and do not apply to this run."),
    ]
    if document.get("quick"):
        lines.append("**Quick run** (`--quick`): small parameters that check the benchmarks run; these figures are "
                     "not comparable with the targets.")
    return "\n\n".join(lines)


def _figures(document: dict[str, Any]) -> str:
    judged: list[Row] = rows(document)
    return _table(["area", "figure", "measured", "target", "result"], ["---", "---", "---:", "---", "---"],
                  [[r.area, r.label, r.measured, r.target, f"**{r.result}**" if r.result == "FAIL" else r.result]
                   for r in judged])


def _fanout(document: dict[str, Any]) -> str:
    fanout = lookup(document, "steps.gateway.result.fanout")
    if not fanout or not fanout.get("rounds"):
        return ""
    first = fanout["rounds"][0]
    intro = (f"**SSE fan-out, round by round.** One gateway process, N followers of `{fanout.get('path')}`, "
             f"{first.get('events')} facts per round produced to Kafka at {_n(first.get('rate_per_s'), 0)}/s; "
             f"latency from the produce call to a follower reading the event. Followers ran on "
             f"{fanout.get('followers_ran_on', '?')}. The gateway's memory before the first round: "
             f"{_n(fanout.get('gateway_idle_rss_mb'), 0)} MiB.")
    lines = [[str(r["clients"]), f"{r['delivered']} / {r['expected']}", _n(r.get("p50_ms")), _n(r.get("p95_ms")),
              _n(r.get("p99_ms")), _n(r.get("max_ms")), _n(r.get("gateway_rss_mb"), 0), _n(r.get("gateway_cpu_s"), 2),
              _n(r.get("gateway_cpu_us_per_delivery"), 0), _n(r.get("followers_cpu_s"), 2)]
             for r in fanout["rounds"]]
    table = _table(["followers", "delivered", "p50 ms", "p95 ms", "p99 ms", "max ms", "gateway RSS MiB",
                    "gateway CPU s", "gateway CPU µs per delivery", "followers' CPU s"],
                   ["---:"] * 10, lines)
    return intro + "\n\n" + table


def _processes(document: dict[str, Any]) -> str:
    sources = (("bench pipeline", "steps.agents.result.processes"),
               ("bench gateway (generation)", "steps.gateway.result.generation.processes"))
    lines = []
    for bench, path in sources:
        for name, p in (lookup(document, path) or {}).items():
            lines.append([bench, name, _n(p.get("peak_rss_mb"), 0), _n(p.get("rss_mb"), 0),
                          _n(p.get("children_peak_rss_mb"), 0), _n(p.get("cpu_s"), 1), _n(p.get("children_cpu_s"), 1)])
    if not lines:
        return ""
    intro = ("**Processes.** Resident memory (peak over the benchmark, and at its end) and CPU seconds of each "
             "process of the system; a worker's children are its training processes.")
    return intro + "\n\n" + _table(["benchmark", "process", "peak RSS MiB", "RSS at end MiB",
                                    "children's peak RSS MiB", "CPU s", "children's CPU s"],
                                   ["---", "---", "---:", "---:", "---:", "---:", "---:"], lines)


def _steps(document: dict[str, Any]) -> str:
    lines = []
    for name, step in document.get("steps", {}).items():
        status = ("ok" if step.get("exit_code") == 0
                  else f"failed (exit {step.get('exit_code')}): {step.get('error', '')}")
        lines.append([STEP_TITLES.get(name, name), f"`{' '.join(step.get('command', []))}`",
                      _duration(step.get("wall_s")), _n(step.get("peak_rss_mb"), 0), _n(step.get("cpu_s"), 1),
                      f"{_load(step.get('load_before'))} → {_load(step.get('load_after'))}", status])
    intro = ("**The benchmarks**, run one after the other (never two at once: they would measure each other). Peak "
             "RSS is the largest single process of the benchmark's tree; CPU seconds include its children.")
    return intro + "\n\n" + _table(["benchmark", "command", "wall", "peak RSS MiB", "CPU s", "load before → after",
                                    "status"], ["---", "---", "---:", "---:", "---:", "---", "---"], lines)


def render(document: dict[str, Any], source: str = "docs/benchmarks.json") -> str:
    """The Markdown of the figures section (without its markers)."""
    note = f"<!-- Written by `python -m bench` from {source}; edits between these markers are overwritten. -->"
    parts = [note, _header(document), _figures(document), _fanout(document), _processes(document), _steps(document)]
    return "\n\n".join(part for part in parts if part) + "\n"
