"""The parquet format: one document per row, its text in the string column `text_column`, read a batch at a time.

Null and empty texts are skipped. A gzipped parquet file is refused where the reader is made (DocumentReader):
parquet needs random access to its footer, and its pages are compressed already (snappy, zstd), so gzip around it
would cost a full decompressed copy on disk to save nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from infra.corpus.errors import CorpusError

if TYPE_CHECKING:
    import pyarrow as pa

BATCH_ROWS = 512  # rows in memory at once: documents are up to a few hundred KB each, so a batch stays small


class ParquetDocuments:
    """`for text in ParquetDocuments(path, column)`; `bytes_read` estimates progress as the file's share of rows
    read, since pyarrow reads whole pages and says nothing of offsets."""

    def __init__(self, path: str | Path, column: str):
        self.path, self.column = Path(path), column
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        # Imported here, not above: the gateway imports this package for check_part alone, and pyarrow weighs 60 MB.
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.bytes_read = 0
        try:
            # buffer_size: read a column chunk through a 1 MiB buffer, page by page, not whole into memory.
            file = pq.ParquetFile(self.path, buffer_size=1 << 20)
        except (pa.ArrowException, OSError) as e:
            raise CorpusError(f"not a parquet file ({e})") from None
        with file:
            self._check_column(file.schema_arrow)
            size, rows, done = self.path.stat().st_size, max(1, file.metadata.num_rows), 0
            try:
                for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=[self.column]):
                    done += batch.num_rows
                    self.bytes_read = size * done // rows
                    yield from filter(None, batch.column(0).to_pylist())
            except pa.ArrowException as e:
                raise CorpusError(f"corrupt parquet data after row {done:,} ({e})") from None

    def _check_column(self, schema: pa.Schema) -> None:
        import pyarrow as pa

        if self.column not in schema.names:
            names = ", ".join(schema.names[:20]) + (", ..." if len(schema.names) > 20 else "")
            raise CorpusError(f'the parquet file has no column "{self.column}" (its columns: {names})',
                              field="text_column")
        kind = schema.field(self.column).type
        if pa.types.is_dictionary(kind):  # a categorical column: its values are what count
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
            raise CorpusError(f'column "{self.column}" holds {schema.field(self.column).type}, not strings',
                              field="text_column")
