"""LocalObjectStore: objects as files under one folder, for the embedded mode (`file:///path`).

A multipart upload is a folder `.lfz-partial/uploads/<upload id>/` holding `upload.json` (the key) and one file per
part, `<number>.part`, which begins with the part's etag (its MD5, as S3 computes it) followed by its bytes: the part
and its etag are replaced together by one `os.replace`, so a part sent again never leaves a stale etag behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO

from infra.objectstore.base import (BINARY, PARTIAL_DIR, InvalidKey, ObjectNotFound, ObjectStore,
                                    ObjectStoreUnavailable, atomic_download, validate_key, validate_prefix,
                                    validate_range)
from infra.objectstore.multipart import (StoredPart, UploadNotFound, match_parts, validate_part_list,
                                         validate_part_number)

UPLOAD_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: unguessable enough, and safe as one path segment
ETAG_BYTES = 32  # an MD5 in hex, at the head of every part file
COPY_CHUNK = 1024 * 1024


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
        partial = self.root / PARTIAL_DIR
        partial.mkdir(parents=True, exist_ok=True)
        return partial

    def _publish(self, tmp: Path, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)

    def put_bytes(self, key: str, data: bytes, content_type: str = BINARY) -> None:
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self._partial())
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            self._publish(Path(tmp), path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = BINARY) -> None:
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
        atomic_download(path, lambda tmp: shutil.copyfile(source, tmp))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)
        validate_range(start, length)
        try:
            with open(path, "rb") as file:
                file.seek(start)
                return file.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def size(self, key: str) -> int:
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(info.st_mode):
            raise ObjectNotFound(key)
        return info.st_size

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
            if Path(dirpath) == self.root and PARTIAL_DIR in dirnames:
                dirnames.remove(PARTIAL_DIR)
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

    def _upload(self, key: str, upload_id: str) -> Path:
        """The folder of a live upload of `key`; UploadNotFound for any other id, so that no id builds a path."""
        if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(key, upload_id)
        folder = self.root / PARTIAL_DIR / "uploads" / upload_id
        try:
            started_for = json.loads((folder / "upload.json").read_text(encoding="utf-8"))["key"]
        except (FileNotFoundError, NotADirectoryError, ValueError, KeyError):  # ValueError: half-written by a crash
            raise UploadNotFound(key, upload_id) from None
        if started_for != key:
            raise UploadNotFound(key, upload_id)
        return folder

    def _open_part(self, folder: Path, number: int) -> tuple[str, BinaryIO]:
        """The etag and the open file of a part, positioned at its bytes; one open file, so a part sent again
        meanwhile cannot pair this etag with other bytes."""
        file = open(folder / f"{number:05d}.part", "rb")
        return file.read(ETAG_BYTES).decode("ascii"), file

    def start_upload(self, key: str, content_type: str = BINARY) -> str:
        self._path(key)
        upload_id = uuid.uuid4().hex
        folder = self._partial() / "uploads" / upload_id
        folder.mkdir(parents=True)
        (folder / "upload.json").write_text(json.dumps({"key": key}), encoding="utf-8")
        return upload_id

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        self._path(key)
        validate_part_number(number)
        folder = self._upload(key, upload_id)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        except FileNotFoundError:  # finished or aborted since `_upload` found it
            raise UploadNotFound(key, upload_id) from None
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(etag.encode("ascii"))
                out.write(data)
            os.replace(tmp, folder / f"{number:05d}.part")
        except FileNotFoundError:
            raise UploadNotFound(key, upload_id) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return etag

    def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        self._path(key)
        folder = self._upload(key, upload_id)
        parts = []
        for path in folder.glob("*.part"):
            try:
                etag, file = self._open_part(folder, int(path.stem))
            except FileNotFoundError:
                continue
            with file:
                parts.append(StoredPart(int(path.stem), etag, os.fstat(file.fileno()).st_size - ETAG_BYTES))
        return sorted(parts, key=lambda part: part.number)

    def finish_upload(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        target = self._path(key)
        requested = validate_part_list(parts)
        folder = self._upload(key, upload_id)
        match_parts(upload_id, requested, self.list_parts(key, upload_id))
        fd, tmp = tempfile.mkstemp(dir=self._partial())
        try:
            with os.fdopen(fd, "wb") as out:
                for number, etag in requested:
                    try:
                        found, part = self._open_part(folder, number)
                    except FileNotFoundError:
                        raise UploadNotFound(key, upload_id) from None
                    with part:
                        if found != etag:  # sent again since the check above
                            raise ValueError(f"part {number} of upload {upload_id} changed while finishing")
                        shutil.copyfileobj(part, out, COPY_CHUNK)
            self._publish(Path(tmp), target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._discard(folder)

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._path(key)
        try:
            self._discard(self._upload(key, upload_id))
        except UploadNotFound:
            pass

    def _discard(self, folder: Path) -> None:
        # upload.json first: from that moment the upload is gone for every caller, whatever rmtree meets.
        (folder / "upload.json").unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)

    def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def health(self) -> None:
        if not self.root.is_dir():
            raise ObjectStoreUnavailable(f"object store folder {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ObjectStoreUnavailable(f"object store folder {self.root} is not writable")
