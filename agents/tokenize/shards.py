"""Token shards: a dataset's tokens as flat little-endian files in the object store, listed by a manifest.

A tokenization writes the tokens once, as files of exactly `tokens_per_shard` tokens (the last may be shorter),
uint16 when the vocabulary fits 65,536 ids and uint32 otherwise; training processes copy them into a local cache
named by content (`<sha256>.bin`, so identical shards are stored once), check each against its SHA-256 and
memory-map it. Nothing here holds more than a block of tokens in memory, whatever the size of the dataset.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple, TypeVar

import numpy as np
from pydantic import BaseModel, Field, model_validator

from infra.objectstore import ObjectStore
from model.data import TokenSequence

TOKENS_PER_SHARD = 1 << 24  # 32 MiB of uint16 tokens per file
BLOCK_TOKENS = 1 << 20  # at most this many tokens converted and written at once
HASH_BLOCK = 1 << 20  # bytes read at a time when hashing a file
FETCH_TRIES = 3  # downloads of a shard whose bytes do not match before it is declared corrupt
T = TypeVar("T")


def shard_dtype(vocab_size: int) -> np.dtype:
    """The smallest little-endian unsigned type that holds every id of the vocabulary."""
    if not 0 < vocab_size <= 1 << 32:
        raise ValueError(f"a vocabulary of {vocab_size} ids cannot be stored as uint16 or uint32 tokens")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardFile(BaseModel):
    key: str  # in the object store
    tokens: int = Field(gt=0)
    bytes: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """What a tokenization wrote: its tokenizer, its counts and its shards in order; stored as JSON beside them."""

    format: Literal[1] = 1
    dataset_id: str
    tokenizer: str  # kind: char | word | bpe
    tokenizer_options: dict[str, int]
    tokenizer_key: str  # object-store key of the tokenizer JSON
    vocab_size: int = Field(gt=0)
    dtype: Literal["uint16", "uint32"]
    tokens: int = Field(ge=0)
    documents: int = Field(ge=0)
    characters: int = Field(ge=0)
    source_bytes: int = Field(ge=0)
    shards: list[ShardFile]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        # A manifest is read from the store: its counts are checked here, not trusted where the shards are mapped.
        if self.dtype != shard_dtype(self.vocab_size).name:
            raise ValueError(f"dtype {self.dtype} does not suit a vocabulary of {self.vocab_size} ids")
        if sum(shard.tokens for shard in self.shards) != self.tokens:
            raise ValueError(f"the shards hold {sum(s.tokens for s in self.shards)} tokens, not {self.tokens}")
        for shard in self.shards:
            if shard.bytes != shard.tokens * self.numpy_dtype.itemsize:
                raise ValueError(f"shard {shard.key}: {shard.bytes} bytes for {shard.tokens} {self.dtype} tokens")
        return self

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")

    @property
    def shard_bytes(self) -> int:
        """The bytes of every shard together: what a training process's cache needs."""
        return sum(shard.bytes for shard in self.shards)


class WrittenShard(NamedTuple):
    path: Path
    tokens: int
    bytes: int
    sha256: str

    def stored_as(self, key: str) -> ShardFile:
        return ShardFile(key=key, tokens=self.tokens, bytes=self.bytes, sha256=self.sha256)


class ShardWriter:
    """Writes token arrays (any integer dtype) as consecutive shard files `<index>.bin` in a local folder, each of
    exactly `tokens_per_shard` tokens but the last, hashing them as it goes. The tokens are written through, a
    block at a time: memory does not grow with the shard size or the dataset's."""

    def __init__(self, folder: Path, vocab_size: int, tokens_per_shard: int = TOKENS_PER_SHARD):
        if tokens_per_shard <= 0:
            raise ValueError(f"tokens_per_shard must be positive, got {tokens_per_shard}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.vocab_size = vocab_size
        self.dtype = shard_dtype(vocab_size)
        self.tokens_per_shard = tokens_per_shard
        self.tokens = 0  # written so far, in every shard
        self.files: list[WrittenShard] = []  # completed shards, in order
        self._out: BinaryIO | None = None  # the shard being written
        self._hash = hashlib.sha256()
        self._in_shard = 0  # tokens in the shard being written

    def add(self, ids: np.ndarray) -> list[Path]:
        """Append tokens; returns the shard files this call completed, ready to upload."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"tokens must be a 1-D integer array, got {ids.dtype} of shape {ids.shape}")
        done = []
        for at in range(0, len(ids), BLOCK_TOKENS):
            block = ids[at:at + BLOCK_TOKENS]
            if block.min() < 0 or block.max() >= self.vocab_size:
                raise ValueError(f"token ids must be in [0, {self.vocab_size}), got [{block.min()}, {block.max()}]")
            while len(block):
                room = self.tokens_per_shard - self._in_shard
                self._write(block[:room])
                block = block[room:]
                if self._in_shard == self.tokens_per_shard:
                    done.append(self._finish())
        return done

    def close(self) -> list[Path]:
        """Finish the last, partial shard; returns it (or nothing when the tokens filled whole shards)."""
        return [self._finish()] if self._out is not None else []

    def _write(self, ids: np.ndarray) -> None:
        if self._out is None:
            self._out = open(self.folder / f"{len(self.files):06d}.bin", "wb")
        data = ids.astype(self.dtype).data  # little-endian, whatever the machine
        self._out.write(data)
        self._hash.update(data)
        self._in_shard += len(ids)
        self.tokens += len(ids)

    def _finish(self) -> Path:
        out, self._out = self._out, None
        out.close()
        path = Path(out.name)
        self.files.append(WrittenShard(path, self._in_shard, self._in_shard * self.dtype.itemsize,
                                       self._hash.hexdigest()))
        self._hash, self._in_shard = hashlib.sha256(), 0
        return path


class CorruptShard(Exception):
    """A shard's bytes in the object store do not match its manifest, download after download."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"token shard {key} is corrupt: {reason}")
        self.key = key


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _intact(path: Path, shard: ShardFile) -> bool:
    # The size first: a truncated file is found without reading it.
    return path.is_file() and path.stat().st_size == shard.bytes and file_sha256(path) == shard.sha256


def _direct(call: Callable[[], T], what: str) -> T:
    return call()


def fetch_shard(store: ObjectStore, shard: ShardFile, cache: Path,
                stored: Callable[[Callable[[], T], str], T] = _direct) -> Path:
    """The shard's file in the cache, `cache/<sha256>.bin`, checked, downloaded again when missing or wrong.

    A download lands beside the cache's file and takes its name only once checked, so a file under a cache name
    was whole once; it is checked again on every use all the same (a disk may rot, a hand may edit)."""
    path = cache / f"{shard.sha256}.bin"
    if _intact(path, shard):
        os.utime(path)  # its last use: what trim_cache keeps
        return path
    path.unlink(missing_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    for _ in range(FETCH_TRIES):
        tmp = cache / f".{shard.sha256}.{uuid.uuid4().hex}.download"
        try:
            stored(lambda: store.get_file(shard.key, tmp), f"fetching {shard.key}")
            if _intact(tmp, shard):
                os.replace(tmp, path)  # atomic: another process reading the cache sees all of it or nothing
                return path
        finally:
            tmp.unlink(missing_ok=True)
    raise CorruptShard(shard.key, f"{FETCH_TRIES} downloads did not match its size of {shard.bytes} bytes and "
                                  f"SHA-256 {shard.sha256}")


def trim_cache(cache: Path, limit_bytes: int, keep: set[str]) -> int:
    """Delete the least recently used shard files of the cache until it holds at most `limit_bytes`, never the ones
    named in `keep` (the shards about to be used); returns the bytes freed. A file another process has mapped stays
    readable to it (the kernel frees it when the last mapping goes)."""
    files = []
    for path in cache.glob("*.bin"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # another process trimmed it a moment ago
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    total, freed = sum(size for _, size, _ in files), 0
    for _, size, path in sorted(files):
        if total - freed <= limit_bytes:
            break
        if path.stem not in keep:
            path.unlink(missing_ok=True)
            freed += size
    return freed


def fetch_shards(store: ObjectStore, manifest: Manifest, cache: Path,
                 stored: Callable[[Callable[[], T], str], T] = _direct,
                 limit_bytes: int | None = None) -> TokenSequence:
    """Every shard of the manifest in the local cache (fetch_shard), memory-mapped read-only, end to end. With
    `limit_bytes`, the cache's least recently used other shards go first, to keep it within that size.

    `stored(call, what)` runs each object-store call: the training job's JobContext.stored waits out an outage."""
    if limit_bytes is not None and Path(cache).is_dir():
        trim_cache(Path(cache), max(0, limit_bytes - manifest.shard_bytes), {s.sha256 for s in manifest.shards})
    dtype = manifest.numpy_dtype
    # Mode "r" maps the file shared and read-only: the pages are the kernel's page cache, dropped under pressure,
    # and count toward neither the process's heap nor its RLIMIT_DATA.
    return TokenSequence([np.memmap(fetch_shard(store, shard, Path(cache), stored), dtype=dtype, mode="r",
                                    shape=(shard.tokens,)) for shard in manifest.shards], release=drop_pages)


def drop_pages(array: np.ndarray) -> None:
    """Unmap the pages of the shard under `array` from this process (MADV_DONTNEED): they stay in the page cache,
    and the next read of them is a minor fault. Random windows over a large corpus would otherwise map, one batch
    after another, the whole of it into the process's resident memory."""
    while isinstance(array, np.ndarray):
        array = array.base
    if isinstance(array, mmap.mmap):
        array.madvise(mmap.MADV_DONTNEED)
