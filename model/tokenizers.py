"""Tokenizers: text <-> token ids, trained on the corpus and saved as JSON with every model.

- `char`: one token per character seen in training.
- `word`: the most frequent words are single tokens; any other word falls back to its characters.
- `bpe`: byte-level BPE trained with Hugging Face `tokenizers`; lossless for any UTF-8 text.

All three share the specials <|endoftext|>, <|pad|>, <|unk|>; their literal text in the input is read as the
special token, and decoding writes it back, so decode(encode(text)) == text whenever every character was seen
in training (always, for bpe). Characters never seen map to <|unk|> (char, word).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Iterable

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
    resolved = tokenizer_options(kind, options)
    plain = "".join(_SPECIAL_RE.split(text)[::2])  # the text without its special tokens
    if kind == "char":
        return PieceTokenizer("char", sorted(set(plain)))
    if kind == "word":
        max_vocab, min_frequency = resolved["max_vocab"], resolved["min_frequency"]
        chars = sorted(set(plain))
        counts = Counter(w for w in _WORD_RE.findall(plain) if len(w) > 1)
        ranked = sorted((w for w, n in counts.items() if n >= min_frequency), key=lambda w: (-counts[w], w))
        return PieceTokenizer("word", chars, ranked[: max(0, max_vocab - len(SPECIALS) - len(chars))])
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=resolved["vocab_size"], special_tokens=list(SPECIALS),
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = plain.splitlines(keepends=True)
    hf.train_from_iterator(("".join(lines[i:i + 1000]) for i in range(0, len(lines), 1000)), trainer)
    return BPETokenizer(hf)


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
