"""Writes one JSON Schema per message to `docs/events/`: `python -m events.schemas [--check]`.

`--check` exits non-zero when the published files differ from the code (a test runs it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from events.commands import COMMANDS
from events.facts import FACTS, DeadLetter
from events.system import SYSTEM_EVENTS

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "events"


def all_schemas() -> dict[str, dict]:
    classes = [*COMMANDS.values(), *FACTS.values(), *SYSTEM_EVENTS.values(), DeadLetter]
    return {cls.__name__: cls.model_json_schema() for cls in classes}


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args(argv)
    stale = []
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas().items():
        path = args.dir / f"{name}.json"
        text = render(schema)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run `python -m events.schemas`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
