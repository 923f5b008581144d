"""Tokenizers: text <-> token ids, trained on the corpus and saved as JSON with every model.

- `char`: one token per character seen in training.
- `word`: the most frequent words are single tokens; any other word falls back to its characters.
- `bpe`: byte-level BPE trained with Hugging Face `tokenizers`; lossless for any UTF-8 text.

All three share the specials <|endoftext|>, <|pad|>, <|unk|>; their literal text in the input is read as the
special token, and decoding writes it back, so decode(encode(text)) == text whenever every character was seen
in training (always, for bpe). Characters never seen map to <|unk|> (char, word).

A corpus too big for memory trains in one pass over its chunks (`train_tokenizer_from_chunks`) and encodes a batch
of chunks at a time into one array (`Tokenizer.encode_many`, equal to `encode` chunk by chunk, only faster).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from model.config import ConfigError

EOT, PAD, UNK = "<|endoftext|>", "<|pad|>", "<|unk|>"
SPECIALS = (EOT, PAD, UNK)  # ids 0, 1, 2 in every tokenizer
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")
# A word: letters, with the space before it (so " the" is one token and spacing round-trips exactly).
_WORD_RE = re.compile(r" ?[^\W\d_]+")
FORMAT_VERSION = 1


class Tokenizer:
    """The interface every tokenizer provides."""

    kind: str = ""
    eot_id, pad_id, unk_id = 0, 1, 2

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_many(self, texts: list[str]) -> np.ndarray:
        """The ids of every text, one after the other, as one int64 array: exactly the concatenation of `encode(t)`
        for each text, made faster where a kind can (the tokenizer job encodes gigabytes through here)."""
        return np.fromiter(itertools.chain.from_iterable(map(self.encode, texts)), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one token stands for (b"" for specials): streaming decodes these incrementally."""
        raise NotImplementedError

    def unseen(self, text: str) -> str:
        """The characters of `text` that the vocabulary cannot hold, each once in order of appearance: each would be
        read as <|unk|>. Empty for byte-level BPE, which holds every text."""
        return ""

    def to_json(self) -> str:
        raise NotImplementedError


class PieceTokenizer(Tokenizer):
    """Vocabulary of text pieces: specials, then single characters, then (word kind) whole words."""

    def __init__(self, kind: str, chars: list[str], words: list[str] = ()):
        self.kind = kind
        self.chars, self.words = list(chars), list(words)
        self.pieces = list(SPECIALS) + self.chars + self.words
        self.ids = {p: i for i, p in enumerate(self.pieces)}
        self.char_ids = {c: self.ids[c] for c in self.chars}
        self.word_ids = {w: self.ids[w] for w in self.words}
        self._bytes = [b""] * len(SPECIALS) + [p.encode("utf-8") for p in self.pieces[len(SPECIALS):]]
        self._char_table: np.ndarray | None = None  # built by the first encode_many of a char tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def _encode_chars(self, text: str, out: list[int]) -> None:
        get, unk = self.char_ids.get, self.unk_id
        out.extend(get(c, unk) for c in text)

    def _encode_plain(self, text: str, out: list[int]) -> None:
        if not self.words:
            self._encode_chars(text, out)
            return
        pos = 0
        for m in _WORD_RE.finditer(text):
            self._encode_chars(text[pos:m.start()], out)
            word_id = self.word_ids.get(m.group())
            if word_id is None:
                self._encode_chars(m.group(), out)
            else:
                out.append(word_id)
            pos = m.end()
        self._encode_chars(text[pos:], out)

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for i, part in enumerate(_SPECIAL_RE.split(text)):
            if i % 2:  # the capturing split puts the specials at odd indices
                out.append(self.ids[part])
            elif part:
                self._encode_plain(part, out)
        return out

    def encode_many(self, texts: list[str]) -> np.ndarray:
        if self.words:  # words need the regex walk of encode; only the char kind has a vectorised path
            return super().encode_many(texts)
        table = self._code_point_table()
        out = np.empty(sum(map(len, texts)), dtype=np.int64)  # one id per character at most
        end = 0
        for text in texts:
            end += self._encode_chars_into(text, table, out[end:end + len(text)])
        return out[:end]

    def _code_point_table(self) -> np.ndarray:
        """The id of each code point up to the largest seen, then <|unk|> in one more slot, which every larger code
        point reads (np.take's mode="clip")."""
        if self._char_table is None:
            table = np.full(max(map(ord, self.chars), default=0) + 2, self.unk_id, dtype=np.int64)
            table[[ord(c) for c in self.chars]] = [self.char_ids[c] for c in self.chars]
            self._char_table = table
        return self._char_table

    def _encode_chars_into(self, text: str, table: np.ndarray, out: np.ndarray) -> int:
        """encode(text) for the char kind, written to the start of `out` (len(text) long); returns how many ids.
        Writing into one array made for the whole batch, rather than a new array per text, runs ~4x faster."""
        np.take(table, code_points(text), out=out, mode="clip")
        specials = list(_SPECIAL_RE.finditer(text)) if "<|" in text else []
        if not specials:
            return len(text)
        # Each special's first character becomes its id, and the others go: mark [start + 1, end) of each.
        starts = np.array([m.start() for m in specials])
        out[starts] = [self.ids[m.group()] for m in specials]
        inside = np.zeros(len(text) + 1, dtype=np.int32)
        inside[starts + 1] += 1
        inside[[m.end() for m in specials]] -= 1
        kept = out[np.cumsum(inside[:-1]) == 0]
        out[:len(kept)] = kept
        return len(kept)

    def decode(self, ids: Iterable[int]) -> str:
        pieces = self.pieces
        try:
            return "".join(pieces[i] for i in ids)
        except (IndexError, TypeError):
            raise ValueError(f"token id outside the vocabulary of {len(pieces)}") from None

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def unseen(self, text: str) -> str:
        plain = "".join(_SPECIAL_RE.split(text)[::2])
        return "".join(dict.fromkeys(c for c in plain if c not in self.char_ids))

    def to_json(self) -> str:
        d = {"kind": self.kind, "version": FORMAT_VERSION, "specials": list(SPECIALS), "chars": self.chars}
        if self.kind == "word":
            d["words"] = self.words
        return json.dumps(d, ensure_ascii=False)


def code_points(text: str) -> np.ndarray:
    """The text's code points: a byte each when it is ASCII (CPython knows that without a scan), else 4 bytes each.
    surrogatepass: a lone surrogate (legal in a str) reads as its code point, as `encode` reads it."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _byte_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet: each byte shown as a printable character. Returns character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        for i, s in enumerate(SPECIALS):
            if hf.token_to_id(s) != i:
                raise ValueError(f"BPE vocabulary must hold {s} at id {i}")
        alphabet = _byte_alphabet()
        self._bytes = [b""] * hf.get_vocab_size()
        for token, i in hf.get_vocab().items():
            if i >= len(SPECIALS):
                self._bytes[i] = bytes(alphabet[c] for c in token)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_many(self, texts: list[str]) -> np.ndarray:
        # One text per Rust thread: pass several chunks at once to use every core.
        encodings = self.hf.encode_batch_fast(texts, add_special_tokens=False)
        arrays = [np.array(e.ids, dtype=np.int64) for e in encodings]
        return np.concatenate(arrays) if arrays else np.empty(0, np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise ValueError(f"token id outside the vocabulary of {self.vocab_size}")
        return self.hf.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def to_json(self) -> str:
        return json.dumps({"kind": "bpe", "version": FORMAT_VERSION, "hf": json.loads(self.hf.to_str())})


# Each kind's options: name -> (default, smallest allowed). A vocabulary past MAX_OPTION would not suit a small GPT,
# and the bound keeps a typo (or a hostile request) from reaching the BPE trainer as an integer it cannot hold.
OPTIONS: dict[str, dict[str, tuple[int, int]]] = {
    "char": {},
    "word": {"max_vocab": (5000, len(SPECIALS)), "min_frequency": (2, 1)},
    "bpe": {"vocab_size": (1024, 256 + len(SPECIALS))},
}
MAX_OPTION = 1 << 20


def tokenizer_options(kind: str, options: dict) -> dict[str, int]:
    """A `kind` tokenizer's options with the defaults filled in. Needs no text, so a service can check a request
    before it trains anything; raises ConfigError naming the unknown kind or the bad option."""
    if kind not in OPTIONS:
        raise ConfigError("tokenizer", f"unknown tokenizer {kind!r}; known: {', '.join(OPTIONS)}")
    known = OPTIONS[kind]
    if kind == "word" and "vocab_size" in options:  # the one name of a vocabulary's size, for word and bpe alike
        if "max_vocab" in options:
            raise ConfigError("vocab_size", "give vocab_size or max_vocab, not both")
        options = {("max_vocab" if name == "vocab_size" else name): value for name, value in options.items()}
    unknown = [name for name in options if name not in known]
    if unknown:
        hint = ("; the char tokenizer's vocabulary is the text's characters (word and bpe take vocab_size)"
                if kind == "char" and unknown[0] == "vocab_size" else "")
        raise ConfigError(str(unknown[0]), f"unknown option for the {kind} tokenizer{hint}")
    resolved = {}
    for name, (default, minimum) in known.items():
        value = options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_OPTION:
            raise ConfigError(name, f"must be an integer from {minimum} to {MAX_OPTION}, got {value!r}")
        resolved[name] = value
    return resolved


def train_tokenizer(kind: str, text: str, **options) -> Tokenizer:
    """Build a tokenizer from the training text. Options: word: max_vocab, min_frequency; bpe: vocab_size."""
    return train_tokenizer_from_chunks(kind, [text], **options)


def train_tokenizer_from_chunks(kind: str, chunks: Iterable[str], **options) -> Tokenizer:
    """Build a tokenizer in one pass over the training text's chunks, holding one chunk at a time (and the counts).

    Special tokens are taken out of each chunk before counting. For chunks cut where no word crosses (after a
    newline, say), the char and word tokenizers equal those trained on the joined text; the BPE trainer sees the
    same lines, in groups of up to 1000 per chunk. Options as for `train_tokenizer`."""
    resolved = tokenizer_options(kind, options)
    plains = ("".join(_SPECIAL_RE.split(chunk)[::2]) for chunk in chunks)  # each chunk without its specials
    if kind == "char":
        seen = np.zeros(0x110000, dtype=bool)  # every code point a chunk holds, marked at numpy's speed
        for plain in plains:
            points = code_points(plain)
            if points.dtype == np.uint8:  # ASCII: a count of 128 bytes, much cheaper than marking each
                seen[:128] |= np.bincount(points, minlength=128) > 0
            else:
                seen[points] = True
        return PieceTokenizer("char", [chr(c) for c in np.flatnonzero(seen)])
    if kind == "word":
        max_vocab, min_frequency = resolved["max_vocab"], resolved["min_frequency"]
        chars, counts = set(), Counter()
        for plain in plains:
            chars |= set(plain)
            counts.update(w for w in _WORD_RE.findall(plain) if len(w) > 1)
        ranked = sorted((w for w, n in counts.items() if n >= min_frequency), key=lambda w: (-counts[w], w))
        return PieceTokenizer("word", sorted(chars), ranked[: max(0, max_vocab - len(SPECIALS) - len(chars))])
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=resolved["vocab_size"], special_tokens=list(SPECIALS),
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(_line_groups(plains), trainer)  # pulls the chunks lazily, as the trainer reads
    return BPETokenizer(hf)


def _line_groups(plains: Iterable[str]) -> Iterator[str]:
    """Each text in groups of 1000 lines: the pieces the BPE trainer reads (and splits among its threads)."""
    for plain in plains:
        lines = plain.splitlines(keepends=True)
        for i in range(0, len(lines), 1000):
            yield "".join(lines[i:i + 1000])


def tokenizer_from_json(s: str) -> Tokenizer:
    d = json.loads(s)
    if d.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported tokenizer format version {d.get('version')!r}")
    if d.get("kind") in ("char", "word"):
        if d.get("specials") != list(SPECIALS):
            raise ValueError("tokenizer specials differ from this version's")
        return PieceTokenizer(d["kind"], d["chars"], d.get("words", []))
    if d.get("kind") == "bpe":
        return BPETokenizer(HFTokenizer.from_str(json.dumps(d["hf"])))
    raise ValueError(f"unknown tokenizer kind {d.get('kind')!r}")
