"""`python -m bench data`: a large dataset's way through the system, beside a 1 MiB one: upload, tokenization, training.

    python -m bench data --size 1GiB --json

It builds a corpus of `--size` bytes from text that ships with CPython (the standard library's Python sources,
pydoc_data's topics among them, repeated to the size) and one of `--baseline` bytes (1 MiB) the same way, starts a
gateway and one agents worker on the servers of the LFZ_* settings with a topic prefix of their own (bench.stack),
warms it up with a 64 KiB dataset taken through every step, and measures, each phase for both corpora before the
next phase (bench/datajobs.py):

* upload: an upload session through the gateway (cli/uploads.py, two parts at a time): MB/s, and the peak resident
  memory of the gateway and of the worker meanwhile;
* tokenization: a tokenize job with the character tokenizer, then with BPE of `--bpe-vocab` tokens trained on a
  sample of `--bpe-sample` bytes (so that BPE's training stays bounded whatever the size): MB/s and tokens/s as the
  job reports them (download, tokenizer training, encoding and storing the shards all included), and the peak
  resident memory of the job's process;
* training: `--steps` steps of cpu-baby on the character shards, `--train-runs` times, the two corpora alternating:
  time per step (the median 10-step interval of the job's progress facts, after the first report, which carries the
  start-up), tokens/s, and
  the peak resident memory of the training process (sampled every 0.2 s among the processes the worker's server of
  job processes forked; it includes the pages it shares with that server, whose own size is reported beside it);
* `python -m bench model train` on the baseline corpus, same preset and steps, after each round of training: the
  pipeline's speed against the model's alone (the inverse ratio of their median step times: the same tokens per
  step).

The corpus (bench/corpus.py) starts with a line naming the run (so that no earlier upload is reused) and a line of
every character the texts hold, so that both corpora have the same character vocabulary and train the same model.
MB are 10^6 bytes; MiB 2^20. The datasets, tokens and models it made are deleted from the servers at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.corpus import alphabet_line, corpus_texts, human_size, parse_size, write_corpus
from bench.datajobs import Bench, Peaks, say
from bench.machine import load_average, machine
from bench.stack import BenchStack, describe_servers
from bench.targets import FAIL, MISSING, NO_TARGET, PASS, Target, format_value, lookup
from cli.client import Client
from infra.settings import load_settings

SIZES = ("small", "big")  # the baseline corpus, and the one of --size
WARM_UP_BYTES = 64 * 1024


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _largest(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def measure(args: argparse.Namespace, corpora: dict[str, Path]) -> dict[str, Any]:
    sizes = {name: corpora[name].stat().st_size for name in SIZES}
    report: dict[str, Any] = {name: {"bytes": sizes[name], "label": human_size(sizes[name])} for name in SIZES}
    with BenchStack(load_settings(), workers=1, gateway=True, name="bench-data") as stack, \
            Client(stack.url, timeout=300) as client:
        pids = stack.processes()
        with Peaks(pids["gateway"], pids["worker"]) as peaks:
            bench = Bench(args, stack, client, peaks, uuid.uuid4().hex[:8], [], [])
            try:
                say("warming up: a small dataset uploaded, tokenized and trained on")
                bench.warm_up(corpora["warm-up"])
                ids = {}
                for name in SIZES:
                    say(f"uploading {report[name]['label']}")
                    ids[name], report[name]["upload"] = bench.upload(corpora[name], name)
                for kind in ("char", "bpe"):
                    for name in SIZES:
                        say(f"tokenizing {report[name]['label']} ({kind})")
                        report[name].setdefault("tokenize", {})[kind] = bench.tokenize(ids[name], sizes[name], kind)
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SIZES}
                alone = []
                for run in range(1, args.train_runs + 1):
                    for name in SIZES:
                        say(f"training on {report[name]['label']} (run {run})")
                        runs[name].append(bench.train(ids[name], sizes[name], name, run))
                    if not args.skip_model_train:
                        say(f"bench model train on {report['small']['label']} (run {run})")
                        alone.append(bench.model_train(corpora["small"]))
            finally:
                bench.clean_up()
        report["servers"] = describe_servers(stack.settings)
    for name in SIZES:
        report[name]["train"] = {
            "runs": runs[name], "step_ms": _median([r["step_ms_median"] for r in runs[name]]),
            "tokens_per_s": _median([r["tokens_per_s"] for r in runs[name]]),
            "peak_rss_mb": _largest([r["peak_rss_mb"] for r in runs[name]]),
            "peak_anon_rss_mb": _largest([r["peak_anon_rss_mb"] for r in runs[name]])}
    if alone:
        report["model_train"] = {"runs": alone, "tokens_per_s": _median([r["tokens_per_s"] for r in alone]),
                                 "step_ms": _median([r["ms_per_iter_median"] for r in alone])}
    return compare(report)


def compare(report: dict[str, Any]) -> dict[str, Any]:
    """The figures that set one measurement against another: the big corpus's training against the baseline's, and
    the pipeline's tokens/s against `bench model train`'s."""
    small = report["small"]["train"]
    alone = lookup(report, "model_train.step_ms")
    for name in SIZES:
        train = report[name]["train"]
        for key, over in (("peak_rss_mb", "rss_over_baseline_mb"), ("peak_anon_rss_mb", "anon_rss_over_baseline_mb")):
            if train.get(key) is not None and small.get(key) is not None:
                train[over] = round(train[key] - small[key], 1)
        if train["step_ms"] and small["step_ms"]:
            train["step_time_ratio"] = round(train["step_ms"] / small["step_ms"], 3)
        if alone and train["step_ms"]:  # the same tokens per step: speed is the inverse of the step's time
            train["vs_model_train"] = round(alone / train["step_ms"], 3)
        steps = [r["step_ms_median"] for r in train["runs"] if r["step_ms_median"]]
        if len(steps) > 1:
            train["run_to_run_spread"] = round(max(steps) / min(steps) - 1, 3)
    return report


# -- the targets, and the table ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One figure of the table, for both corpora: `path` inside each one's result; the target, if any, holds for
    the corpora of `judged`."""

    label: str
    path: str
    digits: int = 1
    target: Target | None = None
    judged: tuple[str, ...] = ("big",)


LINES: tuple[Line, ...] = (
    Line("upload: MB/s", "upload.mb_per_s", target=Target(">=", 50, "MB/s")),
    Line("upload: gateway peak RSS MiB", "upload.gateway_peak_rss_mb", 0, Target("<=", 200, "MiB"), SIZES),
    Line("upload: worker peak RSS MiB", "upload.worker_peak_rss_mb", 0),
    Line("tokenize char: MB/s", "tokenize.char.mb_per_s", target=Target(">=", 50, "MB/s")),
    Line("tokenize char: tokens/s", "tokenize.char.tokens_per_s", 0),
    Line("tokenize char: job peak RSS MiB", "tokenize.char.job_peak_rss_mb", 0),
    Line("tokenize BPE: MB/s", "tokenize.bpe.mb_per_s", target=Target(">=", 5, "MB/s")),
    Line("tokenize BPE: tokens/s", "tokenize.bpe.tokens_per_s", 0),
    Line("tokenize BPE: vocabulary", "tokenize.bpe.vocab_size", 0),
    Line("tokenize BPE: job peak RSS MiB", "tokenize.bpe.job_peak_rss_mb", 0),
    Line("train: ms per step (median)", "train.step_ms", 2),
    Line("train: step time / baseline's", "train.step_time_ratio", 3, Target("<=", 1.1)),
    Line("train: tokens/s", "train.tokens_per_s", 0),
    Line("train: process peak RSS MiB", "train.peak_rss_mb", 0),
    Line("train: peak RSS over baseline's MiB", "train.rss_over_baseline_mb", 0, Target("<=", 64, "MiB")),
    Line("train: process peak anonymous RSS MiB", "train.peak_anon_rss_mb", 0),
    Line("train: anonymous RSS over baseline's MiB", "train.anon_rss_over_baseline_mb", 0),
    Line("train: speed / bench model train's", "train.vs_model_train", 3, Target(">=", 0.95), SIZES),
)


def judge(report: dict[str, Any], lines: Sequence[Line] = LINES) -> list[dict[str, str]]:
    """Each line with both corpora's values, its target and the result: pass, FAIL, missing, or `-` (no target)."""
    rows = []
    for line in lines:
        values = {name: lookup(report, f"{name}.{line.path}") for name in SIZES}
        shown = {name: "-" if v is None else format_value(v, line.digits) for name, v in values.items()}
        if line.target is None:
            result = NO_TARGET
        elif any(not isinstance(values[name], int | float) for name in line.judged):
            result = MISSING
        else:
            result = PASS if all(line.target.met(values[name]) for name in line.judged) else FAIL
        target = "" if line.target is None else f"{line.target} ({', '.join(report[n]['label'] for n in line.judged)})"
        rows.append({"figure": line.label, **shown, "target": target, "result": result})
    return rows


def table(report: dict[str, Any]) -> str:
    rows = judge(report)
    header = {"figure": "figure", "small": report["small"]["label"], "big": report["big"]["label"],
              "target": "target", "result": "result"}
    widths = {key: max(len(header[key]), *(len(r[key]) for r in rows)) for key in header}
    lines = ["  ".join(f"{row[k]:<{widths[k]}}" if k in ("figure", "target") else f"{row[k]:>{widths[k]}}"
                       for k in header) for row in [header, *rows]]
    passed, failed = sum(r["result"] == PASS for r in rows), sum(r["result"] == FAIL for r in rows)
    spread = {n: report[n]["train"].get("run_to_run_spread") for n in SIZES}
    alone = lookup(report, "model_train.step_ms")
    notes = [
        f"{passed} figures met their targets, {failed} did not. MB = 10^6 bytes, MiB = 2^20; object store "
        f"{lookup(report, 'servers.object_store') or '?'}.",
        f"BPE: trained on a sample of {human_size(report['bpe_sample_bytes'])} of each corpus (all of a smaller one).",
        f"Training: {report['steps']} steps of cpu-baby, char tokenizer, {report['train_runs']} run(s) per corpus, "
        "alternating; ms per step is the median over the runs of each run's median 10-step interval"
        + "".join(f"; run-to-run spread {100 * spread[n]:.0f}% ({report[n]['label']})" for n in SIZES
                  if spread[n] is not None) + ".",
        "Anonymous RSS leaves out the pages of memory-mapped files (the token shards: page cache, shared and "
        "reclaimable), which RSS counts for as long as the process maps the pages it has touched.",
        "bench model train on the baseline corpus, same preset and steps: "
        + (f"{alone:.2f} ms per step (median)." if alone else "not run."),
        f"Load average (1/5/15 min): {report['load_average']['before']} before, {report['load_average']['after']} "
        "after.",
    ]
    return "\n".join([*lines, "", *notes])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="the big corpus, e.g. 32MiB, 1GiB (default 1GiB)")
    parser.add_argument("--baseline", default="1MiB", help="the corpus it is compared with (default 1MiB)")
    parser.add_argument("--bpe-vocab", type=int, default=8192)
    parser.add_argument("--bpe-sample", default="64MiB", help="bytes of each corpus that BPE is trained on")
    parser.add_argument("--steps", type=int, default=200, help="training steps of cpu-baby")
    parser.add_argument("--train-runs", type=int, default=3, help="training runs per corpus, alternating")
    parser.add_argument("--skip-model-train", action="store_true", help="no `bench model train` to compare with")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the table goes to stderr)")
    args = parser.parse_args(argv)
    try:
        args.size, args.baseline, args.bpe_sample = (parse_size(args.size), parse_size(args.baseline),
                                                     parse_size(args.bpe_sample))
    except ValueError as error:
        parser.error(str(error))
    for name in ("steps", "train_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.bpe_sample < 1024:
        parser.error("--bpe-sample must be at least 1KiB")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="lfz-bench-data-") as workdir:
        say("building the corpora from the standard library's sources")
        texts = corpus_texts()
        head = f"# lfz bench data {uuid.uuid4().hex}\n".encode() + alphabet_line(texts)
        corpora = {"small": Path(workdir) / "baseline.txt", "big": Path(workdir) / "corpus.txt",
                   "warm-up": Path(workdir) / "warm-up.txt"}
        built = time.perf_counter()
        for name, size in (("small", args.baseline), ("big", args.size), ("warm-up", WARM_UP_BYTES)):
            write_corpus(corpora[name], size, texts, head + name.encode() + b"\n")
        built = time.perf_counter() - built
        os.environ["LFZ_STATE_DIR"] = workdir  # the upload client's resume notes: not in the user's home
        report = measure(args, corpora)
    report = {"benchmark": "data", **report, "steps": args.steps, "train_runs": args.train_runs,
              "bpe_vocab": args.bpe_vocab, "bpe_sample_bytes": args.bpe_sample,
              "corpus": {"source": "CPython's standard library sources (pydoc_data included), repeated",
                         "texts": len(texts), "text_bytes": sum(map(len, texts)), "build_s": round(built, 1)},
              "machine": machine(), "load_average": {"before": load_before, "after": load_average()},
              "wall_s": round(time.monotonic() - started, 1)}
    report["checks"] = judge(report)
    if args.json:
        print(table(report), file=sys.stderr)
        print(json.dumps(report))
    else:
        print(table(report))
    return 0  # a missed target is a figure to report (as `bench all` does), not a failure to run


if __name__ == "__main__":
    sys.exit(main())
