"""The object store interface: key rules, errors, the synchronous `ObjectStore` and its `AsyncObjectStore` wrapper.

Multipart uploads follow S3's rules in both stores (the vocabulary lives in `infra.objectstore.multipart`), so code
written against the folder store in the tests behaves the same on the S3 server."""

from __future__ import annotations

import asyncio
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from infra.objectstore.multipart import StoredPart

MAX_KEY_BYTES = 1024  # S3's limit on an object name
BINARY = "application/octet-stream"
PARTIAL_DIR = ".lfz-partial"  # LocalObjectStore's folder for writes in progress; no key may start with it


class InvalidKey(ValueError):
    """A key that could escape its prefix or the store's folder, or that S3 would not accept."""

    def __init__(self, key: object, reason: str) -> None:
        super().__init__(f"invalid object key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class ObjectNotFound(LookupError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no object with key {key!r}")
        self.key = key


class ObjectStoreUnavailable(RuntimeError):
    """The store cannot be reached (any call), or its bucket / folder is missing (`health()`)."""


def validate_key(key: str) -> str:
    """Return `key` when it is a plain relative name made of `/`-separated segments; raise `InvalidKey` otherwise."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(key, "it must be a non-empty string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(key, "it is not valid Unicode text (a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(key, f"it is longer than {MAX_KEY_BYTES} bytes")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidKey(key, "it contains a control character")
    if "\\" in key:
        raise InvalidKey(key, "it contains a backslash")
    if key.startswith("/"):
        raise InvalidKey(key, "it is an absolute path")
    segments = key.split("/")
    if any(segment == "" for segment in segments):
        raise InvalidKey(key, "it has an empty segment (a leading, trailing or doubled '/')")
    if any(segment in (".", "..") for segment in segments):
        raise InvalidKey(key, "it has a '.' or '..' segment")
    if segments[0] == PARTIAL_DIR:
        raise InvalidKey(key, f"'{PARTIAL_DIR}' is reserved")
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix is empty, a valid key, or a valid key followed by one `/`."""
    if prefix == "":
        return prefix
    validate_key(prefix.removesuffix("/") if prefix.endswith("/") else prefix)
    return prefix


class ObjectStore(ABC):
    """The synchronous interface; every method validates its key first."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str = BINARY) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = BINARY) -> None:
        """Upload a file without reading it into memory (checkpoints)."""

    @abstractmethod
    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Download to `path`, atomically: `path` is replaced only once the whole object has arrived."""

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes of the object from byte `start`, fewer where it ends first (a header or footer, read
        without downloading the whole file)."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's length in bytes; `ObjectNotFound` when it is missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error (as in S3)."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under a non-empty prefix; return how many there were."""
        if not validate_prefix(prefix):
            raise InvalidKey(prefix, "delete_prefix needs a non-empty prefix")
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    @abstractmethod
    def start_upload(self, key: str, content_type: str = BINARY) -> str:
        """Begin a multipart upload of `key`; returns its upload id."""

    @abstractmethod
    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        """Store part `number` (1..MAX_PARTS) of the upload; returns its etag. Sending the same number again
        replaces that part (harmless). Parts may arrive in any order."""

    @abstractmethod
    def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        """The parts stored so far, by number (to resume an interrupted upload)."""

    @abstractmethod
    def finish_upload(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """Join the given parts (number, etag), ascending numbers, into the object `key`, which appears whole and at
        once; stored parts left out are dropped. A part missing, with another etag, or under MIN_PART_BYTES while
        not the last raises ValueError naming the part number, and leaves the upload as it was."""

    @abstractmethod
    def abort_upload(self, key: str, upload_id: str) -> None:
        """Discard the upload and its parts; an unknown id is not an error."""

    @abstractmethod
    def ensure_bucket(self) -> None:
        """Create the bucket (or folder) when it is missing."""

    @abstractmethod
    def health(self) -> None:
        """Return when the store answers and its bucket exists; raise `ObjectStoreUnavailable` otherwise."""


def validate_range(start: int, length: int) -> None:
    if start < 0 or length < 0:
        raise ValueError(f"a byte range needs start >= 0 and length >= 0, got start={start}, length={length}")


def atomic_download(path: str | os.PathLike[str], fill: Callable[[Path], object]) -> None:
    """Call `fill(tmp)` on a temporary file beside `path`, then move it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        fill(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class AsyncObjectStore:
    """The same calls for an event loop: each runs in a worker thread so the loop never blocks on I/O."""

    def __init__(self, store: ObjectStore) -> None:
        self.sync = store

    def __repr__(self) -> str:
        return f"AsyncObjectStore({self.sync!r})"

    async def put_bytes(self, key: str, data: bytes, content_type: str = BINARY) -> None:
        await asyncio.to_thread(self.sync.put_bytes, key, data, content_type)

    async def get_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self.sync.get_bytes, key)

    async def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = BINARY) -> None:
        await asyncio.to_thread(self.sync.put_file, key, path, content_type)

    async def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        await asyncio.to_thread(self.sync.get_file, key, path)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        return await asyncio.to_thread(self.sync.get_range, key, start, length)

    async def size(self, key: str) -> int:
        return await asyncio.to_thread(self.sync.size, key)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.sync.exists, key)

    async def list(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(self.sync.list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.sync.delete, key)

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(self.sync.delete_prefix, prefix)

    async def start_upload(self, key: str, content_type: str = BINARY) -> str:
        return await asyncio.to_thread(self.sync.start_upload, key, content_type)

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        return await asyncio.to_thread(self.sync.put_part, key, upload_id, number, data)

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        return await asyncio.to_thread(self.sync.list_parts, key, upload_id)

    async def finish_upload(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        await asyncio.to_thread(self.sync.finish_upload, key, upload_id, parts)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await asyncio.to_thread(self.sync.abort_upload, key, upload_id)

    async def ensure_bucket(self) -> None:
        await asyncio.to_thread(self.sync.ensure_bucket)

    async def health(self) -> None:
        await asyncio.to_thread(self.sync.health)
