"""The text format: the whole file is one document, UTF-8, decoded block by block in constant memory."""

from __future__ import annotations

import codecs
from collections.abc import Iterator

from infra.corpus.errors import CorpusError, invalid_utf8
from infra.corpus.source import ByteSource


def text_blocks(source: ByteSource) -> Iterator[str]:
    """The file's text in pieces, as its blocks decode. A character whose bytes two blocks share is held back by the
    incremental decoder until its last byte comes, so no piece ends inside one."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    end = 0
    for offset, block in source:
        held = len(decoder.getstate()[0])  # bytes of the previous block's last, unfinished character
        try:
            text = decoder.decode(block)
        except UnicodeDecodeError as e:  # e.start counts from the held bytes
            raise CorpusError(invalid_utf8(offset - held + e.start, e)) from None
        end = offset + len(block)
        if text:
            yield text
    held = len(decoder.getstate()[0])
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise CorpusError(invalid_utf8(end - held + e.start, e) + " (the file ends inside a character)") from None
