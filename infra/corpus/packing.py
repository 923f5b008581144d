"""ChunkPacker: text arriving in pieces of any size (blocks of a file, one document each) out as chunks of about
`chunk_chars` characters, cut where a tokenizer loses the least.

A chunk is the unit the tokenizer trains and encodes on, so where it is cut matters: a word cut in two is counted as
two words, and a special token cut in two is read as plain text. The cut goes, by preference, just after the last
end-of-text or newline of the chunk's second half, else before its last space (a word starts with its space), else
anywhere; never inside a special token. Many small documents are packed into one chunk, because one call per tiny
document would make the tokenizer, not the file, the slow part."""

from __future__ import annotations

from model.tokenizers import EOT, SPECIALS


class ChunkPacker:
    """`packer.add(text)` returns the chunks it completes (usually none); `packer.finish()` returns the rest."""

    def __init__(self, chunk_chars: int):
        if chunk_chars < 1:
            raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
        self.chunk_chars = chunk_chars
        self._pieces: list[str] = []
        self._size = 0

    def add(self, text: str) -> list[str]:
        self._pieces.append(text)
        self._size += len(text)
        # Cut only once the text past the limit is in: a special token may cross it.
        return self._cut_chunks(self.chunk_chars + _LONGEST) if self._size >= self.chunk_chars + _LONGEST else []

    def finish(self) -> list[str]:
        chunks = self._cut_chunks(self.chunk_chars + 1)
        rest = "".join(self._pieces)
        self._pieces, self._size = [], 0
        return chunks + [rest] if rest else chunks

    def _cut_chunks(self, enough: int) -> list[str]:
        """Cut chunks off the text held while at least `enough` characters remain."""
        buffer, chunks, start = "".join(self._pieces), [], 0
        while len(buffer) - start >= enough:
            cut = start + _cut(buffer[start:start + self.chunk_chars + _LONGEST], self.chunk_chars)
            chunks.append(buffer[start:cut])
            start = cut
        rest = buffer[start:]
        self._pieces, self._size = [rest], len(rest)
        return chunks


_LONGEST = max(len(s) for s in SPECIALS)


def _cut(text: str, limit: int) -> int:
    """Where to end a chunk of at most `limit` characters taken from the start of `text`, which is longer (up to
    `limit + _LONGEST` characters are looked at, to see a special token that crosses the limit)."""
    low = limit // 2
    eot = text.rfind(EOT, low, limit)
    cut = max(eot + len(EOT) if eot >= 0 else 0, text.rfind("\n", low, limit) + 1)
    if cut == 0:
        space = text.rfind(" ", low, limit)
        cut = space if space > 0 else limit
    for special in SPECIALS:  # a special token that straddles the cut moves the cut to before it
        at = text.find(special, max(0, cut - len(special) + 1), cut + len(special) - 1)
        if 0 <= at < cut:
            cut = at if at > 0 else at + len(special)
    return cut
