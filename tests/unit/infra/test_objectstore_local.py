"""LocalObjectStore: the shared object store contract on a temporary folder, and what only a folder can get wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.objectstore import (
    InvalidKey,
    LocalObjectStore,
    ObjectStoreUnavailable,
    UploadNotFound,
    open_object_store,
    validate_key,
    validate_prefix,
)
from infra.settings import Settings
from tests.unit.infra.objectstore_contract import BAD_KEYS, ObjectStoreContract


class TestLocalObjectStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalObjectStore:
        store = LocalObjectStore(tmp_path / "objects")
        store.ensure_bucket()
        return store

    @pytest.fixture
    def prefix(self) -> str:
        return "tests/local/"


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_validate_key_rejects(bad: str) -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key(bad)
    assert isinstance(info.value, ValueError)


GOOD_KEYS = ["a", "jobs/123/ckpt-000100.pt", "datasets/tiny shakespeare.txt", "a.b/c-d_e", "ünï/cödé", "..a/b.."]


@pytest.mark.parametrize("good", GOOD_KEYS)
def test_validate_key_accepts(good: str) -> None:
    assert validate_key(good) == good


def test_validate_prefix_allows_empty_and_a_trailing_slash() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("jobs/") == "jobs/"
    with pytest.raises(InvalidKey):
        validate_prefix("jobs//")
    with pytest.raises(InvalidKey):
        validate_prefix("/jobs/")


def test_a_symlink_inside_the_folder_does_not_lead_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    store = LocalObjectStore(tmp_path / "objects")
    store.ensure_bucket()
    os.symlink(outside, tmp_path / "objects" / "link")
    with pytest.raises(InvalidKey):
        store.get_bytes("link/secret")
    with pytest.raises(InvalidKey):
        store.put_bytes("link/planted", b"x")
    assert not (outside / "planted").exists()


def test_writes_in_progress_are_not_listed_and_the_folder_is_reserved(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a", b"1")
    (tmp_path / ".lfz-partial" / "leftover-of-a-crash").write_bytes(b"half")
    assert store.list() == ["a"]
    with pytest.raises(InvalidKey):
        store.put_bytes(".lfz-partial/x", b"x")


def test_delete_leaves_no_empty_folders(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("jobs/1/deep/file", b"x")
    store.delete("jobs/1/deep/file")
    assert [p.name for p in (tmp_path / "objects").iterdir()] == [".lfz-partial"]


def test_health_fails_when_the_folder_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ObjectStoreUnavailable):
        LocalObjectStore(tmp_path / "nope").health()


def test_open_object_store_picks_the_implementation(tmp_path: Path) -> None:
    local = open_object_store(Settings(object_store_url=(tmp_path / "o").as_uri()))
    assert isinstance(local, LocalObjectStore) and local.root == (tmp_path / "o").resolve()
    default = open_object_store(Settings(data_dir=tmp_path, object_store_url=""))
    assert isinstance(default, LocalObjectStore) and default.root == (tmp_path / "objects").resolve()
    with pytest.raises(ValueError):
        open_object_store(Settings(object_store_url="ftp://example/x"))


def test_finished_and_aborted_uploads_leave_no_folder_behind(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    uploads = tmp_path / ".lfz-partial" / "uploads"
    done = store.start_upload("done.bin")
    store.finish_upload("done.bin", done, [(1, store.put_part("done.bin", done, 1, b"x"))])
    dropped = store.start_upload("dropped.bin")
    store.put_part("dropped.bin", dropped, 1, b"y")
    assert [p.name for p in uploads.iterdir()] == [dropped]
    store.abort_upload("dropped.bin", dropped)
    assert list(uploads.iterdir()) == [] and store.list() == ["done.bin"]


def test_an_upload_half_started_before_a_crash_is_not_found(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    upload_id = store.start_upload("a.bin")
    (tmp_path / ".lfz-partial" / "uploads" / upload_id / "upload.json").write_text('{"ke', encoding="utf-8")
    with pytest.raises(UploadNotFound):
        store.put_part("a.bin", upload_id, 1, b"x")
