"""infra.corpus: dataset files read as text in chunks (text, JSONL, parquet; plain and gzip), and the checks of an
uploaded part. Every file is made here, in tmp_path."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.corpus import EOT, CorpusError, DocumentReader, check_part
from model.tokenizers import PAD, SPECIALS

DOCUMENTS = ["The first document.\nIt has two lines.", "Second: café, naïve, 日本語, 🙂.",
             "third " * 50 + "\n", "x"]
TEXT = "".join(f"Line {i}: the quick brown fox — jumps over 🙂 the lazy dog.\n" for i in range(300))


def write(path, data: bytes, compression: str):
    path.write_bytes(gzip.compress(data) if compression == "gzip" else data)
    return path


def jsonl_bytes(documents, column="text") -> bytes:
    return "".join(json.dumps({"id": i, column: d}, ensure_ascii=False) + "\n" for i, d in enumerate(documents)).encode()


def read(path, format, compression="none", **options) -> tuple[list[str], DocumentReader]:
    reader = DocumentReader(path, format, compression, **options)
    return list(reader), reader


# -- the three formats, plain and gzip --------------------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("chunk_chars", [7, 64, 1 << 20])
def test_text_file_is_one_document_and_chunks_keep_it_exactly(tmp_path, compression, chunk_chars):
    path = write(tmp_path / "corpus.txt", TEXT.encode(), compression)
    chunks, reader = read(path, "text", compression, chunk_chars=chunk_chars)
    assert "".join(chunks) == TEXT
    assert max(map(len, chunks)) <= chunk_chars
    assert (reader.documents, reader.characters, reader.bytes_read) == (1, len(TEXT), path.stat().st_size)


def test_text_chunks_end_after_a_newline(tmp_path):
    chunks, _ = read(write(tmp_path / "c.txt", TEXT.encode(), "none"), "text", chunk_chars=1000)
    assert len(chunks) > 10
    assert all(chunk.endswith("\n") for chunk in chunks)
    assert all(len(chunk) >= 500 for chunk in chunks[:-1])  # many lines packed per chunk


def test_text_without_newlines_is_cut_before_a_space(tmp_path):
    text = "word " * 1000
    chunks, _ = read(write(tmp_path / "c.txt", text.encode(), "none"), "text", chunk_chars=100)
    assert "".join(chunks) == text
    assert all(chunk.startswith(" ") for chunk in chunks[1:])


def test_a_utf8_bom_is_dropped(tmp_path):
    chunks, _ = read(write(tmp_path / "c.txt", b"\xef\xbb\xbfhello\n", "none"), "text")
    assert chunks == ["hello\n"]


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("chunk_chars", [5, 40, 1 << 20])
def test_jsonl_documents_are_separated_by_end_of_text(tmp_path, compression, chunk_chars):
    data = jsonl_bytes(DOCUMENTS).replace(b"\n", b"\n\n  \n", 1)  # blank lines are skipped
    path = write(tmp_path / "c.jsonl", data, compression)
    chunks, reader = read(path, "jsonl", compression, chunk_chars=chunk_chars)
    assert "".join(chunks) == EOT.join(DOCUMENTS)  # between documents only, none after the last
    assert not any(EOT in c and c.count("<|") != c.count(EOT) for c in chunks)
    assert (reader.documents, reader.characters) == (len(DOCUMENTS), sum(map(len, DOCUMENTS)))
    assert reader.bytes_read == path.stat().st_size


def test_jsonl_reads_another_column_and_skips_null_and_empty_texts(tmp_path):
    lines = [{"body": "a"}, {"body": None}, {"body": ""}, {"body": "b"}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))  # and no newline at the end
    chunks, reader = read(path, "jsonl", text_column="body")
    assert "".join(chunks) == f"a{EOT}b"
    assert reader.documents == 2


def assert_no_partial_special(chunks: list[str]) -> None:
    for chunk in chunks:
        for special in SPECIALS:
            rest = chunk.replace(special, "")
            assert not any(rest.endswith(special[:k]) or rest.startswith(special[-k:]) for k in range(2, len(special)))


@pytest.mark.parametrize("chunk_chars", [3, 13, 1 << 20])
def test_no_chunk_holds_part_of_a_special_token(tmp_path, chunk_chars):
    documents = ["ab", "c", "", "d e f g", f"x{PAD}y", "\n"] * 20
    chunks, _ = read(write(tmp_path / "c.jsonl", jsonl_bytes(documents), "none"), "jsonl", chunk_chars=chunk_chars)
    assert "".join(chunks) == EOT.join(d for d in documents if d)
    assert_no_partial_special(chunks)


@pytest.mark.parametrize("chunk_chars", range(1, 30))
def test_special_tokens_written_in_a_text_file_are_never_cut(tmp_path, chunk_chars):
    text = f"ab{EOT}cd{PAD}{EOT}e f\n" * 20
    chunks, _ = read(write(tmp_path / "c.txt", text.encode(), "none"), "text", chunk_chars=chunk_chars)
    assert "".join(chunks) == text
    assert_no_partial_special(chunks)


def test_many_small_documents_are_packed_into_few_chunks(tmp_path):
    documents = [f"doc {i}" for i in range(10_000)]
    chunks, _ = read(write(tmp_path / "c.jsonl", jsonl_bytes(documents), "none"), "jsonl", chunk_chars=10_000)
    assert "".join(chunks) == EOT.join(documents)
    assert len(chunks) < 30


@pytest.mark.parametrize("chunk_chars", [4, 1 << 20])
def test_parquet_rows_are_documents_and_nulls_are_skipped(tmp_path, chunk_chars):
    path = tmp_path / "c.parquet"
    rows = DOCUMENTS[:2] + [None] + DOCUMENTS[2:]
    pq.write_table(pa.table({"id": list(range(len(rows))), "text": rows}), path, row_group_size=2)
    chunks, reader = read(path, "parquet", chunk_chars=chunk_chars)
    assert "".join(chunks) == EOT.join(DOCUMENTS)
    assert (reader.documents, reader.bytes_read) == (len(DOCUMENTS), path.stat().st_size)


def test_parquet_reads_large_and_dictionary_strings(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"t": pa.array(["a", "b"], pa.large_string())}), path)
    assert "".join(read(path, "parquet", text_column="t")[0]) == f"a{EOT}b"
    pq.write_table(pa.table({"t": pa.array(["a", "b", "a"]).dictionary_encode()}), path)
    assert "".join(read(path, "parquet", text_column="t")[0]) == f"a{EOT}b{EOT}a"


def test_gzip_parquet_is_refused_as_a_compression(tmp_path):
    with pytest.raises(CorpusError, match="without gzip") as error:
        DocumentReader(tmp_path / "c.parquet.gz", "parquet", "gzip")
    assert error.value.field == "compression"


def test_unknown_format_and_compression(tmp_path):
    with pytest.raises(CorpusError, match="unknown format 'csv'") as error:
        DocumentReader(tmp_path / "c", "csv")
    assert error.value.field == "format"
    with pytest.raises(CorpusError, match="unknown compression 'zstd'"):
        DocumentReader(tmp_path / "c", "text", "zstd")


def test_the_file_is_reread_on_a_second_iteration(tmp_path):
    reader = DocumentReader(write(tmp_path / "c.txt", TEXT.encode(), "none"), "text", chunk_chars=100)
    assert "".join(reader) == "".join(reader) == TEXT
    assert reader.characters == len(TEXT)


# -- errors name the place ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("chunk_chars", [3, 1 << 20])
def test_invalid_utf8_names_its_byte_offset(tmp_path, compression, chunk_chars):
    data = ("é" * 1000).encode() + b"ab\xffcd"  # 2,000 bytes of two-byte characters, then a bad byte at 2,002
    path = write(tmp_path / "c.txt", data, compression)
    with pytest.raises(CorpusError, match=r"^file: invalid UTF-8 at byte 2,002 \(bytes ff"):
        read(path, "text", compression, chunk_chars=chunk_chars)


def test_a_file_that_ends_inside_a_character_names_its_offset(tmp_path):
    with pytest.raises(CorpusError, match="invalid UTF-8 at byte 3 .*ends inside a character"):
        read(write(tmp_path / "c.txt", b"abc\xe2\x82", "none"), "text", chunk_chars=2)


@pytest.mark.parametrize("format", ["text", "jsonl"])
def test_a_nul_byte_is_a_binary_file(tmp_path, format):
    path = write(tmp_path / "c", b'{"text": "abc"}\n' * 100 + b"\x00\x01", "none")
    with pytest.raises(CorpusError, match=r"^file: a NUL byte at byte 1,600: this looks like a binary file"):
        read(path, format, chunk_chars=64)


def test_jsonl_line_without_the_field_names_line_and_offset(tmp_path):
    data = jsonl_bytes(["a", "b"]) + b'\n{"body": "c", "id": 3}\n'  # two lines of 23 bytes, one blank
    with pytest.raises(CorpusError, match=r'line 4 \(byte 47\): no field "text" \(its fields: body, id\)'):
        read(write(tmp_path / "c.jsonl", data, "none"), "jsonl", chunk_chars=7)


@pytest.mark.parametrize("line, message", [
    (b"not json", "not JSON"),
    (b'["text"]', "an array, not a JSON object"),
    (b'{"text": 12}', 'field "text" is a number, not a string'),
    (b'{"text": "caf\xc3', "invalid UTF-8 at byte 30"),  # the bad byte, 13 bytes into the line
])
@pytest.mark.parametrize("chunk_chars", [4, 1 << 20])
def test_jsonl_bad_lines_name_line_and_offset(tmp_path, line, message, chunk_chars):
    data = '{"text": "aé"}\n\n'.encode() + line + b"\n"  # 16 bytes and a blank line: line 3 starts at byte 17
    with pytest.raises(CorpusError, match=r"^file: line 3\b") as error:
        read(write(tmp_path / "c.jsonl", data, "none"), "jsonl", chunk_chars=chunk_chars)
    assert message in str(error.value)
    if "UTF-8" not in message:
        assert "line 3 (byte 17)" in str(error.value)


def test_parquet_without_the_column_lists_the_columns(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [1], "content": ["a"]}), path)
    with pytest.raises(CorpusError, match=r'no column "text" \(its columns: id, content\)') as error:
        read(path, "parquet")
    assert error.value.field == "text_column"


def test_parquet_column_that_is_not_strings_names_its_type(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), path)
    with pytest.raises(CorpusError, match='column "text" holds int64, not strings'):
        read(path, "parquet")


def test_a_file_that_is_not_parquet(tmp_path):
    with pytest.raises(CorpusError, match="not a parquet file"):
        read(write(tmp_path / "c.parquet", b"hello, world\n" * 10, "none"), "parquet")


def test_a_truncated_gzip_file(tmp_path):
    data = gzip.compress(TEXT.encode())
    path = tmp_path / "c.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError, match="the gzip data ends early.*truncated"):
        read(path, "text", "gzip")


def test_a_file_that_is_not_gzip(tmp_path):
    with pytest.raises(CorpusError, match="not a gzip file: it does not start with the bytes 1f 8b"):
        read(write(tmp_path / "c.txt.gz", TEXT.encode(), "none"), "text", "gzip")


def test_corrupt_gzip_data(tmp_path):
    data = bytearray(gzip.compress(TEXT.encode()))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "c.txt.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(CorpusError, match="corrupt gzip data|ends early"):
        read(path, "text", "gzip")


# -- check_part --------------------------------------------------------------------------------------------------------

def test_check_part_accepts_a_character_cut_at_either_edge():
    data = ("日本語 café " * 100).encode()
    edges = [0, 1, 2, 5, 301, 302, len(data)]
    for a, b in zip(edges, edges[1:]):
        check_part(data[a:b], edges.index(a) + 1, a, "text", "none")
        check_part(data[a:b], edges.index(a) + 1, a, "jsonl", "none")


def test_check_part_rejects_a_bad_byte_inside_naming_part_and_file_offset():
    data = b"x" * 100 + b"\xc3\x28" + b"y" * 100
    with pytest.raises(CorpusError, match=r"^file: part 3: invalid UTF-8 at byte 8,388,708\b"):
        check_part(data, 3, 8_388_608, "text", "none")


def test_check_part_tolerates_continuation_bytes_only_after_the_first_part():
    with pytest.raises(CorpusError, match="part 1: invalid UTF-8 at byte 0"):
        check_part(b"\xa9 rest", 1, 0, "text", "none")
    check_part(b"\xa9 rest", 2, 1000, "text", "none")
    with pytest.raises(CorpusError, match="part 2: invalid UTF-8 at byte 1,003"):  # four are never one character
        check_part(b"\x80\x80\x80\x80 rest", 2, 1000, "text", "none")


def test_check_part_rejects_a_nul_byte():
    with pytest.raises(CorpusError, match=r"part 2: a NUL byte at byte 1,005: this looks like a binary file"):
        check_part(b"hello\x00", 2, 1000, "jsonl", "none")


def test_check_part_checks_the_magic_of_gzip_and_parquet():
    check_part(gzip.compress(b"abc"), 1, 0, "text", "gzip")
    check_part(b"\x00\xff anything", 2, 100, "jsonl", "gzip")  # compressed bytes are not text
    with pytest.raises(CorpusError, match="part 1: not a gzip file"):
        check_part(b"plain text", 1, 0, "text", "gzip")
    check_part(b"PAR1\x00\x15", 1, 0, "parquet", "none")
    check_part(b"\x00\x15 middle of a parquet file", 2, 100, "parquet", "none")
    with pytest.raises(CorpusError, match="part 1: not a parquet file"):
        check_part(b"id,text\n", 1, 0, "parquet", "none")
    with pytest.raises(CorpusError, match="without gzip"):
        check_part(b"\x1f\x8b", 1, 0, "parquet", "gzip")


def test_a_file_declared_wrongly_is_named_for_what_it_is(tmp_path):
    with pytest.raises(CorpusError, match="part 1: this is a gzip file .*give compression gzip"):
        check_part(gzip.compress(b"abc"), 1, 0, "text", "none")
    with pytest.raises(CorpusError, match='part 1: this is a parquet file .*give format parquet'):
        check_part(b"PAR1\x15\x04", 1, 0, "jsonl", "none")
    with pytest.raises(CorpusError, match=r"^file: this is a gzip file \(it starts with the bytes 1f 8b\): give compression gzip$"):
        read(write(tmp_path / "c.txt", TEXT.encode(), "gzip"), "text", "none")


def test_checking_a_part_loads_no_pyarrow():
    """The gateway imports this package for check_part alone; pyarrow (60 MB) is loaded by a parquet read only."""
    code = ("import sys; from infra.corpus import check_part; check_part(b'PAR1', 1, 0, 'parquet', 'none'); "
            "print('pyarrow' in sys.modules)")
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "False"


def test_a_bad_byte_past_the_first_mib_of_a_part_is_named_at_its_offset():
    from infra.corpus.parts import CHECK_SLICE

    # A 3-byte character straddles the first slice's end; the bad byte sits in the second slice.
    data = bytearray(b"a" * (CHECK_SLICE - 1) + "東".encode() + b"b" * 100)
    bad = CHECK_SLICE + 50
    data[bad] = 0xFF
    with pytest.raises(CorpusError) as error:
        check_part(bytes(data), 2, 1000, "text", "none")
    assert f"{1000 + bad:,}" in str(error.value) or str(1000 + bad) in str(error.value)
    check_part(bytes(data[:bad]), 2, 1000, "text", "none")  # the same part without it passes
