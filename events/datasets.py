"""Facts about datasets: an upload stored, a dataset deleted, and its tokenizations (token shards in the object store,
made by a tokenize job or by a training job that needed them)."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import Field

from events.fields import Identifier
from events.job import FailureFields, JobEvent

PREVIEW_CHARS = 200  # of a dataset's text, in its listing


class DatasetUploaded(JobEvent):
    type: Literal["DatasetUploaded"] = "DatasetUploaded"
    dataset_id: Identifier
    name: str
    key: str
    bytes: int
    characters: int | None = Field(default=None, description="Known when the gateway read the text whole (small "
                                                              "uploads); else its first tokenization tells.")
    preview: str
    sha256: str | None = Field(default=None, description=(
        "Of the stored bytes (small uploads); of the parts' digests in order, `parts:<hex>` (multipart uploads): the "
        "same file is stored once."))
    format: Literal["text", "jsonl", "parquet"] = "text"
    compression: Literal["none", "gzip"] = "none"
    text_column: str = Field(default="text", max_length=200, description="JSON Lines and Parquet: the text field.")

    @classmethod
    def of_text(cls, *, dataset_id: str, name: str, key: str, data: bytes, text: str, owner: str | None,
                producer: str) -> DatasetUploaded:
        """The first (and only) fact of a dataset whose bytes `data` (decoded: `text`) are stored at `key`."""
        return cls(job_id=dataset_id, seq=1, producer=producer, owner=owner, kind="dataset", dataset_id=dataset_id,
                   name=name, key=key, bytes=len(data), characters=len(text), preview=text[:PREVIEW_CHARS],
                   sha256=hashlib.sha256(data).hexdigest())


class DatasetDeleted(JobEvent):
    type: Literal["DatasetDeleted"] = "DatasetDeleted"
    dataset_id: Identifier


# -- tokenizations ---------------------------------------------------------------------------------------------------


class TokenizeProgress(JobEvent):
    """A tokenization under way: bytes of the dataset read so far in its current phase, tokens written so far."""

    type: Literal["TokenizeProgress"] = "TokenizeProgress"
    dataset_id: Identifier
    tokenization_id: Identifier
    phase: Literal["downloading", "training the tokenizer", "encoding", "storing"]
    bytes_done: int = Field(ge=0)
    bytes_total: int = Field(ge=0)
    tokens: int = Field(ge=0)
    elapsed_s: float = Field(ge=0)
    mb_per_s: float | None = None


class DatasetTokenized(JobEvent):
    """A dataset's tokens are in the object store, as shards a manifest lists; any training run that names the
    dataset with the same tokenizer settings reads them instead of tokenizing again. Written by a tokenize job, or by
    a training job that tokenized the dataset as its first step (it does not end the job)."""

    type: Literal["DatasetTokenized"] = "DatasetTokenized"
    dataset_id: Identifier
    tokenization_id: Identifier
    manifest_key: str
    tokenizer: str
    tokenizer_options: dict[str, int] = Field(default_factory=dict)
    sample_bytes: int | None = None
    vocab_size: int
    dtype: str
    tokens: int
    shards: int
    documents: int
    characters: int
    source_bytes: int
    wall_s: float
    reused: bool = Field(default=False, description="Found in the object store from an earlier run.")


class TokenizeCompleted(JobEvent):
    type: Literal["TokenizeCompleted"] = "TokenizeCompleted"
    dataset_id: Identifier
    tokenization_id: Identifier
    manifest_key: str
    tokens: int
    wall_s: float
    mb_per_s: float | None = None
    tokens_per_s: float | None = None


class TokenizeFailed(FailureFields, JobEvent):
    type: Literal["TokenizeFailed"] = "TokenizeFailed"
    dataset_id: Identifier | None = None
