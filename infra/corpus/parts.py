"""check_part: cheap checks of one uploaded part as it arrives, so that a wrong file fails at its first part rather
than after gigabytes and a tokenizer job.

Only what one part can show is checked: the gzip or parquet magic at the start of the file, and for uncompressed
text a NUL byte or bytes that are not UTF-8. A character whose bytes two parts share is not an error: up to three
continuation bytes may open a part after the first, and an unfinished character may close any part. Each check is
a C-speed scan (bytes.find, a UTF-8 decode), a few milliseconds for an 8 MiB part."""

from __future__ import annotations

import codecs

from infra.corpus.errors import GZIP_MAGIC, PARQUET_MAGIC, CorpusError, invalid_utf8, misdeclared, nul_byte
from infra.corpus.reader import check_options

CHECK_SLICE = 1 << 20


def check_part(data: bytes, number: int, offset: int, format: str, compression: str) -> None:
    """Raises CorpusError naming part `number` (which starts at byte `offset` of the file) if it cannot belong to a
    `format` file with that `compression`."""
    check_options(format, compression)
    wrong = misdeclared(data, format, compression) if number == 1 else None
    if wrong:
        raise CorpusError(f"part 1: {wrong}")
    if compression == "gzip":
        if number == 1 and not data.startswith(GZIP_MAGIC):
            raise CorpusError(f"part 1: not a gzip file: it does not start with the bytes 1f 8b "
                              f"(it starts {data[:4].hex(' ')!r}; upload it with compression none, or gzip it)")
        return
    if format == "parquet":
        if number == 1 and not data.startswith(PARQUET_MAGIC):
            raise CorpusError(f'part 1: not a parquet file: it does not start with "PAR1" '
                              f"(it starts {data[:4].hex(' ')!r})")
        return
    nul = data.find(b"\0")
    if nul >= 0:
        raise CorpusError(f"part {number:,}: " + nul_byte(offset + nul))
    start = 0
    if offset > 0:  # the end of a character that the previous part began
        while start < min(3, len(data)) and 0x80 <= data[start] <= 0xBF:
            start += 1
    # final=False: an unfinished character at the end is held back, not an error; the next part finishes it. A MiB
    # at a time, so that the decoded text (up to 4 bytes a character) never holds the whole part.
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    view = memoryview(data)
    for at in range(start, len(data), CHECK_SLICE):
        held = len(decoder.getstate()[0])  # bytes of a character the previous slice left unfinished
        try:
            decoder.decode(view[at:at + CHECK_SLICE], final=False)
        except UnicodeDecodeError as e:
            raise CorpusError(f"part {number:,}: " + invalid_utf8(offset + at - held + e.start, e)) from None
