"""Reading a dataset file as text, in constant memory: the input of the tokenizer job, and the checks of an upload.

    reader     DocumentReader(path, format, compression): chunks of text; FORMATS, COMPRESSIONS
    parts      check_part(data, number, offset, format, compression): one uploaded part, checked as it arrives
    errors     CorpusError: what is wrong with the file, naming the byte, line, part or column
    source     ByteSource: the file's bytes, gunzipped, in blocks (text and JSONL)
    text       the text format: one document, UTF-8
    jsonl      the JSONL format: one object per line
    parquet    the parquet format: one row per document
    packing    ChunkPacker: pieces of text into chunks cut at newlines, never inside a special token
"""

from infra.corpus.errors import CorpusError
from infra.corpus.parts import check_part
from infra.corpus.reader import COMPRESSIONS, FORMATS, DocumentReader
from model.tokenizers import EOT

__all__ = ["COMPRESSIONS", "EOT", "FORMATS", "CorpusError", "DocumentReader", "check_part"]
