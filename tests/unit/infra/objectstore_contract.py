"""The behaviour every object store shares, written once: subclass `ObjectStoreContract` and give it a `store`
fixture and a `prefix` fixture (a key prefix of the test's own). LocalObjectStore runs it in the unit tests,
S3ObjectStore against the real S3 server in the integration tests.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from infra.objectstore import AsyncObjectStore, InvalidKey, ObjectNotFound, ObjectStore

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../b",
    "a/..",
    "..",
    ".",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "..\\..\\windows",
    "a\x00b",
    "a\nb",
    "tab\there",
    "del\x7f",
    "x" * 1025,
    "bad\udc80surrogate",
]


class ObjectStoreContract:
    def test_put_then_get_returns_the_same_bytes(self, store: ObjectStore, prefix: str) -> None:
        data = bytes(range(256)) * 10
        store.put_bytes(f"{prefix}blob.bin", data)
        assert store.get_bytes(f"{prefix}blob.bin") == data

    def test_put_replaces_an_existing_object(self, store: ObjectStore, prefix: str) -> None:
        store.put_bytes(f"{prefix}a.txt", b"first", content_type="text/plain")
        store.put_bytes(f"{prefix}a.txt", b"second", content_type="text/plain")
        assert store.get_bytes(f"{prefix}a.txt") == b"second"

    def test_an_empty_object_is_an_object(self, store: ObjectStore, prefix: str) -> None:
        store.put_bytes(f"{prefix}empty", b"")
        assert store.exists(f"{prefix}empty")
        assert store.get_bytes(f"{prefix}empty") == b""

    def test_get_of_a_missing_key_raises_object_not_found(self, store: ObjectStore, prefix: str) -> None:
        with pytest.raises(ObjectNotFound) as info:
            store.get_bytes(f"{prefix}missing")
        assert info.value.key == f"{prefix}missing"

    def test_exists(self, store: ObjectStore, prefix: str) -> None:
        assert not store.exists(f"{prefix}x")
        store.put_bytes(f"{prefix}x", b"1")
        assert store.exists(f"{prefix}x")
        assert not store.exists(f"{prefix}x/y")

    def test_list_returns_every_key_under_a_prefix_sorted(self, store: ObjectStore, prefix: str) -> None:
        for key in ("jobs/b/ckpt.pt", "jobs/a/ckpt.pt", "jobs/a/logs/1.json", "jobs/ab/ckpt.pt", "other.txt"):
            store.put_bytes(prefix + key, b"x")
        assert store.list(f"{prefix}jobs/a/") == [f"{prefix}jobs/a/ckpt.pt", f"{prefix}jobs/a/logs/1.json"]
        # A prefix is a string prefix, as in S3: "jobs/a" also matches "jobs/ab/...".
        assert store.list(f"{prefix}jobs/a") == [
            f"{prefix}jobs/a/ckpt.pt",
            f"{prefix}jobs/a/logs/1.json",
            f"{prefix}jobs/ab/ckpt.pt",
        ]
        assert len(store.list(prefix)) == 5
        assert store.list(f"{prefix}nothing/") == []

    def test_delete_removes_the_object_and_a_missing_key_is_fine(self, store: ObjectStore, prefix: str) -> None:
        store.put_bytes(f"{prefix}d/e.txt", b"x")
        store.delete(f"{prefix}d/e.txt")
        assert not store.exists(f"{prefix}d/e.txt")
        assert store.list(f"{prefix}d/") == []
        store.delete(f"{prefix}d/e.txt")

    def test_delete_prefix_removes_that_prefix_only(self, store: ObjectStore, prefix: str) -> None:
        for key in ("run/1", "run/2", "run/sub/3", "runner/4"):
            store.put_bytes(prefix + key, b"x")
        assert store.delete_prefix(f"{prefix}run/") == 3
        assert store.list(prefix) == [f"{prefix}runner/4"]
        assert store.delete_prefix(f"{prefix}run/") == 0

    def test_delete_prefix_refuses_the_whole_store(self, store: ObjectStore) -> None:
        with pytest.raises(InvalidKey):
            store.delete_prefix("")

    def test_files_round_trip(self, store: ObjectStore, prefix: str, tmp_path: Path) -> None:
        source = tmp_path / "model.pt"
        source.write_bytes(b"\x00weights" * 100_000)
        store.put_file(f"{prefix}model.pt", source)
        target = tmp_path / "out" / "model.pt"
        store.get_file(f"{prefix}model.pt", target)
        assert target.read_bytes() == source.read_bytes()

    def test_get_file_of_a_missing_key_leaves_no_file(self, store: ObjectStore, prefix: str, tmp_path: Path) -> None:
        downloads = tmp_path / "downloads"
        with pytest.raises(ObjectNotFound):
            store.get_file(f"{prefix}missing.pt", downloads / "missing.pt")
        assert not downloads.exists() or list(downloads.iterdir()) == []  # no partial file either

    def test_readers_never_see_half_an_object(self, store: ObjectStore, prefix: str) -> None:
        versions = {bytes([n]) * 300_000 for n in (1, 2)}
        key = f"{prefix}hot.bin"
        store.put_bytes(key, bytes([1]) * 300_000)
        seen: list[bytes] = []
        done = threading.Event()

        def write() -> None:
            for i in range(20):
                store.put_bytes(key, bytes([1 + i % 2]) * 300_000)
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        while not done.is_set():
            seen.append(store.get_bytes(key))
        writer.join()
        assert seen and all(data in versions for data in seen)

    @pytest.mark.parametrize("bad", BAD_KEYS)
    def test_every_method_rejects_a_key_that_could_escape(self, store: ObjectStore, prefix: str, bad: str) -> None:
        calls = [
            lambda: store.put_bytes(bad, b"x"),
            lambda: store.get_bytes(bad),
            lambda: store.exists(bad),
            lambda: store.delete(bad),
            lambda: store.put_file(bad, __file__),
        ]
        for call in calls:
            with pytest.raises(InvalidKey):
                call()
        if bad not in ("", "a/"):  # both are valid prefixes: everything, and everything under "a/"
            with pytest.raises(InvalidKey):
                store.list(bad)

    def test_health_and_ensure_bucket_are_idempotent(self, store: ObjectStore) -> None:
        store.ensure_bucket()
        store.ensure_bucket()
        store.health()

    async def test_the_async_wrapper_does_the_same(self, store: ObjectStore, prefix: str) -> None:
        astore = AsyncObjectStore(store)
        await astore.put_bytes(f"{prefix}async/1", b"one")
        assert await astore.get_bytes(f"{prefix}async/1") == b"one"
        assert await astore.exists(f"{prefix}async/1")
        assert await astore.list(f"{prefix}async/") == [f"{prefix}async/1"]
        assert await astore.delete_prefix(f"{prefix}async/") == 1
        with pytest.raises(ObjectNotFound):
            await astore.get_bytes(f"{prefix}async/1")
        await astore.health()
