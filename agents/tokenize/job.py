"""Tokenizing a dataset into shards, as a child process runs it: download -> train the tokenizer (one pass) ->
encode (a second pass) -> shards, tokenizer and manifest in the object store.

The same code serves a tokenize job and a training job's first step. A tokenization is named by its settings (the
dataset, the tokenizer's kind and options, the sample, the shard size; or the exact tokenizer a continued model
brings), so a second request with the same settings finds the manifest and reuses it; the manifest is written
last, so a tokenization that died half-way is made again from the start. Memory stays flat whatever the size: the
text passes through in chunks of a MiB, and each shard goes to the store as soon as it is full.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ValidationError

from agents.jobs.child import JobContext
from agents.jobs.kinds import JobKind, JobSpec
from agents.tokenize.shards import CorruptShard, Manifest, ShardWriter, fetch_shards
from events import (
    DatasetTokenized,
    JobCancelled,
    Rejected,
    TokenizeCompleted,
    TokenizeProgress,
)
from infra.corpus import CorpusError, DocumentReader
from infra.objectstore import ObjectNotFound, artifacts
from model.config import ConfigError
from model.data import TokenSequence
from model.tokenizers import Tokenizer, tokenizer_from_json, tokenizer_options, train_tokenizer_from_chunks

ENCODE_BATCH_CHUNKS = 8  # chunks of about a MiB encoded together (the BPE encoder spreads a batch over the cores)
PROGRESS_EVERY_S = 1.0
READING = ("training the tokenizer", "encoding")  # the phases whose bytes per second mean something


class Stopped(Exception):
    """The job was told to stop (cancelled or handed back) while it tokenized."""


class DatasetSource(BaseModel):
    """A stored dataset file and how to read it."""

    dataset_id: str
    key: str
    format: str = "text"
    compression: str = "none"
    text_column: str = "text"

    @classmethod
    def at(cls, key: str, **how: str) -> DatasetSource:
        """The dataset stored at `key` (`datasets/<id>`), read as `how` says (plain text by default)."""
        return cls(dataset_id=key.split("/", 1)[1], key=key, **how)


def checked_options(kind: str, options: dict[str, int]) -> dict[str, int]:
    """A tokenizer's options with their defaults, or the job's refusal naming the one at fault."""
    try:
        return tokenizer_options(kind, options)
    except ConfigError as error:
        field = "tokenizer" if error.field == "tokenizer" else f"tokenizer_options.{error.field}"
        raise Rejected(f"{field}: {error.message}", field) from None


def mapped_tokens(job: JobContext, manifest: Manifest, field: str) -> TokenSequence:
    """The manifest's shards from this worker's cache (fetched and checked as needed), memory-mapped end to end."""
    try:
        return fetch_shards(job.store, manifest, job.settings.data_dir / "shards", job.stored,
                            job.settings.shard_cache_bytes)
    except CorruptShard as error:
        raise Rejected(f"{field}: {error}; tokenize the dataset again", field) from None


class TokenizeSpec(JobSpec):
    """A tokenize job as the tokenize agent accepted it."""

    source: DatasetSource
    tokenizer: str
    tokenizer_options: dict[str, int]
    sample_bytes: int | None = None
    tokens_per_shard: int


def tokenization_id(source: DatasetSource, tokenizer: str, options: dict[str, int], sample_bytes: int | None,
                    tokens_per_shard: int, given: str | None = None) -> str:
    """The name of a tokenization: a digest of everything that decides its shards (`given`: a tokenizer's JSON)."""
    settings = {"dataset": source.dataset_id, "format": source.format, "compression": source.compression,
                "text_column": source.text_column, "tokens_per_shard": tokens_per_shard, "manifest": 1}
    if given is not None:
        settings["tokenizer_sha256"] = hashlib.sha256(given.encode()).hexdigest()
    else:
        settings.update(tokenizer=tokenizer, options=dict(sorted(options.items())), sample_bytes=sample_bytes)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def stored_manifest(job: JobContext, source: DatasetSource, tid: str) -> Manifest | None:
    """The manifest of a finished tokenization, or None (none yet, or one that does not read back)."""
    key = artifacts.manifest_key(source.dataset_id, tid)
    try:
        data = job.stored(lambda: job.store.get_bytes(key), "reading a token manifest")
        return Manifest.model_validate_json(data)
    except (ObjectNotFound, ValidationError):
        return None


class _Reporter:
    """TokenizeProgress at most once a second (and at each phase's start)."""

    def __init__(self, job: JobContext, source: DatasetSource, tid: str, total: int):
        self.job, self.source, self.tid, self.total = job, source, tid, total
        self.started = time.monotonic()
        self.last = 0.0
        self.phase_started = self.started

    def __call__(self, phase: str, done: int, tokens: int = 0, force: bool = False) -> None:
        if self.job.should_stop():
            raise Stopped()
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        phase_s = now - self.phase_started
        self.job.emit(TokenizeProgress, dataset_id=self.source.dataset_id, tokenization_id=self.tid, phase=phase,
                      bytes_done=min(done, self.total), bytes_total=self.total, tokens=tokens,
                      elapsed_s=now - self.started,
                      mb_per_s=done / phase_s / 1e6 if phase in READING and phase_s > 0 and done else None)

    def phase(self, phase: str, done: int = 0, tokens: int = 0) -> None:
        self.phase_started = time.monotonic()
        self(phase, done, tokens, force=True)


def _chunks(reader: DocumentReader, report: _Reporter, phase: str, limit: int | None = None) -> Iterator[str]:
    """The reader's chunks, reporting progress; stops after about `limit` bytes of text when given."""
    seen = 0
    for chunk in reader:
        yield chunk
        seen += len(chunk)
        report(phase, reader.bytes_read)
        if limit is not None and seen >= limit:
            return


def _read_errors(call):
    try:
        return call()
    except CorpusError as error:
        raise Rejected(f"dataset: {error}", "dataset") from None


def tokenize(job: JobContext, source: DatasetSource, tokenizer_kind: str, options: dict[str, int],
             sample_bytes: int | None = None, tokens_per_shard: int | None = None,
             given: Tokenizer | None = None, tid: str | None = None) -> tuple[Manifest, str, bool]:
    """The dataset's tokens as shards in the store: found (reused) or made now. -> (manifest, its id, reused)."""
    per_shard = tokens_per_shard or job.settings.tokens_per_shard
    given_json = given.to_json() if given is not None else None
    if given_json is not None and tid is None:  # the tokenization that trained this very tokenizer, if any
        pointer = _pointer_key(source, given_json)
        try:
            tid = job.stored(lambda: job.store.get_bytes(pointer), "reading a token manifest").decode()
        except ObjectNotFound:
            tid = None
        found = stored_manifest(job, source, tid) if tid else None
        if found is not None:
            return found, tid, True
        tid = None
    tid = tid or tokenization_id(source, tokenizer_kind, options, sample_bytes, per_shard, given_json)
    found = stored_manifest(job, source, tid)
    if found is not None:
        return found, tid, True
    # A folder of this process's own: two jobs tokenizing the same way at once (a tokenize job and a training run
    # on one host) must not clear each other's files; what they store is the same, byte for byte.
    work = job.settings.data_dir / "work" / f"tokenize-{tid}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        return _tokenize(job, source, tokenizer_kind, options, sample_bytes, per_shard, given, tid, work), tid, False
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tokenize(job: JobContext, source: DatasetSource, kind: str, options: dict[str, int], sample_bytes: int | None,
              per_shard: int, given: Tokenizer | None, tid: str, work: Path) -> Manifest:
    store = job.store
    try:
        total = job.stored(lambda: store.size(source.key), "reading the dataset")
    except ObjectNotFound:
        raise Rejected(f"dataset: no dataset at {source.key}", "dataset") from None
    report = _Reporter(job, source, tid, total)
    report.phase("downloading")
    raw = work / "dataset"
    job.stored(lambda: store.get_file(source.key, raw), "downloading the dataset")

    def reader() -> DocumentReader:
        return _read_errors(lambda: DocumentReader(raw, source.format, source.compression, source.text_column))

    tokenizer = given
    if tokenizer is None:
        report.phase("training the tokenizer")
        options = checked_options(kind, options)
        tokenizer = _read_errors(lambda: train_tokenizer_from_chunks(
            kind, _chunks(reader(), report, "training the tokenizer", sample_bytes), **options))
    prefix = artifacts.tokens_prefix(source.dataset_id, tid)
    writer = ShardWriter(work / "shards", tokenizer.vocab_size, per_shard)
    keys: list[str] = []
    # A finished shard goes to the store from a thread of its own while the next is encoded (the upload waits on
    # the network and the disk, not the interpreter); one at a time, so the local disk holds two shards at most.
    uploads = ThreadPoolExecutor(1, thread_name_prefix="shard-upload")
    pending: list[Future] = []

    def store_shard(key: str, path: Path) -> None:
        job.stored(lambda: store.put_file(key, path), f"storing {key}")
        path.unlink()

    def upload(paths: list[Path]) -> None:
        for path in paths:
            key = f"{prefix}shard-{len(keys):06d}.bin"
            keys.append(key)
            while pending and pending[0].done():
                pending.pop(0).result()  # an upload that failed fails the tokenization
            if pending:
                pending.pop(0).result()  # at most one on its way while this one is written
            pending.append(uploads.submit(store_shard, key, path))

    try:
        report.phase("encoding")
        text = reader()
        batch: list[str] = []

        def encode() -> None:
            upload(writer.add(tokenizer.encode_many(batch)))
            batch.clear()

        try:
            for chunk in text:
                batch.append(chunk)
                if len(batch) >= ENCODE_BATCH_CHUNKS:
                    encode()
                    report("encoding", text.bytes_read, writer.tokens)
        except CorpusError as error:
            raise Rejected(f"dataset: {error}", "dataset") from None
        if batch:
            encode()
        upload(writer.close())
        for done in pending:
            done.result()
    finally:
        uploads.shutdown(wait=False, cancel_futures=True)
    if writer.tokens == 0:
        raise Rejected("dataset: the dataset holds no text", "dataset")
    report.phase("storing", total, writer.tokens)
    tokenizer_key = f"{prefix}tokenizer.json"
    job.stored(lambda: store.put_bytes(tokenizer_key, tokenizer.to_json().encode(), "application/json"),
               "storing the tokenizer")
    manifest = Manifest(dataset_id=source.dataset_id, tokenizer=tokenizer.kind, tokenizer_options=options,
                        tokenizer_key=tokenizer_key, vocab_size=tokenizer.vocab_size, dtype=writer.dtype.name,
                        tokens=writer.tokens, documents=text.documents, characters=text.characters,
                        source_bytes=total, shards=[w.stored_as(k) for w, k in zip(writer.files, keys, strict=True)])
    job.stored(lambda: store.put_bytes(artifacts.manifest_key(source.dataset_id, tid),
                                       manifest.model_dump_json().encode(), "application/json"),
               "storing the manifest")
    pointer = _pointer_key(source, tokenizer.to_json())
    job.stored(lambda: store.put_bytes(pointer, tid.encode(), "text/plain"), "storing the manifest")
    return manifest


def _pointer_key(source: DatasetSource, tokenizer_json: str) -> str:
    """Where the id of the tokenization made by a tokenizer is noted: a model trained on it, continued or evaluated
    later, brings that tokenizer and finds its tokens again."""
    digest = hashlib.sha256(tokenizer_json.encode()).hexdigest()[:32]
    return f"{artifacts.tokens_prefix(source.dataset_id)}by-tokenizer/{digest}"


def announce(job: JobContext, source: DatasetSource, manifest: Manifest, tid: str, sample_bytes: int | None,
             started: float, reused: bool) -> None:
    job.emit(DatasetTokenized, dataset_id=source.dataset_id, tokenization_id=tid,
             manifest_key=artifacts.manifest_key(source.dataset_id, tid), tokenizer=manifest.tokenizer,
             tokenizer_options=manifest.tokenizer_options, sample_bytes=sample_bytes, vocab_size=manifest.vocab_size,
             dtype=manifest.dtype, tokens=manifest.tokens, shards=len(manifest.shards), documents=manifest.documents,
             characters=manifest.characters, source_bytes=manifest.source_bytes,
             wall_s=time.monotonic() - started, reused=reused)


def load_tokenizer(job: JobContext, manifest: Manifest) -> Tokenizer:
    return tokenizer_from_json(job.stored(lambda: job.store.get_bytes(manifest.tokenizer_key),
                                          "reading the tokenizer").decode())


def run_tokenize(spec: TokenizeSpec, job: JobContext) -> None:
    started = time.monotonic()
    try:
        manifest, tid, reused = tokenize(job, spec.source, spec.tokenizer, spec.tokenizer_options, spec.sample_bytes,
                                         spec.tokens_per_shard)
    except Stopped:
        job.emit(JobCancelled, reason="cancelled by request")
        return
    wall = time.monotonic() - started
    announce(job, spec.source, manifest, tid, spec.sample_bytes, started, reused)
    job.emit(TokenizeCompleted, dataset_id=spec.source.dataset_id, tokenization_id=tid,
             manifest_key=artifacts.manifest_key(spec.source.dataset_id, tid), tokens=manifest.tokens, wall_s=wall,
             mb_per_s=manifest.source_bytes / wall / 1e6 if wall > 0 and not reused else None,
             tokens_per_s=manifest.tokens / wall if wall > 0 and not reused else None)


TOKENIZE = JobKind("tokenize", TokenizeSpec, run_tokenize)
