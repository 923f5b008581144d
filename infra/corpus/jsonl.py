"""The JSONL format: one JSON object per line, its text in one string field (`text_column`, "text" by default).

Blank lines are skipped, and so is a document whose text is null or empty (as parquet's nulls are): neither adds
anything but a separator. Every other line that is not an object with a string there stops the read, naming the
line and its byte offset, since a file that breaks the format once is likely to be the wrong file."""

from __future__ import annotations

import json
from collections.abc import Iterator

from infra.corpus.errors import CorpusError, invalid_utf8
from infra.corpus.source import ByteSource

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def jsonl_documents(source: ByteSource, column: str) -> Iterator[str]:
    """Each line's text. Lines are read in runs of whole lines (a block up to its last newline), decoded at once."""
    held: list[bytes] = []  # the start of a line that the blocks so far have not finished
    held_offset, line = 0, 1  # where the held bytes start in the file, and their line number
    for offset, block in source:
        end = block.rfind(b"\n") + 1
        if end == 0:
            held.append(block)
            continue
        run = b"".join([*held, block[:end]])
        yield from _run_documents(run, held_offset, line, column)
        line += run.count(b"\n")
        held, held_offset = [block[end:]], offset + end
    run = b"".join(held)
    if run:
        yield from _run_documents(run, held_offset, line, column)


def _run_documents(run: bytes, offset: int, first_line: int, column: str) -> Iterator[str]:
    try:
        text = run.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + run.count(b"\n", 0, e.start)
        raise CorpusError(f"line {line:,}: " + invalid_utf8(offset + e.start, e)) from None
    at = 0  # the character offset of the line in `text`
    for number, line in enumerate(text.split("\n"), first_line):
        if line and not line.isspace():
            value = _document(line, column, lambda: f"line {number:,} (byte {offset + len(text[:at].encode()):,})")
            if value:
                yield value
        at += len(line) + 1


def _document(line: str, column: str, place) -> str | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise CorpusError(f"{place()}: not JSON ({getattr(e, 'msg', e)}); each line must be one JSON object") from None
    if not isinstance(record, dict):
        raise CorpusError(f"{place()}: {_JSON_TYPES.get(type(record), 'a value')}, not a JSON object")
    if column not in record:
        fields = ", ".join(list(record)[:10]) or "none"
        raise CorpusError(f'{place()}: no field "{column}" (its fields: {fields})')
    value = record[column]
    if value is not None and not isinstance(value, str):
        raise CorpusError(f'{place()}: field "{column}" is {_JSON_TYPES.get(type(value), "a value")}, not a string')
    return value
