"""`python -m bench WHAT ...`: the one entry point of every benchmark.

    python -m bench model train --data FILE --preset cpu-baby --tokenizer char --json
    python -m bench model generate --preset cpu-baby --tokens 500 --json
    python -m bench model steps --variant wide:mlp_ratio=4
    python -m bench pipeline --json          (Kafka, agents workers, the projection)
    python -m bench gateway --json           (SSE fan-out and HTTP generation through one gateway)
    python -m bench fairness --json          (another tenant's wait while one floods the job queue)
    python -m bench export --data FILE       (export time and file sizes, Hugging Face and GGUF, per preset)
    python -m bench distributed --processes 2  (one training process against several, same global batch)
    python -m bench sweep --trials 8         (a sweep on two workers against one of its trials alone)
    python -m bench data --size 1GiB --json  (upload, tokenization and training of a big corpus beside a 1 MiB one)
    python -m bench all                      (every one of them in turn: what `make bench` runs)

`python -m bench WHAT --help` says each one's options. `followers` is the client side of the gateway benchmark,
started by it as a process of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module

# Imported on demand: `bench model` must not pay for Kafka's and the database's clients, nor `bench all` for torch.
BENCHMARKS: dict[str, str] = {
    "model": "bench.model",
    "pipeline": "bench.pipeline",
    "gateway": "bench.gateway",
    "fairness": "bench.fairness",
    "export": "bench.export",
    "distributed": "bench.distributed",
    "sweep": "bench.sweep",
    "data": "bench.data",
    "all": "bench.runner",
    "followers": "bench.followers",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in BENCHMARKS:
        print(__doc__, file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        if args and args[0] not in ("-h", "--help"):
            print(f"error: unknown benchmark {args[0]!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        return 0 if args else 2
    run: Callable[[list[str]], int] = import_module(BENCHMARKS[args[0]]).main
    return run(args[1:])


if __name__ == "__main__":
    sys.exit(main())
