"""`python -m bench export`: how long an export takes and how large its files are, per preset, format and dtype.

The weights are a freshly built model of the preset (an export reads every weight the same way whatever their
values), with GELU in place of the preset's activation where it differs, and a byte-level BPE tokenizer trained
on `--data`, so that both formats apply (GGUF takes neither ReLU squared nor the char tokenizer). Each export is timed `--runs`
times; the JSON gives every run and the median.

    python -m bench export --data ../shared/data/tinyshakespeare.txt --presets cpu-baby small --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from model.config import resolve_hyperparameters
from model.export.gguf import gguf_bytes
from model.export.hf import hf_files
from model.gpt import GPT
from model.tokenizers import train_tokenizer

EXPORTS = {"hf": hf_files, "gguf": lambda state, dtype: {"model.gguf": gguf_bytes(state, dtype)}}


def measure(preset: str, text: str, vocab_size: int, runs: int) -> list[dict]:
    tokenizer = train_tokenizer("bpe", text, vocab_size=vocab_size)
    model_config, _ = resolve_hyperparameters({"preset": preset, "activation": "gelu"})
    torch.manual_seed(0)
    model = GPT(model_config.with_vocab(tokenizer.vocab_size))
    state = {"model_config": asdict(model.config), "model": model.state_dict(), "tokenizer": tokenizer.to_json(),
             "step": 0}
    rows = []
    for format, export in EXPORTS.items():
        for dtype in ("float32", "float16"):
            times, files = [], {}
            for _ in range(runs):
                start = time.perf_counter()
                files = export(state, dtype)
                times.append(time.perf_counter() - start)
            rows.append({"preset": preset, "parameters": model.num_parameters(), "format": format, "dtype": dtype,
                         "seconds": [round(t, 4) for t in times], "median_s": round(statistics.median(times), 4),
                         "bytes": sum(len(b) for b in files.values()),
                         "weights_bytes": max(len(b) for b in files.values())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="UTF-8 text to train the BPE tokenizer on")
    parser.add_argument("--presets", nargs="+", default=["cpu-baby", "small"])
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text = args.data.read_text(encoding="utf-8")
    rows = [row for preset in args.presets for row in measure(preset, text, args.vocab_size, args.runs)]
    if args.json:
        print(json.dumps({"benchmark": "export", "runs": args.runs, "results": rows}, indent=2))
        return 0
    for r in rows:
        print(f"{r['preset']:>9} {r['parameters']:>11,} params  {r['format']:>4} {r['dtype']:>8}  "
              f"{r['median_s'] * 1000:8.1f} ms (median of {len(r['seconds'])})  {r['bytes']:>12,} bytes")
    return 0
