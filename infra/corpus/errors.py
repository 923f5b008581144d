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
