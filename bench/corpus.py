"""The text the data benchmark moves through the system: any number of bytes of it, built from what ships with CPython
(the standard library's Python sources, pydoc_data/topics.py among them), repeated to the size asked for.

    texts = corpus_texts()
    write_corpus(path, parse_size("1GiB"), texts, head=alphabet_line(texts))
"""

from __future__ import annotations

import itertools
import re
import sysconfig
from collections.abc import Sequence
from pathlib import Path

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """`1GiB`, `256MiB`, `500MB`, `1048576` -> bytes."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not found or found.group(2).lower() not in _UNITS:
        raise ValueError(f"a size is a number and a unit of {', '.join(u for u in _UNITS if u)}, got {text!r}")
    size = int(float(found.group(1)) * _UNITS[found.group(2).lower()])
    if size < 1:
        raise ValueError(f"a size must be at least one byte, got {text!r}")
    return size


def human_size(size: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} B"


def corpus_texts(stdlib: Path | None = None) -> list[bytes]:
    """The standard library's Python sources (pydoc_data/topics.py among them), in the order of their paths; the few
    that are not UTF-8 or hold a NUL byte (test data) are left out: an upload would refuse them."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    paths = sorted(p for p in root.rglob("*.py")
                   if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts))
    texts = []
    for path in paths:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if data and b"\0" not in data:
            texts.append(data)
    if not texts:
        raise SystemExit(f"error: no Python sources under {root} to build a corpus from")
    return texts


def alphabet_line(texts: Sequence[bytes]) -> bytes:
    """Every character of the texts but the newline, once, in order, as one line."""
    chars: set[str] = set()
    for text in texts:
        chars |= set(text.decode("utf-8"))
    return ("".join(sorted(chars - {"\n"})) + "\n").encode("utf-8")


def _cut(data: bytes, limit: int) -> bytes:
    """The longest prefix of `data` of at most `limit` bytes that does not end inside a character."""
    if limit >= len(data):
        return data
    while limit > 0 and data[limit] & 0xC0 == 0x80:  # a continuation byte: the character began before the cut
        limit -= 1
    return data[:limit]


def write_corpus(path: Path, size: int, texts: Sequence[bytes], head: bytes = b"") -> None:
    """Exactly `size` bytes of UTF-8 text at `path`: `head`, then the texts in turn, again and again; the last piece
    is cut at a character boundary and the bytes left over are newlines."""
    if not texts:
        raise ValueError("a corpus needs at least one text")
    left = size
    with open(path, "wb") as file:
        for piece in itertools.chain([head], itertools.cycle(texts)):
            kept = _cut(piece, left)
            file.write(kept)
            left -= len(kept)
            if len(kept) < len(piece) or left == 0:
                break
        file.write(b"\n" * left)
