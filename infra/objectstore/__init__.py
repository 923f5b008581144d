"""Object storage for datasets, tokenizers and checkpoints: one interface over S3 or a local folder.

`open_object_store(settings)` picks the implementation from `LFZ_OBJECT_STORE_URL`: `http(s)://host:port` is an S3
server (MinIO, Versity S3 Gateway) reached with the `minio` client, `file:///path` a folder on this machine. Both
behave the same: keys are validated (`InvalidKey`), a missing object raises `ObjectNotFound`, writes are atomic
(a reader sees the old object or the new one, never half of it), and listing returns every key under a prefix,
sorted. Big files go up in parts (`start_upload`, `put_part`, `finish_upload`) under S3's rules in both stores, and
an interrupted upload resumes from `list_parts`; `get_range` and `size` read a file's header or footer without
downloading it. The stores are synchronous, for the training child process; `AsyncObjectStore` runs the same calls in a
thread for the event loop of the gateway and the agents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from infra.objectstore.base import (
    BINARY,
    MAX_KEY_BYTES,
    AsyncObjectStore,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreUnavailable,
    validate_key,
    validate_prefix,
)
from infra.objectstore.local import LocalObjectStore
from infra.objectstore.multipart import MAX_PARTS, MIN_PART_BYTES, StoredPart, UploadNotFound
from infra.objectstore.s3 import S3ObjectStore

if TYPE_CHECKING:
    from infra.settings import Settings

__all__ = [
    "BINARY",
    "MAX_KEY_BYTES",
    "MAX_PARTS",
    "MIN_PART_BYTES",
    "AsyncObjectStore",
    "InvalidKey",
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreUnavailable",
    "S3ObjectStore",
    "StoredPart",
    "UploadNotFound",
    "open_async_object_store",
    "open_object_store",
    "validate_key",
    "validate_prefix",
]


def open_object_store(settings: Settings) -> ObjectStore:
    """The store that `settings` names: S3 for `http(s)://`, a folder for `file://` (the embedded default)."""
    url = settings.resolved_object_store_url
    scheme = urlparse(url).scheme
    if scheme in ("http", "https"):
        return S3ObjectStore(url, settings.s3_access_key, settings.s3_secret_key, settings.bucket, settings.s3_region)
    if scheme == "file":
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file:// object store URL must name a local path, got {url!r}")
        return LocalObjectStore(unquote(parsed.path))
    raise ValueError(f"LFZ_OBJECT_STORE_URL must be http(s)://host:port or file:///path, got {url!r}")


def open_async_object_store(settings: Settings) -> AsyncObjectStore:
    return AsyncObjectStore(open_object_store(settings))
