"""LocalObjectStore: objects as files under one folder, for the embedded mode (`file:///path`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from infra.objectstore.base import (BINARY, PARTIAL_DIR, InvalidKey, ObjectNotFound, ObjectStore,
                                    ObjectStoreUnavailable, atomic_download, validate_key, validate_prefix)


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

    def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def health(self) -> None:
        if not self.root.is_dir():
            raise ObjectStoreUnavailable(f"object store folder {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ObjectStoreUnavailable(f"object store folder {self.root} is not writable")
