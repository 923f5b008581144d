"""Training from chunks equals training on the joined text; encode_many equals encode, text after text."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.tokenizers import EOT, PAD, UNK, train_tokenizer, train_tokenizer_from_chunks

LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "  Tabs\tand  double  spaces; punctuation: (a), [b], {c}?",
    "UTF-8: café, naïve, Ωmega, 日本語, emoji 🙂.",
    f"documents end{EOT}and the next one starts, {PAD} and {UNK} read as specials",
    "",
    "numbers 0123456789 and the the the",
]
TEXT = "".join(LINES[(i * 7) % len(LINES)] + "\n" for i in range(400))
OPTIONS = {"char": {}, "word": {"max_vocab": 120, "min_frequency": 2}, "bpe": {"vocab_size": 320}}


def chunks_at_newlines(text: str, lines_per_chunk: int) -> list[str]:
    lines = text.splitlines(keepends=True)
    return ["".join(lines[i:i + lines_per_chunk]) for i in range(0, len(lines), lines_per_chunk)]


@pytest.fixture(scope="module")
def tokenizers():
    return {kind: train_tokenizer(kind, TEXT, **options) for kind, options in OPTIONS.items()}


@pytest.mark.parametrize("kind", ["char", "word"])
@pytest.mark.parametrize("lines_per_chunk", [1, 7, 10_000])
def test_chunks_cut_at_newlines_train_the_tokenizer_of_the_joined_text(tokenizers, kind, lines_per_chunk):
    streamed = train_tokenizer_from_chunks(kind, iter(chunks_at_newlines(TEXT, lines_per_chunk)), **OPTIONS[kind])
    assert streamed.to_json() == tokenizers[kind].to_json()


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_one_chunk_is_train_tokenizer_exactly(tokenizers, kind):
    assert train_tokenizer_from_chunks(kind, [TEXT], **OPTIONS[kind]).to_json() == tokenizers[kind].to_json()


def test_bpe_from_chunks_round_trips_with_the_same_vocabulary_size(tokenizers):
    streamed = train_tokenizer_from_chunks("bpe", iter(chunks_at_newlines(TEXT, 13)), **OPTIONS["bpe"])
    assert streamed.vocab_size == tokenizers["bpe"].vocab_size == 320
    sample = TEXT[:2000] + "unseen: Жж ∑ 🚀"
    assert streamed.decode(streamed.encode(sample)) == sample


def test_chunks_are_read_once_and_lazily():
    """A generator is enough: the chunks of a file too big for memory are never held together."""
    pulled = []

    def chunks():
        for chunk in chunks_at_newlines(TEXT, 50):
            pulled.append(len(chunk))
            yield chunk

    for kind, options in OPTIONS.items():
        pulled.clear()
        train_tokenizer_from_chunks(kind, chunks(), **options)
        assert sum(pulled) == len(TEXT)


def test_an_error_while_reading_the_chunks_reaches_the_caller():
    class Unreadable(ValueError):
        pass

    def chunks():
        yield TEXT
        raise Unreadable("file: invalid UTF-8 at byte 12")

    for kind, options in OPTIONS.items():
        with pytest.raises(Unreadable):
            train_tokenizer_from_chunks(kind, chunks(), **options)


ENCODE_TEXTS = [
    TEXT[:500],
    f"{EOT}starts with a special, ends with one{EOT}",
    f"{EOT}{EOT}{PAD}{UNK}",
    "unseen characters: Жж ∑ 🚀 and a lone surrogate \ud800",
    "",
    "half a special <|endo",
    "ftext|> in the next text",
    "<|not a special|> <| |>",
    "\x00\x7f\u2028 control characters",
]


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_encode_many_is_encode_text_after_text(tokenizers, kind):
    tok = tokenizers[kind]
    texts = [t for t in ENCODE_TEXTS if kind != "bpe" or "\ud800" not in t]  # HF refuses lone surrogates
    expected = np.array([i for text in texts for i in tok.encode(text)], dtype=np.int64)
    got = tok.encode_many(texts)
    assert got.dtype == np.int64 and got.ndim == 1
    np.testing.assert_array_equal(got, expected)
    assert tok.encode_many([]).shape == (0,)


PIECES = [*"ab é日🙂\nЖ<|>", " the", EOT, PAD, UNK, "<|endoftext"]  # Ж is unseen; "<|endoftext" half a special


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.lists(st.sampled_from(PIECES), max_size=30).map("".join), max_size=5))
def test_encode_many_equals_encode_on_any_text(tokenizers, texts):
    for tok in tokenizers.values():
        expected = [i for text in texts for i in tok.encode(text)]
        assert tok.encode_many(texts).tolist() == expected
