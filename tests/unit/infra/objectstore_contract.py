"""The behaviour every object store shares, written once: subclass `ObjectStoreContract` and give it a `store`
fixture and a `prefix` fixture (a key prefix of the test's own). LocalObjectStore runs it in the unit tests,
S3ObjectStore against the real S3 server in the integration tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.objectstore import (
    MAX_PARTS,
    MIN_PART_BYTES,
    AsyncObjectStore,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    StoredPart,
    UploadNotFound,
)

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
    @pytest.fixture
    def uploads(self, store: ObjectStore) -> Iterator[list[tuple[str, str]]]:
        """(key, upload id) of the uploads a test starts, aborted afterwards: the S3 server keeps unfinished parts
        out of every listing, so the prefix's cleanup would never see them."""
        started: list[tuple[str, str]] = []
        yield started
        for key, upload_id in started:
            store.abort_upload(key, upload_id)

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
            lambda: store.get_range(bad, 0, 1),
            lambda: store.size(bad),
            lambda: store.start_upload(bad),
            lambda: store.put_part(bad, "0" * 32, 1, b"x"),
            lambda: store.list_parts(bad, "0" * 32),
            lambda: store.finish_upload(bad, "0" * 32, [(1, "etag")]),
            lambda: store.abort_upload(bad, "0" * 32),
        ]
        for call in calls:
            with pytest.raises(InvalidKey):
                call()
        if bad not in ("", "a/"):  # both are valid prefixes: everything, and everything under "a/"
            with pytest.raises(InvalidKey):
                store.list(bad)

    def test_get_range_reads_part_of_an_object_and_size_its_length(self, store: ObjectStore, prefix: str) -> None:
        key = f"{prefix}digits"
        store.put_bytes(key, b"0123456789")
        store.put_bytes(f"{prefix}empty", b"")
        assert store.size(key) == 10 and store.size(f"{prefix}empty") == 0
        assert store.get_range(key, 0, 3) == b"012"  # a header
        assert store.get_range(key, 7, 3) == b"789"  # a footer
        assert store.get_range(key, 8, 100) == b"89"  # a range past the end: what is there
        assert store.get_range(key, 10, 5) == b"" and store.get_range(key, 50, 5) == b""
        assert store.get_range(key, 4, 0) == b""
        assert store.get_range(f"{prefix}empty", 0, 5) == b""
        missing = f"{prefix}missing"
        for call in (lambda: store.get_range(missing, 0, 1), lambda: store.get_range(missing, 0, 0),
                     lambda: store.size(missing), lambda: store.size(prefix.rstrip("/"))):
            with pytest.raises(ObjectNotFound):
                call()
        with pytest.raises(ValueError):
            store.get_range(key, -1, 2)
        with pytest.raises(ValueError):
            store.get_range(key, 0, -1)

    def test_parts_sent_out_of_order_join_in_number_order(
        self, store: ObjectStore, prefix: str, uploads: list[tuple[str, str]]
    ) -> None:
        key = f"{prefix}big.bin"
        upload_id = store.start_upload(key)
        uploads.append((key, upload_id))
        data = {1: b"a" * MIN_PART_BYTES, 2: b"b" * MIN_PART_BYTES, 3: b"last part, the only one under 5 MiB"}
        etags = {number: store.put_part(key, upload_id, number, data[number]) for number in (3, 1, 2)}
        assert not store.exists(key) and store.list(prefix) == []  # nothing shows before the finish
        with pytest.raises(ObjectNotFound):
            store.get_bytes(key)
        store.finish_upload(key, upload_id, [(n, etags[n]) for n in (1, 2, 3)])
        assert store.size(key) == 2 * MIN_PART_BYTES + len(data[3])
        assert store.get_bytes(key) == data[1] + data[2] + data[3]
        assert store.list(prefix) == [key]
        with pytest.raises(UploadNotFound):  # finished: the id is spent
            store.finish_upload(key, upload_id, [(n, etags[n]) for n in (1, 2, 3)])
        with pytest.raises(UploadNotFound):
            store.put_part(key, upload_id, 1, b"late")

    def test_a_part_sent_again_replaces_it(
        self, store: ObjectStore, prefix: str, uploads: list[tuple[str, str]]
    ) -> None:
        key = f"{prefix}again.txt"
        upload_id = store.start_upload(key, content_type="text/plain")
        uploads.append((key, upload_id))
        first = store.put_part(key, upload_id, 1, b"first try")
        second = store.put_part(key, upload_id, 1, b"second try, longer")
        assert first != second
        assert store.list_parts(key, upload_id) == [StoredPart(1, second, len(b"second try, longer"))]
        with pytest.raises(ValueError, match="part 1"):
            store.finish_upload(key, upload_id, [(1, first)])
        store.finish_upload(key, upload_id, [(1, f'"{second}"')])  # an etag in S3's quotes is the same etag
        assert store.get_bytes(key) == b"second try, longer"

    def test_list_parts_tells_a_resumed_upload_what_is_there(
        self, store: ObjectStore, prefix: str, uploads: list[tuple[str, str]]
    ) -> None:
        key = f"{prefix}resume.bin"
        upload_id = store.start_upload(key)
        uploads.append((key, upload_id))
        assert store.list_parts(key, upload_id) == []
        etags = {number: store.put_part(key, upload_id, number, bytes([number]) * number) for number in (4, 2, 9)}
        assert store.list_parts(key, upload_id) == [StoredPart(n, etags[n], n) for n in (2, 4, 9)]
        with pytest.raises(UploadNotFound):  # an upload belongs to its key
            store.list_parts(f"{prefix}other.bin", upload_id)

    def test_finish_refuses_a_missing_part_and_keeps_the_upload(
        self, store: ObjectStore, prefix: str, uploads: list[tuple[str, str]]
    ) -> None:
        key = f"{prefix}gap.bin"
        upload_id = store.start_upload(key)
        uploads.append((key, upload_id))
        one = store.put_part(key, upload_id, 1, b"x" * MIN_PART_BYTES)
        three = store.put_part(key, upload_id, 3, b"end")
        with pytest.raises(ValueError, match="part 2"):
            store.finish_upload(key, upload_id, [(1, one), (2, one), (3, three)])
        with pytest.raises(ValueError, match="part 3"):  # the etag of another part
            store.finish_upload(key, upload_id, [(1, one), (3, one)])
        with pytest.raises(ValueError, match="ascend"):
            store.finish_upload(key, upload_id, [(3, three), (1, one)])
        with pytest.raises(ValueError):
            store.finish_upload(key, upload_id, [])
        assert not store.exists(key)
        assert [part.number for part in store.list_parts(key, upload_id)] == [1, 3]
        store.finish_upload(key, upload_id, [(1, one), (3, three)])  # gaps in the numbers are allowed, as in S3
        assert store.get_bytes(key) == b"x" * MIN_PART_BYTES + b"end"

    def test_finish_refuses_a_small_part_that_is_not_the_last(
        self, store: ObjectStore, prefix: str, uploads: list[tuple[str, str]]
    ) -> None:
        key = f"{prefix}small.bin"
        upload_id = store.start_upload(key)
        uploads.append((key, upload_id))
        parts = [(number, store.put_part(key, upload_id, number, b"tiny")) for number in (1, 2)]
        with pytest.raises(ValueError, match="part 1"):
            store.finish_upload(key, upload_id, parts)
        store.finish_upload(key, upload_id, parts[1:])  # the last part alone may be any size
        assert store.get_bytes(key) == b"tiny"

    def test_abort_discards_the_upload(self, store: ObjectStore, prefix: str) -> None:
        key = f"{prefix}aborted.bin"
        upload_id = store.start_upload(key)
        etag = store.put_part(key, upload_id, 1, b"never joined")
        store.abort_upload(key, upload_id)
        with pytest.raises(UploadNotFound) as info:
            store.put_part(key, upload_id, 1, b"x")
        assert (info.value.key, info.value.upload_id) == (key, upload_id)
        with pytest.raises(UploadNotFound):
            store.list_parts(key, upload_id)
        with pytest.raises(UploadNotFound):
            store.finish_upload(key, upload_id, [(1, etag)])
        assert not store.exists(key) and store.list(prefix) == []
        store.abort_upload(key, upload_id)  # again, and an id never handed out: not an error
        store.abort_upload(key, "0" * 32)

    @pytest.mark.parametrize("upload_id", ["", "../../etc", "a/b", "0" * 32, "\x00"])
    def test_an_unknown_upload_id_is_upload_not_found(self, store: ObjectStore, prefix: str, upload_id: str) -> None:
        for call in (lambda: store.put_part(f"{prefix}k", upload_id, 1, b"x"),
                     lambda: store.list_parts(f"{prefix}k", upload_id),
                     lambda: store.finish_upload(f"{prefix}k", upload_id, [(1, "etag")])):
            with pytest.raises(UploadNotFound):
                call()
        store.abort_upload(f"{prefix}k", upload_id)
        assert store.list(prefix) == []

    @pytest.mark.parametrize("number", [0, -1, MAX_PARTS + 1, True, 1.0, "1"])
    def test_a_part_number_outside_1_to_max_parts_is_refused(
        self, store: ObjectStore, prefix: str, uploads: list[tuple[str, str]], number: object
    ) -> None:
        key = f"{prefix}numbers.bin"
        upload_id = store.start_upload(key)
        uploads.append((key, upload_id))
        with pytest.raises(ValueError, match="part number"):
            store.put_part(key, upload_id, number, b"x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="part number"):
            store.finish_upload(key, upload_id, [(number, "etag")])  # type: ignore[list-item]
        assert store.list_parts(key, upload_id) == []

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

    async def test_the_async_wrapper_uploads_in_parts(self, store: ObjectStore, prefix: str) -> None:
        astore = AsyncObjectStore(store)
        key = f"{prefix}async/parts.bin"
        upload_id = await astore.start_upload(key)
        etag = await astore.put_part(key, upload_id, 1, b"only part")
        assert await astore.list_parts(key, upload_id) == [StoredPart(1, etag, 9)]
        await astore.finish_upload(key, upload_id, [(1, etag)])
        assert await astore.size(key) == 9
        assert await astore.get_range(key, 5, 4) == b"part"
        other = await astore.start_upload(key)
        await astore.abort_upload(key, other)
        with pytest.raises(UploadNotFound):
            await astore.list_parts(key, other)
