"""DocumentReader: a local dataset file (text, JSONL or parquet; plain or gzip) as chunks of text, in constant memory.

The documents of JSONL and parquet are joined by end-of-text, between documents only (doc1 EOT doc2 EOT doc3): a
trailing one would teach nothing, and the model learns where a document ends from the EOT before the next one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from infra.corpus.errors import CorpusError
from infra.corpus.jsonl import jsonl_documents
from infra.corpus.packing import ChunkPacker
from infra.corpus.parquet import ParquetDocuments
from infra.corpus.source import ByteSource
from infra.corpus.text import text_blocks
from model.tokenizers import EOT

FORMATS = ("text", "jsonl", "parquet")
COMPRESSIONS = ("none", "gzip")


def check_options(format: str, compression: str) -> None:
    """Raises CorpusError for a format or compression this reader does not take, or a pair it refuses."""
    if format not in FORMATS:
        raise CorpusError(f"unknown format {format!r}; known: {', '.join(FORMATS)}", field="format")
    if compression not in COMPRESSIONS:
        raise CorpusError(f"unknown compression {compression!r}; known: {', '.join(COMPRESSIONS)}",
                          field="compression")
    if format == "parquet" and compression == "gzip":
        raise CorpusError("a parquet file is compressed inside already (snappy, zstd) and needs random access: "
                          "upload it without gzip", field="compression")


class DocumentReader:
    """`for chunk in DocumentReader(path, format, compression)`: the file's text in chunks of about `chunk_chars`.

    "".join(chunks) is the whole text: for text, the file; for JSONL and parquet, the documents joined by EOT. No
    chunk holds part of an EOT. While iterating, `bytes_read` (of the file as stored, for progress), `documents` and
    `characters` (yielded, the EOT separators not counted) grow. Every problem with the file raises CorpusError."""

    def __init__(self, path: str | Path, format: str, compression: str = "none", text_column: str = "text",
                 chunk_chars: int = 1 << 20):
        check_options(format, compression)
        if chunk_chars < 1:
            raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
        self.path, self.format, self.compression = Path(path), format, compression
        self.text_column, self.chunk_chars = text_column, chunk_chars
        self._source: ByteSource | ParquetDocuments | None = None
        self.documents = self.characters = 0

    @property
    def bytes_read(self) -> int:
        return self._source.bytes_read if self._source is not None else 0

    def __iter__(self) -> Iterator[str]:
        self.documents = self.characters = 0
        packer = ChunkPacker(self.chunk_chars)
        if self.format == "text":
            # A block is at most chunk_chars bytes, so it decodes to at most chunk_chars characters.
            self._source = source = ByteSource(self.path, self.compression, block_bytes=self.chunk_chars)
            for text in text_blocks(source):
                self.documents, self.characters = 1, self.characters + len(text)
                yield from packer.add(text)
        else:
            if self.format == "parquet":
                self._source = parquet = ParquetDocuments(self.path, self.text_column)
                documents = iter(parquet)
            else:
                self._source = source = ByteSource(self.path, self.compression, block_bytes=self.chunk_chars)
                documents = jsonl_documents(source, self.text_column)
            for text in documents:
                if self.documents:
                    yield from packer.add(EOT)
                self.documents += 1
                self.characters += len(text)
                yield from packer.add(text)
        yield from packer.finish()
