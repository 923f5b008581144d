"""ByteSource: a dataset file's bytes, uncompressed, in blocks with their offsets: the layer under the text formats.

It owns what every text format shares: gunzipping (and saying so when the file is not gzip or was cut short), the
byte-order mark some editors put first (dropped: it is not text), and refusing a NUL byte, which no text file holds
and every binary file does, so a wrong upload fails on its first block instead of training on garbage."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

from infra.corpus.errors import CorpusError, misdeclared, nul_byte

BOM = b"\xef\xbb\xbf"


class ByteSource:
    """`for offset, block in ByteSource(path, compression)`: `offset` is the block's place in the uncompressed file.

    `bytes_read` counts the file's bytes as stored (compressed ones for gzip): the measure of progress, since the
    size known up front is the stored one."""

    def __init__(self, path: str | Path, compression: str, block_bytes: int = 1 << 20):
        self.path, self.compression, self.block_bytes = Path(path), compression, block_bytes
        self.bytes_read = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        self.bytes_read = 0
        with open(self.path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if self.compression == "gzip" else raw
            offset = 0
            while block := self._read(stream, raw, offset):
                if offset == 0:
                    if wrong := misdeclared(block, "text", self.compression):  # "text": either text format
                        raise CorpusError(wrong)
                    if block.startswith(BOM):
                        block, offset = block[len(BOM):], len(BOM)
                nul = block.find(b"\0")
                if nul >= 0:
                    raise CorpusError(nul_byte(offset + nul))
                self.bytes_read = raw.tell()
                yield offset, block
                offset += len(block)

    def _read(self, stream, raw, offset: int) -> bytes:
        # The first read takes at least the four bytes that say what a file is, however small the blocks.
        size = max(self.block_bytes, 4) if offset == 0 else self.block_bytes
        try:
            return stream.read(size)
        except EOFError:
            raise CorpusError(f"the gzip data ends early, after {raw.tell():,} bytes: the file is truncated "
                              f"(an upload cut short?)") from None
        except gzip.BadGzipFile as e:
            if offset == 0 and str(e).startswith("Not a gzipped file"):
                raise CorpusError("not a gzip file: it does not start with the bytes 1f 8b "
                                  "(upload it with compression none, or gzip it)") from None
            raise CorpusError(f"corrupt gzip data near byte {raw.tell():,} of the file ({e})") from None
        except zlib.error as e:
            raise CorpusError(f"corrupt gzip data near byte {raw.tell():,} of the file ({e})") from None
