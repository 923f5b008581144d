"""Tokenizers: exact round trips (hypothesis), unknown characters, JSON persistence."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers

from model.config import ConfigError
from model.tokenizers import (
    EOT,
    MAX_OPTION,
    PAD,
    UNK,
    _byte_alphabet,
    tokenizer_from_json,
    tokenizer_options,
    train_tokenizer,
)

TRAINING_TEXT = (
    "Hello, world! The quick brown fox jumps over the lazy dog.\n"
    "  Tabs\tand  double  spaces; newlines\n\nand punctuation: (a), [b], {c}? 'quoted' \"too\"...\n"
    "Numbers 0123456789 and UTF-8: café, naïve, Ωmega, 日本語, emoji 🙂.\n"
) * 5
ALPHABET = sorted(set(TRAINING_TEXT))


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "char": train_tokenizer("char", TRAINING_TEXT),
        "word": train_tokenizer("word", TRAINING_TEXT, min_frequency=2, max_vocab=200),
        "bpe": train_tokenizer("bpe", TRAINING_TEXT, vocab_size=300),
    }


seen_text = st.text(alphabet=ALPHABET, max_size=200)
# Text built from whole training words, to exercise the word tokens themselves.
word_text = st.lists(st.sampled_from(TRAINING_TEXT.split(" ") + [" ", "\n", EOT]), max_size=40).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=seen_text)
def test_char_round_trip(tokenizers, text):
    tok = tokenizers["char"]
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(seen_text, word_text))
def test_word_round_trip(tokenizers, text):
    tok = tokenizers["word"]
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_bpe_round_trip_any_text(tokenizers, text):
    tok = tokenizers["bpe"]
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=100), seen=seen_text)
def test_token_bytes_concatenate_to_the_text_without_specials(tokenizers, text, seen):
    """Streaming decodes token_bytes incrementally; specials stand for no text."""
    def without_specials(s: str) -> str:
        for special in (EOT, PAD, UNK):
            s = s.replace(special, "")
        return s

    for kind, sample in (("bpe", text), ("char", seen), ("word", seen)):
        tok = tokenizers[kind]
        joined = b"".join(tok.token_bytes(i) for i in tok.encode(sample)).decode("utf-8")
        assert joined == without_specials(sample)


@pytest.mark.parametrize("kind", ["char", "word"])
def test_unseen_characters_become_unk(tokenizers, kind):
    tok = tokenizers[kind]
    ids = tok.encode("Hello ☃ world ✓")
    assert ids.count(tok.unk_id) == 2
    assert tok.decode(ids) == f"Hello {UNK} world {UNK}"


def test_specials_have_fixed_ids_and_round_trip(tokenizers):
    for tok in tokenizers.values():
        assert (tok.eot_id, tok.pad_id, tok.unk_id) == (0, 1, 2)
        ids = tok.encode(f"Hello{EOT}world")
        assert tok.eot_id in ids
        assert tok.decode(ids) == f"Hello{EOT}world"


def test_word_tokenizer_makes_frequent_words_single_tokens(tokenizers):
    tok = tokenizers["word"]
    assert len(tok.encode(" quick")) == 1
    assert len(tok.encode(" quickly")) > 1  # unknown word: falls back to characters
    assert tok.decode(tok.encode(" quickly")) == " quickly"
    assert tok.vocab_size <= 200


def test_word_tokenizer_respects_min_frequency():
    tok = train_tokenizer("word", "alpha alpha alpha beta", min_frequency=2)
    assert " alpha" in tok.word_ids and "alpha" not in tok.word_ids
    assert " beta" not in tok.word_ids


def test_bpe_vocab_size_is_a_parameter(tokenizers):
    assert tokenizers["bpe"].vocab_size <= 300
    assert tokenizers["bpe"].vocab_size > 256


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_json_round_trip_without_training_data(tokenizers, kind):
    tok = tokenizers[kind]
    data = tok.to_json()
    json.loads(data)  # valid JSON
    again = tokenizer_from_json(data)
    sample = "The lazy fox, café 日本語!\n\n" + EOT + " again"
    assert again.kind == kind
    assert again.vocab_size == tok.vocab_size
    assert again.encode(sample) == tok.encode(sample)
    assert again.decode(tok.encode(sample)) == tok.decode(tok.encode(sample))


def test_byte_alphabet_matches_hugging_face():
    assert sorted(_byte_alphabet()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(_byte_alphabet().values()) == list(range(256))


def test_bpe_token_bytes_split_multibyte_characters():
    tok = train_tokenizer("bpe", "plain ascii text only " * 20, vocab_size=270)
    ids = tok.encode("🙂")
    assert len(ids) > 1  # never seen: stays as separate bytes
    assert b"".join(tok.token_bytes(i) for i in ids) == "🙂".encode()


def test_unknown_kind_and_options_are_config_errors():
    with pytest.raises(ConfigError) as err:
        train_tokenizer("sentencepiece", "abc")
    assert err.value.field == "tokenizer"
    with pytest.raises(ConfigError) as err:
        train_tokenizer("word", "abc", max_vocab=-5)
    assert err.value.field == "max_vocab"
    with pytest.raises(ConfigError) as err:
        train_tokenizer("char", "abc", vocab_size=10)
    assert err.value.field == "vocab_size"


@pytest.mark.parametrize("kind, options, field", [
    ("bpe", {"vocab_size": -4}, "vocab_size"),
    ("bpe", {"vocab_size": 0}, "vocab_size"),
    ("bpe", {"vocab_size": 10**30}, "vocab_size"),
    ("word", {"max_vocab": True}, "max_vocab"),
    ("word", {"min_frequency": 0}, "min_frequency"),
    ("char", {"max_vocab": 10}, "max_vocab"),
    ("morse", {}, "tokenizer"),
])
def test_options_are_checked_without_any_text(kind, options, field):
    with pytest.raises(ConfigError) as err:
        tokenizer_options(kind, options)
    assert err.value.field == field


def test_options_get_their_defaults():
    assert tokenizer_options("bpe", {}) == {"vocab_size": 1024}
    assert tokenizer_options("word", {"max_vocab": MAX_OPTION}) == {"max_vocab": MAX_OPTION, "min_frequency": 2}
    assert tokenizer_options("char", {}) == {}


def test_empty_training_text_still_gives_a_tokenizer():
    tok = train_tokenizer("char", "")
    assert tok.vocab_size == 3
    assert tok.encode("abc") == [tok.unk_id] * 3


def test_decode_rejects_ids_outside_the_vocabulary(tokenizers):
    for tok in tokenizers.values():
        with pytest.raises(ValueError):
            tok.decode([tok.vocab_size + 5])


def test_unseen_names_the_characters_a_piece_vocabulary_reads_as_unk():
    tok = train_tokenizer("char", "abc abc")
    assert tok.unseen("cab, déjà vu <|endoftext|>") == ",déjàvu"  # each once, in order; the special is known
    assert tok.unseen("abc") == ""
    assert train_tokenizer("bpe", "abc abc " * 50, vocab_size=300).unseen("déjà vu") == ""  # bytes hold anything


def test_vocab_size_names_the_word_vocabulary_too_and_a_char_one_says_why_not():
    text = "the cat sat on the mat, the dog sat on the log. " * 40
    assert train_tokenizer("word", text, vocab_size=40).vocab_size <= 40
    with pytest.raises(ConfigError, match="give vocab_size or max_vocab"):
        train_tokenizer("word", text, vocab_size=40, max_vocab=50)
    with pytest.raises(ConfigError, match="word and bpe take vocab_size") as err:
        train_tokenizer("char", text, vocab_size=40)
    assert err.value.field == "vocab_size"
