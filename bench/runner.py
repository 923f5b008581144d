"""`python -m bench all`: every benchmark, one after the other, into one JSON document and docs/benchmarks.md.

It runs `bench model train` (on `--data`), `bench model generate`, `bench pipeline`, `bench gateway` and `bench
data` (a `--data-size` corpus uploaded, tokenized and trained on) as subprocesses, never two at once (they would
measure each other), and writes what they print, with the machine, its load before and after, the versions of
everything measured and the corpus, to `--json-out`. Then it renders the figures, each next to its target, between
the `<!-- bench:begin -->` and `<!-- bench:end -->` markers of `--doc`.

The pipeline, gateway and data benchmarks run against the servers of the LFZ_* settings (`make bench` sources
.lfz/services.env), or with `--embedded` against the embedded defaults they start themselves (Tansu, SQLite, a
folder). `--quick` runs everything with small parameters, to check that it works: its figures are not comparable
with the targets, and it writes to lfz-bench-quick/ unless told otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.machine import load_average, machine, versions
from bench.render import markers, render, replace_section
from bench.stack import describe_servers
from bench.targets import FAIL, PASS, rows
from infra.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET_CORPUS = "tinyshakespeare.txt"
STEPS = ("model_train", "model_generate", "agents", "gateway", "data")
SERVER_STEPS = {"agents", "gateway", "data"}  # the benchmarks that run on the servers (or the embedded ones)
SERVER_VERSIONS = ("kafka", "database")
SERVER_VARIABLES = ("LFZ_KAFKA_URL", "LFZ_DATABASE_URL", "LFZ_OBJECT_STORE_URL")
QUICK_OUT = Path("lfz-bench-quick")


def corpus(data: str | None, workdir: Path) -> dict[str, Any]:
    """The training text: `--data`, else tinyshakespeare beside the checkout, else Python's own help texts."""
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise SystemExit(f"error: --data {data}: no such file")
        name = path.name
    elif DEFAULT_DATA.is_file():
        path, name = DEFAULT_DATA, DEFAULT_DATA.name
    else:
        from cli.demo import default_corpus

        text, _ = default_corpus()
        path, name = workdir / "pydoc_data_topics.txt", "pydoc_data.topics"
        path.write_text(text, encoding="utf-8")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SystemExit(f"error: --data {path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return {"path": str(path.resolve()), "name": name, "chars": len(text),
            "sha256": hashlib.sha256(text.encode()).hexdigest()[:16], "targets_apply": name == TARGET_CORPUS}


def commands(args: argparse.Namespace, data: str) -> dict[str, list[str]]:
    """Each benchmark's command line (`python` standing for this interpreter)."""
    quick = args.quick
    return {
        "model_train": ["python", "-m", "bench", "model", "train", "--data", data, "--preset", "cpu-baby",
                        "--tokenizer", "char", "--max-iters", str(50 if quick else args.iters), "--json"],
        "model_generate": ["python", "-m", "bench", "model", "generate", "--preset", "cpu-baby", "--tokens",
                           "50" if quick else "500", "--json", *(["--repeats", "1"] if quick else [])],
        "agents": ["python", "-m", "bench", "pipeline", "--json",
                   *(["--requests", "3", "--concurrency", "10", "--tokens", "8", "--facts", "200", "--train-jobs",
                      "2", "--train-iters", "20"] if quick else []), *shlex.split(args.agents_args)],
        "gateway": ["python", "-m", "bench", "gateway", "--json",
                    *(["--clients", "10,50", "--events", "10", "--requests", "3", "--tokens", "8"] if quick else []),
                    *shlex.split(args.gateway_args)],
        "data": ["python", "-m", "bench", "data", "--json", "--size", "8MiB" if quick else args.data_size,
                 *(["--train-runs", "1", "--steps", "50"] if quick else [])],
    }


def run_step(command: list[str], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run one benchmark; its stderr goes on to ours as it comes, its stdout is the JSON it reports."""
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    step: dict[str, Any] = {"command": command, "load_before": load_average()}
    started = time.monotonic()
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    out: list[str] = []
    tail: deque[str] = deque(maxlen=20)

    def forward() -> None:
        for line in popen.stderr:  # type: ignore[union-attr]
            tail.append(line.rstrip())
            print(f"    {line.rstrip()}", file=sys.stderr, flush=True)

    def collect() -> None:
        out.append(popen.stdout.read())  # type: ignore[union-attr]

    readers = [threading.Thread(target=collect, daemon=True), threading.Thread(target=forward, daemon=True)]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout_s, popen.terminate)
    timer.start()
    try:
        # wait4, not wait: the rusage of the benchmark's whole tree (peak memory of its largest process, CPU time)
        _, status, usage = os.wait4(popen.pid, 0)
    except BaseException:
        popen.terminate()
        raise
    finally:
        timer.cancel()
    popen.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(30)
    step.update(exit_code=popen.returncode, wall_s=round(time.monotonic() - started, 2),
                peak_rss_mb=round(usage.ru_maxrss / 1024, 1), cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
                load_after=load_average())
    stdout = "".join(out).strip()
    if popen.returncode == 0:
        try:
            step["result"] = json.loads(stdout.splitlines()[-1])
            return step
        except (json.JSONDecodeError, IndexError):
            step["exit_code"] = None
            step["error"] = f"printed no JSON object: {stdout[-300:]!r}"
            return step
    timed_out = popen.returncode == -15 and time.monotonic() - started >= timeout_s
    step["error"] = f"timed out after {timeout_s:.0f}s" if timed_out else (tail[-1] if tail else "no output")
    step["stderr_tail"] = list(tail)
    return step


def _environment(embedded: bool) -> tuple[dict[str, str], Settings]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if embedded:
        for name in SERVER_VARIABLES:
            env.pop(name, None)
    settings = load_settings()
    if embedded:
        settings = settings.model_copy(update={"kafka_url": "", "database_url": "", "object_store_url": ""})
    return env, settings


def write_doc(document: dict[str, Any], json_out: Path, doc: Path, section: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.exists() else "\n".join(markers(section)) + "\n"
    doc.write_text(replace_section(text, render(document, str(json_out)), section), encoding="utf-8")


def merged(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """`later`'s document with the steps of `earlier` that it did not run: one report of a run made in parts."""
    steps = {**earlier.get("steps", {}), **later["steps"]}
    servers: dict[str, Any] = {}
    if not SERVER_STEPS & set(later["steps"]):  # a part that used no server does not say which ones the others used
        servers = {"servers": earlier.get("servers", later.get("servers")),
                   "versions": {**later.get("versions", {}),
                                **{key: earlier.get("versions", {}).get(key) for key in SERVER_VERSIONS}}}
    return {**later, **servers, "date": earlier.get("date", later["date"]),
            "steps": {name: steps[name] for name in STEPS if name in steps},
            "load_average": {"before": earlier.get("load_average", {}).get("before"),
                             "after": later["load_average"]["after"]},
            "wall_s": round(earlier.get("wall_s", 0) + later["wall_s"], 1)}


def summary(document: dict[str, Any]) -> str:
    judged = rows(document)
    lines = [f"  {r.result:>8}  {r.label}: {r.measured}" + (f" (target {r.target})" if r.target else "")
             for r in judged]
    passed, failed = sum(r.result == PASS for r in judged), sum(r.result == FAIL for r in judged)
    return "\n".join([*lines, f"{passed} figures met their targets, {failed} did not"])


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help=f"training text (default: {DEFAULT_DATA} when it exists, else "
                                        "pydoc_data.topics; the model's targets are set for tinyshakespeare)")
    parser.add_argument("--iters", type=int, default=2000, help="training iterations of `bench model train`")
    parser.add_argument("--only", default=",".join(STEPS), help=f"benchmarks to run, of {','.join(STEPS)}")
    parser.add_argument("--embedded", action="store_true",
                        help=f"ignore {', '.join(SERVER_VARIABLES)}: the benchmarks start Tansu, SQLite and a folder")
    parser.add_argument("--quick", action="store_true", help="small parameters: checks that everything runs")
    parser.add_argument("--agents-args", default="", help="more arguments for `bench pipeline`, e.g. '--train-jobs 6'")
    parser.add_argument("--gateway-args", default="", help="more arguments for `bench gateway`, e.g. '--rate 10'")
    parser.add_argument("--data-size", default="256MiB",
                        help="the corpus of `bench data` (uploaded, tokenized and trained on beside a 1 MiB one)")
    parser.add_argument("--json-out", type=Path, help="the JSON document (default docs/benchmarks.json)")
    parser.add_argument("--doc", type=Path, help="the Markdown file with the markers (default docs/benchmarks.md)")
    parser.add_argument("--section", default="bench", help="marker name: <!-- NAME:begin --> ... <!-- NAME:end -->")
    parser.add_argument("--reproduce", help="the command the document names to reproduce the run")
    parser.add_argument("--step-timeout", type=float, default=3600, help="seconds one benchmark may take")
    parser.add_argument("--render-only", action="store_true", help="render --json-out into --doc; run nothing")
    parser.add_argument("--merge", action="store_true",
                        help="keep the benchmarks already in --json-out that this run does not repeat (make bench "
                             "runs the model's before it starts the servers, then the others)")
    args = parser.parse_args(argv)
    out = QUICK_OUT if args.quick else ROOT / "docs"
    args.json_out = args.json_out or out / "benchmarks.json"
    args.doc = args.doc or (QUICK_OUT / "benchmarks.md" if args.quick else ROOT / "docs" / "benchmarks.md")
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in STEPS]
    if unknown or not args.only:
        parser.error(f"--only: unknown benchmark {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(STEPS)}")
    if args.iters < 1:
        parser.error(f"--iters must be at least 1, got {args.iters}")
    if args.step_timeout <= 0:
        parser.error(f"--step-timeout must be positive, got {args.step_timeout}")
    try:
        markers(args.section)
        if args.doc.exists():  # checked now, not after the benchmarks have run for a quarter of an hour
            replace_section(args.doc.read_text(encoding="utf-8"), "", args.section)
    except ValueError as error:
        parser.error(f"--doc {args.doc}: {error}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render_only:
        write_doc(json.loads(args.json_out.read_text(encoding="utf-8")), args.json_out, args.doc, args.section)
        print(f"rendered {args.json_out} into {args.doc}", file=sys.stderr)
        return 0
    env, settings = _environment(args.embedded)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lfz-bench-") as workdir:
        text = corpus(args.data, Path(workdir))
        document: dict[str, Any] = {
            "schema": 1, "date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
            "reproduce": args.reproduce or shlex.join(["python", "-m", "bench", "all", *(argv or sys.argv[1:])]),
            "machine": machine(), "load_average": {"before": load_average()}, "versions": versions(settings),
            "servers": describe_servers(settings), "corpus": text, "steps": {}}
        for name, command in commands(args, text["path"]).items():
            if name not in args.only:
                continue
            print(f"{name}: {shlex.join(command)}", file=sys.stderr, flush=True)
            document["steps"][name] = step = run_step(command, env, args.step_timeout)
            print(f"{name}: {'done' if step['exit_code'] == 0 else 'FAILED: ' + step['error']} in "
                  f"{step['wall_s']:.0f}s", file=sys.stderr, flush=True)
    document["load_average"]["after"] = load_average()
    document["wall_s"] = round(time.monotonic() - started, 1)
    if args.merge and args.json_out.exists():
        document = merged(json.loads(args.json_out.read_text(encoding="utf-8")), document)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    write_doc(document, args.json_out, args.doc, args.section)
    print(summary(document))
    print(f"wrote {args.json_out} and the {args.section} section of {args.doc}", file=sys.stderr)
    return 0 if all(step["exit_code"] == 0 for step in document["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
