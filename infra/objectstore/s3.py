"""S3ObjectStore: objects in one bucket of an S3 server (MinIO, Versity S3 Gateway) through the `minio` client.

A server that cannot be reached, or answers with a server error, raises `ObjectStoreUnavailable` from every method:
its callers wait or answer 503 without knowing the HTTP library underneath.

Multipart uploads use the client's one-request methods (`_create_multipart_upload` and the like), which minio 7.2
keeps private but stable: its public `put_object` drives a whole upload in one call and cannot resume one."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError

from infra.objectstore.base import (BINARY, InvalidKey, ObjectNotFound, ObjectStore, ObjectStoreUnavailable,
                                    atomic_download, validate_key, validate_prefix, validate_range)
from infra.objectstore.multipart import (StoredPart, UploadNotFound, match_parts, validate_part_list,
                                         validate_part_number)

NOT_FOUND = ("NoSuchKey", "NoSuchObject", "NotFound")
# The characters of the upload ids that S3 servers hand out (AWS, MinIO, Ceph, Versity). An empty id would turn an
# UploadPart request into a plain PUT of the object, and a '/' would reach a gateway that builds paths from the id.
UPLOAD_ID = re.compile(r"[A-Za-z0-9._~+=-]{1,1024}")


class S3ObjectStore(ObjectStore):
    """Objects in one bucket of an S3 server, through the `minio` client (thread-safe, pooled connections)."""

    def __init__(self, url: str, access_key: str, secret_key: str, bucket: str, region: str = "us-east-1") -> None:
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

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Connection failures and server errors (after the client's own retries) as ObjectStoreUnavailable."""
        try:
            yield
        except (urllib3.exceptions.HTTPError, ServerError) as exc:
            raise ObjectStoreUnavailable(f"S3 server {self.url} does not answer: {exc}") from exc

    @contextmanager
    def _within_upload(self, key: str, upload_id: str) -> Iterator[None]:
        """`_reaching`, with an upload id of the wrong shape and the server's NoSuchUpload as UploadNotFound."""
        if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(key, upload_id)
        with self._reaching():
            try:
                yield
            except S3Error as exc:
                if exc.code == "NoSuchUpload":
                    raise UploadNotFound(key, upload_id) from None
                raise

    def put_bytes(self, key: str, data: bytes, content_type: str = BINARY) -> None:
        with self._reaching():
            # An S3 PUT is atomic: the object appears whole when the request completes.
            self.client.put_object(
                self.bucket, validate_key(key), io.BytesIO(data), len(data), content_type=content_type
            )

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = BINARY) -> None:
        with self._reaching():
            self.client.fput_object(self.bucket, validate_key(key), os.fspath(path), content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        return self._read(validate_key(key))

    def _read(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        """The object, or `length` bytes of it from `offset` (0: to the end); b"" for a range starting past it."""
        with self._reaching():
            try:
                response = self.client.get_object(self.bucket, key, offset=offset, length=length)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    raise ObjectNotFound(key) from None
                if exc.code == "InvalidRange":  # 416: `offset` at or past the end, or an empty object
                    return b""
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        with self._reaching():
            validate_key(key)

            def download(tmp: Path) -> None:
                try:
                    self.client.fget_object(self.bucket, key, os.fspath(tmp))
                except S3Error as exc:
                    if exc.code == "NoSuchKey":
                        raise ObjectNotFound(key) from None
                    raise

            atomic_download(path, download)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        validate_key(key)
        validate_range(start, length)
        if length == 0:  # minio sends no end for a zero length ("bytes=start-"): the rest of the object would come
            self.size(key)
            return b""
        return self._read(key, start, length)

    def size(self, key: str) -> int:
        with self._reaching():
            try:
                info = self.client.stat_object(self.bucket, validate_key(key))
            except S3Error as exc:
                if exc.code in NOT_FOUND:
                    raise ObjectNotFound(key) from None
                raise
            return int(info.size or 0)

    def exists(self, key: str) -> bool:
        with self._reaching():
            try:
                self.client.stat_object(self.bucket, validate_key(key))
            except S3Error as exc:
                if exc.code in NOT_FOUND:
                    return False
                raise
            return True

    def list(self, prefix: str = "") -> list[str]:
        with self._reaching():
            objects = self.client.list_objects(self.bucket, prefix=validate_prefix(prefix) or None, recursive=True)
            return sorted(obj.object_name for obj in objects if not obj.is_dir and obj.object_name is not None)

    def delete(self, key: str) -> None:
        with self._reaching():
            self.client.remove_object(self.bucket, validate_key(key))

    def delete_prefix(self, prefix: str) -> int:
        with self._reaching():
            if not validate_prefix(prefix):
                raise InvalidKey(prefix, "delete_prefix needs a non-empty prefix")
            keys = self.list(prefix)
            # One DeleteObjects request per 1000 keys; the call is lazy and yields only the failures.
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(key) for key in keys)))
            if errors:
                raise RuntimeError(f"could not delete {len(errors)} objects under {prefix!r}: {errors[0]}")
            return len(keys)

    def start_upload(self, key: str, content_type: str = BINARY) -> str:
        with self._reaching():
            return self.client._create_multipart_upload(self.bucket, validate_key(key), {"Content-Type": content_type})

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        validate_key(key)
        validate_part_number(number)
        with self._within_upload(key, upload_id):
            return self.client._upload_part(self.bucket, key, data, None, upload_id, number)

    def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        validate_key(key)
        parts: list[StoredPart] = []
        marker = None
        with self._within_upload(key, upload_id):
            while True:  # a page holds at most 1000 parts
                page = self.client._list_parts(self.bucket, key, upload_id, part_number_marker=marker)
                parts += [StoredPart(part.part_number, part.etag, part.size or 0) for part in page.parts]
                if not page.is_truncated or not page.next_part_number_marker:
                    return parts
                marker = page.next_part_number_marker

    def finish_upload(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        validate_key(key)
        requested = validate_part_list(parts)
        # Listing first costs a request, and buys two things: the bad part's number (see `multipart`), and
        # UploadNotFound for a finished upload, which the Versity gateway would otherwise complete a second time.
        stored = self.list_parts(key, upload_id)
        match_parts(upload_id, requested, stored)
        with self._within_upload(key, upload_id):
            try:
                self.client._complete_multipart_upload(
                    self.bucket, key, upload_id, [Part(part_number=number, etag=etag) for number, etag in requested]
                )
            except S3Error as exc:
                if exc.code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):  # a part sent again meanwhile
                    raise ValueError(f"upload {upload_id} changed while finishing: {exc.message}") from None
                raise

    def abort_upload(self, key: str, upload_id: str) -> None:
        validate_key(key)
        try:
            with self._within_upload(key, upload_id):
                self.client._abort_multipart_upload(self.bucket, key, upload_id)
        except UploadNotFound:  # unknown, finished or aborted already: nothing is left to discard
            pass

    def ensure_bucket(self) -> None:
        with self._reaching():
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
