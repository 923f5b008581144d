"""Our tokenizers in the `tokenizers` library's JSON, so that `PreTrainedTokenizerFast` (and AutoTokenizer) gives the
same ids as ours and decodes them to the same text.

- bpe is a `tokenizers` BPE already: its JSON is written as it is.
- char and word become a WordLevel vocabulary behind two splits: the first cuts the text where our word rule does
  (` ?letters`), the second keeps a piece whole when it is a word of the vocabulary and otherwise cuts it into single
  characters, which is exactly our fall-back; a character outside the vocabulary is <|unk|>. The specials are
  added tokens, matched in the text before any split, as ours are.
"""

from __future__ import annotations

import json

from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from model.tokenizers import EOT, PAD, SPECIALS, UNK, BPETokenizer, PieceTokenizer, Tokenizer

ANY_CHARACTER = r"[\s\S]"
# Our word rule in Oniguruma's syntax: Python's [^\W\d_] is exactly the letters and the numbers that are not decimal
# digits (categories L, Nl, No) for every character of Python's Unicode database.
WORD = r" ?[\p{L}\p{Nl}\p{No}]+"


def _escaped(piece: str) -> str:
    """A vocabulary word as an Oniguruma literal: letters stand for themselves, the leading space is spelled out."""
    return "".join(r"\x20" if c == " " else c for c in piece)


def _piece_tokenizer(tokenizer: PieceTokenizer) -> HFTokenizer:
    hf = HFTokenizer(models.WordLevel(vocab=dict(tokenizer.ids), unk_token=UNK))
    splits = []
    if tokenizer.words:
        splits.append(pre_tokenizers.Split(Regex(WORD), behavior="isolated"))
        words = "|".join(_escaped(w) for w in sorted(tokenizer.words, key=len, reverse=True))
        splits.append(pre_tokenizers.Split(Regex(rf"\A(?:{words})\z|{ANY_CHARACTER}"), behavior="isolated"))
    else:
        splits.append(pre_tokenizers.Split(Regex(ANY_CHARACTER), behavior="isolated"))
    hf.pre_tokenizer = pre_tokenizers.Sequence(splits)
    hf.decoder = decoders.Fuse()
    hf.add_special_tokens(list(SPECIALS))
    return hf


def hf_tokenizer(tokenizer: Tokenizer) -> HFTokenizer:
    """The `tokenizers` Tokenizer that encodes (without added specials) and decodes as `tokenizer` does."""
    if isinstance(tokenizer, BPETokenizer):
        return HFTokenizer.from_str(tokenizer.hf.to_str())
    if isinstance(tokenizer, PieceTokenizer):
        return _piece_tokenizer(tokenizer)
    raise TypeError(f"no export for tokenizers of kind {tokenizer.kind!r}")


def tokenizer_files(tokenizer: Tokenizer, context_length: int) -> dict[str, bytes]:
    """tokenizer.json and tokenizer_config.json for `PreTrainedTokenizerFast`."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOT, "bos_token": EOT, "pad_token": PAD, "unk_token": UNK,
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
    }
    return {
        "tokenizer.json": hf_tokenizer(tokenizer).to_str().encode(),
        "tokenizer_config.json": json.dumps(config, indent=2).encode(),
        "special_tokens_map.json": json.dumps({k: config[k] for k in ("eos_token", "bos_token", "pad_token",
                                                                       "unk_token")}, indent=2).encode(),
    }
