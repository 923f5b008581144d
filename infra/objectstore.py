"""Object storage for datasets, tokenizers and checkpoints: one interface over S3 or a local folder.

`open_object_store(settings)` picks the implementation from `LFZ_OBJECT_STORE_URL`: `http(s)://host:port` is an S3
server (MinIO, Versity S3 Gateway) reached with the `minio` client, `file:///path` a folder on this machine. Both
behave the same: keys are validated (`InvalidKey`), a missing object raises `ObjectNotFound`, writes are atomic
(a reader sees the old object or the new one, never half of it), and listing returns every key under a prefix,
sorted. The stores are synchronous, for the training child process; `AsyncObjectStore` runs the same calls in a
thread for the event loop of the gateway and the agents.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from infra.settings import Settings

MAX_KEY_BYTES = 1024  # S3's limit on an object name
_PARTIAL_DIR = ".lfz-partial"  # LocalObjectStore's folder for writes in progress; no key may start with it


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
    """The store cannot be reached or its bucket / folder is missing (raised by `health()`)."""


def validate_key(key: str) -> str:
    """Return `key` when it is a plain relative name made of `/`-separated segments; raise `InvalidKey` otherwise."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(key, "it must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
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
    if segments[0] == _PARTIAL_DIR:
        raise InvalidKey(key, f"'{_PARTIAL_DIR}' is reserved")
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
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream") -> None:
        """Upload a file without reading it into memory (checkpoints)."""

    @abstractmethod
    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Download to `path`, atomically: `path` is replaced only once the whole object has arrived."""

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
    def ensure_bucket(self) -> None:
        """Create the bucket (or folder) when it is missing."""

    @abstractmethod
    def health(self) -> None:
        """Return when the store answers and its bucket exists; raise `ObjectStoreUnavailable` otherwise."""


class LocalObjectStore(ObjectStore):
    """Objects as files under one folder; the key is the path below it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root / validate_key(key)
        # Validation already rules out escapes; a symlink planted inside the folder must not lead out either.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(key, "it resolves outside the store's folder")
        return path

    def _partial(self) -> Path:
        partial = self.root / _PARTIAL_DIR
        partial.mkdir(parents=True, exist_ok=True)
        return partial

    def _publish(self, tmp: Path, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self._partial())
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            self._publish(Path(tmp), path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream") -> None:
        target = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self._partial())
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
            self._publish(Path(tmp), target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFound(key)
        _atomic_download(path, lambda tmp: shutil.copyfile(source, tmp))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        # Walk only the folder that can hold matches: the prefix up to its last '/'.
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            if Path(dirpath) == self.root and _PARTIAL_DIR in dirnames:
                dirnames.remove(_PARTIAL_DIR)
            for name in filenames:
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        # S3 has no folders: drop the ones this delete emptied, so a prefix leaves no trace.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def health(self) -> None:
        if not self.root.is_dir():
            raise ObjectStoreUnavailable(f"object store folder {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ObjectStoreUnavailable(f"object store folder {self.root} is not writable")


class S3ObjectStore(ObjectStore):
    """Objects in one bucket of an S3 server, through the `minio` client (thread-safe, pooled connections)."""

    def __init__(self, url: str, access_key: str, secret_key: str, bucket: str, region: str = "us-east-1") -> None:
        import certifi
        import urllib3
        from minio import Minio

        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path not in ("", "/"):
            raise ValueError(f"S3 endpoint must look like http(s)://host:port, got {url!r}")
        self.url = url
        self.bucket = bucket
        secure = parsed.scheme == "https"
        # Fail within seconds when the server is down (minio's default waits minutes), retry only server errors.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=120),
            maxsize=16,
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
            ca_certs=certifi.where() if secure else None,
        )
        self.client = Minio(
            parsed.netloc, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.url!r}, bucket={self.bucket!r})"

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        # An S3 PUT is atomic: the object appears whole when the request completes.
        self.client.put_object(
            self.bucket, validate_key(key), io.BytesIO(data), len(data), content_type=content_type
        )

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream") -> None:
        self.client.fput_object(self.bucket, validate_key(key), os.fspath(path), content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, validate_key(key))
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise ObjectNotFound(key) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        from minio.error import S3Error

        validate_key(key)

        def download(tmp: Path) -> None:
            try:
                self.client.fget_object(self.bucket, key, os.fspath(tmp))
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    raise ObjectNotFound(key) from None
                raise

        _atomic_download(path, download)

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, validate_key(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        objects = self.client.list_objects(self.bucket, prefix=validate_prefix(prefix) or None, recursive=True)
        return sorted(obj.object_name for obj in objects if not obj.is_dir and obj.object_name is not None)

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, validate_key(key))

    def delete_prefix(self, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject

        if not validate_prefix(prefix):
            raise InvalidKey(prefix, "delete_prefix needs a non-empty prefix")
        keys = self.list(prefix)
        # One DeleteObjects request per 1000 keys; the call is lazy and yields only the failures.
        errors = list(self.client.remove_objects(self.bucket, (DeleteObject(key) for key in keys)))
        if errors:
            raise RuntimeError(f"could not delete {len(errors)} objects under {prefix!r}: {errors[0]}")
        return len(keys)

    def ensure_bucket(self) -> None:
        from minio.error import S3Error

        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as exc:  # another process created it in between
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def health(self) -> None:
        try:
            found = self.client.bucket_exists(self.bucket)
        except Exception as exc:
            raise ObjectStoreUnavailable(f"S3 server {self.url} does not answer: {exc}") from exc
        if not found:
            raise ObjectStoreUnavailable(f"bucket {self.bucket!r} does not exist on {self.url}")


def _atomic_download(path: str | os.PathLike[str], fill: object) -> None:
    """Call `fill(tmp)` on a temporary file beside `path`, then move it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        fill(tmp)  # type: ignore[operator]
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class AsyncObjectStore:
    """The same calls for an event loop: each runs in a worker thread so the loop never blocks on I/O."""

    def __init__(self, store: ObjectStore) -> None:
        self.sync = store

    def __repr__(self) -> str:
        return f"AsyncObjectStore({self.sync!r})"

    async def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self.sync.put_bytes, key, data, content_type)

    async def get_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self.sync.get_bytes, key)

    async def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self.sync.put_file, key, path, content_type)

    async def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        await asyncio.to_thread(self.sync.get_file, key, path)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.sync.exists, key)

    async def list(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(self.sync.list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.sync.delete, key)

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(self.sync.delete_prefix, prefix)

    async def ensure_bucket(self) -> None:
        await asyncio.to_thread(self.sync.ensure_bucket)

    async def health(self) -> None:
        await asyncio.to_thread(self.sync.health)


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
