"""CorpusError: what is wrong with a dataset file, said so that the person who uploaded it can find the place."""

from __future__ import annotations


class CorpusError(ValueError):
    """A dataset file (or one uploaded part of it) that cannot be read as a corpus.

    `field` names what to fix as the request wrote it: "file" for the content, "format", "compression" or
    "text_column" for an option. The message names the place: a byte offset, a line, a part, a column."""

    def __init__(self, message: str, field: str = "file"):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def invalid_utf8(offset: int, error: UnicodeDecodeError) -> str:
    """The message for bytes that are not UTF-8, `offset` being the file's offset of the first bad byte."""
    bad = error.object[error.start:error.start + 4].hex(" ")
    return f"invalid UTF-8 at byte {offset:,} (bytes {bad}: {error.reason}); the file must be UTF-8 text"


def nul_byte(offset: int) -> str:
    return f"a NUL byte at byte {offset:,}: this looks like a binary file, not text"


GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


def misdeclared(head: bytes, format: str, compression: str) -> str | None:
    """What the first bytes of a file say it is, when that is not what its upload declared (a gzip file sent as
    plain text, a parquet file sent as JSONL): a clearer message than the NUL byte such a file soon shows."""
    if compression == "none" and head.startswith(GZIP_MAGIC):
        return "this is a gzip file (it starts with the bytes 1f 8b): give compression gzip"
    if format != "parquet" and compression == "none" and head.startswith(PARQUET_MAGIC):
        return 'this is a parquet file (it starts with "PAR1"): give format parquet'
    return None
