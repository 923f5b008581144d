"""Token shards: exact sizes and dtype, a round trip through the object store, and corrupt copies caught."""

from __future__ import annotations

import hashlib
import os
import mmap

import numpy as np
import psutil
import pytest

from agents.tokenize.shards import (CorruptShard, Manifest, ShardWriter, fetch_shards, shard_dtype)
from infra.objectstore.local import LocalObjectStore


def _ids(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n, dtype=np.int64)


def _publish(tmp_path, ids: np.ndarray, vocab: int, tokens_per_shard: int):
    """Write `ids` as shards, upload each as it is completed, and return the store and the manifest."""
    store = LocalObjectStore(tmp_path / "store")
    store.ensure_bucket()
    writer = ShardWriter(tmp_path / "out", vocab, tokens_per_shard)
    for at in range(0, len(ids), 777):  # pieces that do not line up with the shards
        for path in writer.add(ids[at:at + 777]):
            store.put_file(f"datasets/d1/tokens/{path.name}", path)
    for path in writer.close():
        store.put_file(f"datasets/d1/tokens/{path.name}", path)
    manifest = Manifest(dataset_id="d1", tokenizer="bpe", tokenizer_options={"vocab_size": vocab},
                        tokenizer_key="datasets/d1/tokenizer.json", vocab_size=vocab,
                        dtype=shard_dtype(vocab).name, tokens=writer.tokens, documents=1, characters=len(ids),
                        source_bytes=len(ids), shards=[f.stored_as(f"datasets/d1/tokens/{f.path.name}")
                                                       for f in writer.files])
    return store, Manifest.model_validate_json(manifest.model_dump_json())


def _mapped(array: np.ndarray) -> bool:
    """Whether the array's memory is a mapped file."""
    while isinstance(array, np.ndarray):
        array = array.base
    return isinstance(array, mmap.mmap)


def test_dtype_is_uint16_up_to_65536_ids():
    assert shard_dtype(65_536) == np.dtype("<u2")
    assert shard_dtype(65_537) == np.dtype("<u4")
    with pytest.raises(ValueError):
        shard_dtype(0)


@pytest.mark.parametrize("vocab", [65_536, 65_537])
def test_writer_splits_into_exact_shards(tmp_path, vocab):
    ids = _ids(2500, vocab)
    ids[:2] = [0, vocab - 1]  # both ends of the range survive the narrowing
    writer = ShardWriter(tmp_path, vocab, tokens_per_shard=1000)
    done = writer.add(ids[:1200]) + writer.add(ids[1200:1999]) + writer.add(ids[1999:2000]) + writer.add(ids[2000:])
    assert [p.name for p in done] == ["000000.bin", "000001.bin"]
    last = writer.close()
    assert [p.name for p in last] == ["000002.bin"] and writer.close() == []
    itemsize = 2 if vocab <= 65_536 else 4
    assert [f.tokens for f in writer.files] == [1000, 1000, 500] and writer.tokens == 2500
    assert [f.bytes for f in writer.files] == [f.path.stat().st_size for f in writer.files] == \
        [1000 * itemsize, 1000 * itemsize, 500 * itemsize]
    written = b"".join(f.path.read_bytes() for f in writer.files)
    assert written == ids.astype(f"<u{itemsize}").tobytes()
    assert all(f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest() for f in writer.files)


def test_writer_rejects_ids_outside_the_vocabulary(tmp_path):
    writer = ShardWriter(tmp_path, 100, 10)
    with pytest.raises(ValueError):
        writer.add(np.array([5, 100]))
    with pytest.raises(ValueError):
        writer.add(np.array([-1]))


def test_round_trip_through_the_store(tmp_path):
    ids = _ids(5000, 70_000)
    store, manifest = _publish(tmp_path, ids, 70_000, 1024)
    assert len(manifest.shards) == 5 and manifest.dtype == "uint32" and manifest.tokens == 5000
    seq = fetch_shards(store, manifest, tmp_path / "cache")
    assert len(seq) == 5000 and np.array_equal(seq.tensor().numpy(), ids)
    assert all(_mapped(array) for array in seq.arrays)
    # The second time everything comes from the cache: the store is not asked.
    calls = []
    again = fetch_shards(store, manifest, tmp_path / "cache", stored=lambda call, what: calls.append(what))
    assert calls == [] and np.array_equal(again.window(1000, 100), ids[1000:1100])


def test_calls_go_through_stored(tmp_path):
    store, manifest = _publish(tmp_path, _ids(300, 50), 50, 100)
    seen = []

    def stored(call, what):
        seen.append(what)
        return call()

    fetch_shards(store, manifest, tmp_path / "cache", stored)
    assert seen == [f"fetching {s.key}" for s in manifest.shards]


def test_a_shard_corrupted_in_the_cache_is_fetched_again(tmp_path):
    ids = _ids(3000, 1000)
    store, manifest = _publish(tmp_path, ids, 1000, 1000)
    cache = tmp_path / "cache"
    fetch_shards(store, manifest, cache)
    bad = cache / f"{manifest.shards[1].sha256}.bin"
    data = bytearray(bad.read_bytes())
    data[10] ^= 0xFF  # the same size, other bytes: only the hash tells
    bad.write_bytes(bytes(data))
    fetched = []
    seq = fetch_shards(store, manifest, cache, stored=lambda call, what: (fetched.append(what), call())[1])
    assert fetched == [f"fetching {manifest.shards[1].key}"]
    assert np.array_equal(seq.tensor().numpy(), ids)


def test_a_shard_corrupted_in_the_store_raises_naming_it(tmp_path):
    store, manifest = _publish(tmp_path, _ids(3000, 1000), 1000, 1000)
    key = manifest.shards[2].key
    store.put_bytes(key, b"\0" * manifest.shards[2].bytes)
    tries = []
    with pytest.raises(CorruptShard) as err:
        fetch_shards(store, manifest, tmp_path / "cache", stored=lambda call, what: (tries.append(what), call())[1])
    assert err.value.key == key and key in str(err.value)
    assert tries.count(f"fetching {key}") == 3  # fetched again twice, then given up
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        f"{s.sha256}.bin" for s in manifest.shards[:2])  # nothing of the bad shard is left behind


def test_manifest_counts_are_checked(tmp_path):
    _, manifest = _publish(tmp_path, _ids(300, 50), 50, 100)
    data = manifest.model_dump()
    with pytest.raises(ValueError):
        Manifest.model_validate({**data, "tokens": 301})
    with pytest.raises(ValueError):
        Manifest.model_validate({**data, "dtype": "uint32"})


def test_a_large_sequence_is_mapped_not_loaded(tmp_path):
    """64M tokens (128 MiB) written and fetched without the process's memory growing by their size."""
    n, per_shard = 64 << 20, 16 << 20
    store = LocalObjectStore(tmp_path / "store")
    store.ensure_bucket()
    writer = ShardWriter(tmp_path / "out", 65_536, per_shard)
    process = psutil.Process()
    before = process.memory_info().rss
    block = np.arange(1 << 20, dtype=np.int64) % 65_536
    for _ in range(n // len(block)):
        for path in writer.add(block):
            store.put_file(f"big/{path.name}", path)
            path.unlink()  # as the tokenize job does once a shard is stored
    writer.close()
    manifest = Manifest(dataset_id="big", tokenizer="bpe", tokenizer_options={}, tokenizer_key="big/tok.json",
                        vocab_size=65_536, dtype="uint16", tokens=n, documents=1, characters=n, source_bytes=n,
                        shards=[f.stored_as(f"big/{f.path.name}") for f in writer.files])
    seq = fetch_shards(store, manifest, tmp_path / "cache")
    assert len(seq) == n and len(seq.arrays) == 4 and all(_mapped(array) for array in seq.arrays)
    for start in (0, per_shard - 3, 3 * per_shard - 1, n - 10):
        assert np.array_equal(seq.window(start, 10), (np.arange(start, start + 10) % (1 << 20)) % 65_536)
    grown_mib = (process.memory_info().rss - before) / 2**20
    assert grown_mib < 32  # the tokens are 128 MiB as uint16, 512 MiB as int64


def test_the_cache_keeps_to_its_size_dropping_the_least_recently_used_first(tmp_path):
    first_store, first = _publish(tmp_path / "a", _ids(4096, 300, seed=1), 300, 1024)
    second_store, second = _publish(tmp_path / "b", _ids(4096, 300, seed=2), 300, 1024)
    cache = tmp_path / "cache"
    fetch_shards(first_store, first, cache)
    old = {f"{s.sha256}.bin" for s in first.shards}
    for path in cache.glob("*.bin"):
        os.utime(path, (1, 1))  # used long ago
    # Room for the second's shards and one more: all of the second stays, one of the first.
    seq = fetch_shards(second_store, second, cache, limit_bytes=second.shard_bytes + first.shards[0].bytes)
    left = {p.name for p in cache.glob("*.bin")}
    assert {f"{s.sha256}.bin" for s in second.shards} <= left and len(left & old) == 1
    assert np.array_equal(seq.window(0, 10), _ids(4096, 300, seed=2)[:10])
    # Shards in use are never dropped, even past the limit.
    fetch_shards(second_store, second, cache, limit_bytes=0)
    assert {p.name for p in cache.glob("*.bin")} == {f"{s.sha256}.bin" for s in second.shards}


def test_batches_over_fetched_shards_leave_no_pages_resident(tmp_path):
    """Random windows over 64 MiB of shards, batch after batch: the process's resident memory stays flat (each
    batch's pages are handed back), where a plain memory map would hold most of the file by the end."""
    from model.data import BatchSampler

    ids = _ids(1 << 25, 60_000, seed=4)
    store, manifest = _publish(tmp_path, ids, 60_000, 1 << 23)
    del ids
    seq = fetch_shards(store, manifest, tmp_path / "cache")
    sampler = BatchSampler(seq, 16, 256, seed=0)
    process = psutil.Process()
    before = process.memory_info().rss
    for _ in range(4000):
        sampler.next()
    assert process.memory_info().rss - before < 16 * 2**20
