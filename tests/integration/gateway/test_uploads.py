"""Datasets of any size against the real servers: upload sessions (parts out of order, a part sent twice, abort,
resume after a dropped connection), the streamed PUT, formats checked as parts arrive, and tokenization into shards
that decode back to the text exactly, which training then reads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import time
import uuid
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agents.tokenize.shards import Manifest
from cli.client import ApiError, Client
from cli.uploads import upload_file
from infra.objectstore import MIN_PART_BYTES, ObjectStore
from model.tokenizers import EOT, tokenizer_from_json
from tests.integration.gateway.conftest import KEYS

API = "/api/v1"


def corpus(size: int, seed: int = 0) -> bytes:
    """`size` bytes of UTF-8 text with multi-byte characters, so part edges fall inside some of them."""
    rng = random.Random(seed)
    out = io.StringIO(f"{uuid.uuid4()}\n")  # each run's file is new to the shared database (no reuse across runs)
    out.seek(0, io.SEEK_END)
    words = ["the", "cat", "sat", "on", "a", "mat", "naïve", "café", "größe", "東京", "🙂", "river"]
    while out.tell() < size:  # tell() counts characters; the bytes are more
        out.write(" ".join(rng.choice(words) for _ in range(12)) + "\n")
    return out.getvalue().encode()[:size].decode("utf-8", errors="ignore").encode()


def start(client: httpx.Client, size: int, **extra: object) -> dict:
    response = client.post(f"{API}/datasets/uploads", json={"name": "big", "size": size,
                                                            "part_bytes": MIN_PART_BYTES, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def put(client: httpx.Client, upload_id: str, number: int, data: bytes) -> httpx.Response:
    return client.put(f"{API}/datasets/uploads/{upload_id}/parts/{number}", content=data,
                      headers={"Content-Type": "application/octet-stream"})


def wait_job(client: Client, job_id: str, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end in {timeout}s")


def test_parts_in_any_order_a_part_twice_and_complete(open_url: str, worker: object, object_store: ObjectStore):
    data = corpus(2 * MIN_PART_BYTES + 12345)
    with httpx.Client(base_url=open_url, timeout=60) as client:
        session = start(client, len(data))
        assert session["parts"] == 3
        parts = [data[i:i + MIN_PART_BYTES] for i in range(0, len(data), MIN_PART_BYTES)]
        assert put(client, session["upload_id"], 3, parts[2]).status_code == 200
        assert put(client, session["upload_id"], 1, b"x" * MIN_PART_BYTES).status_code == 200  # replaced below
        assert put(client, session["upload_id"], 1, parts[0]).json()["sha256"] == hashlib.sha256(parts[0]).hexdigest()
        early = client.post(f"{API}/datasets/uploads/{session['upload_id']}/complete")
        assert early.status_code == 409 and "2" in early.json()["error"]["message"]
        status = client.get(f"{API}/datasets/uploads/{session['upload_id']}").json()
        assert status["missing"] == [2] and status["bytes_received"] == len(parts[0]) + len(parts[2])
        wrong = put(client, session["upload_id"], 2, parts[1][:-1])
        assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "body"
        assert put(client, session["upload_id"], 2, parts[1]).status_code == 200
        done = client.post(f"{API}/datasets/uploads/{session['upload_id']}/complete")
        assert done.status_code == 201, done.text
        dataset = done.json()
        assert dataset["bytes"] == len(data) and dataset["format"] == "text"
        assert object_store.get_bytes(dataset["key"]) == data
        assert client.get(f"{API}/datasets/uploads/{session['upload_id']}").status_code == 404  # the session is gone
        again = start(client, len(data))  # the same file again: stored once
        for number, part in enumerate(parts, 1):
            put(client, again["upload_id"], number, part)
        reused = client.post(f"{API}/datasets/uploads/{again['upload_id']}/complete").json()
        assert reused["reused"] and reused["id"] == dataset["id"]


def test_abort_discards_the_parts_and_the_session(open_url: str, worker: object):
    with httpx.Client(base_url=open_url, timeout=60) as client:
        session = start(client, 1000)
        assert put(client, session["upload_id"], 1, b"a" * 1000).status_code == 200
        assert client.delete(f"{API}/datasets/uploads/{session['upload_id']}").json()["status"] == "aborted"
        assert client.get(f"{API}/datasets/uploads/{session['upload_id']}").status_code == 404
        assert put(client, session["upload_id"], 1, b"a" * 1000).status_code == 404
        assert client.post(f"{API}/datasets/uploads/{session['upload_id']}/complete").status_code == 404


def test_bad_content_is_refused_naming_the_part_and_the_offset(open_url: str, worker: object):
    with httpx.Client(base_url=open_url, timeout=60) as client:
        session = start(client, 2 * MIN_PART_BYTES)
        second = bytearray(b"a" * MIN_PART_BYTES)
        second[1000] = 0
        refused = put(client, session["upload_id"], 2, bytes(second))
        assert refused.status_code == 422
        message = refused.json()["error"]["message"]
        assert "part 2" in message and f"{MIN_PART_BYTES + 1000:,}" in message.replace(" ", ",") or \
            str(MIN_PART_BYTES + 1000) in message.replace(",", ""), message
        invalid = put(client, session["upload_id"], 1, b"\xff" + b"a" * (MIN_PART_BYTES - 1))
        assert invalid.status_code == 422 and "UTF-8" in invalid.json()["error"]["message"]
        parquet = start(client, 100, format="parquet")
        not_parquet = put(client, parquet["upload_id"], 1, b"b" * 100)
        assert not_parquet.status_code == 422 and "Parquet" in not_parquet.json()["error"]["message"] or \
            "PAR1" in not_parquet.json()["error"]["message"]
        too_big = client.post(f"{API}/datasets/uploads", json={"name": "x", "size": 10**15})
        assert too_big.status_code == 422 and too_big.json()["error"]["field"] == "size"


def test_another_keys_session_is_not_there(gateways: dict[str, str], worker: object):
    alice = httpx.Client(base_url=gateways["auth"], headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=60)
    bob = httpx.Client(base_url=gateways["auth"], headers={"Authorization": f"Bearer {KEYS[1]}"}, timeout=60)
    with alice, bob:
        session = start(alice, 100)
        assert put(bob, session["upload_id"], 1, b"a" * 100).status_code == 404
        assert bob.get(f"{API}/datasets/uploads/{session['upload_id']}").status_code == 404
        assert bob.delete(f"{API}/datasets/uploads/{session['upload_id']}").status_code == 404
        assert put(alice, session["upload_id"], 1, b"a" * 100).status_code == 200


def test_the_cli_resumes_an_upload_after_a_dropped_connection(open_url: str, worker: object, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              object_store: ObjectStore):
    monkeypatch.setenv("LFZ_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "corpus.txt"
    data = corpus(3 * 8 * 1024 * 1024 + 999, seed=3)  # four parts of the server's 8 MiB
    path.write_bytes(data)
    sent: list[int] = []

    class Dropping(Client):
        def put_part(self, upload_id: str, number: int, part: bytes) -> dict:
            if number == 3 and not sent.count(-1):
                sent.append(-1)
                raise httpx.ReadError("connection reset by peer")
            sent.append(number)
            return super().put_part(upload_id, number, part)

    with Dropping(open_url) as api, pytest.raises(httpx.ReadError):
        upload_file(api, path, name="resumed", fmt="text", compression="none", text_column="text",
                    show_progress=False)
    before = [n for n in sent if n > 0]
    assert 3 not in before
    with Dropping(open_url) as api:
        view = upload_file(api, path, name="resumed", fmt="text", compression="none", text_column="text",
                           show_progress=False)
    after = [n for n in sent if n > 0][len(before):]
    assert sorted(before + after) == [1, 2, 3, 4]  # each part sent once: the resumed run sent only the missing
    assert object_store.get_bytes(view["key"]) == data


def test_a_streamed_put_stores_the_file_whole(open_url: str, worker: object, object_store: ObjectStore):
    data = corpus(9 * 1024 * 1024 + 17, seed=5)  # more than one of the server's parts
    with httpx.Client(base_url=open_url, timeout=60) as client:
        response = client.put(f"{API}/datasets/files/streamed.txt", content=iter([data[i:i + 65536]
                                                                                   for i in range(0, len(data), 65536)]))
        assert response.status_code == 201, response.text
        view = response.json()
        assert view["sha256"] == hashlib.sha256(data).hexdigest() and view["bytes"] == len(data)
        assert object_store.get_bytes(view["key"]) == data
        binary = client.put(f"{API}/datasets/files/binary.bin", content=b"\x00\x01\x02" * 100)
        assert binary.status_code == 422 and "NUL" in binary.json()["error"]["message"]


def _decoded_shards(store: ObjectStore, manifest_key: str) -> str:
    import numpy as np

    manifest = Manifest.model_validate_json(store.get_bytes(manifest_key))
    tokenizer = tokenizer_from_json(store.get_bytes(manifest.tokenizer_key).decode())
    ids = np.concatenate([np.frombuffer(store.get_bytes(s.key), dtype=manifest.numpy_dtype) for s in manifest.shards])
    return tokenizer.decode(ids.tolist())


@pytest.mark.parametrize("tokenizer,options", [("char", {}), ("bpe", {"vocab_size": 300})])
def test_jsonl_and_parquet_tokenize_into_shards_that_decode_to_the_documents(
        open_url: str, worker: object, object_store: ObjectStore, tmp_path: Path, tokenizer: str, options: dict):
    run = uuid.uuid4().hex
    documents = [f"document {i} of {run}: " + "the café sat on the mat 東京\n" * (i % 7 + 1) for i in range(400)]
    expected = EOT.join(documents)
    jsonl = tmp_path / "docs.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as file:
        for doc in documents:
            file.write(json.dumps({"body": doc}) + "\n")
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(len(documents))), "body": documents}), parquet)
    with Client(open_url) as api:
        for path, fmt, compression in ((jsonl, "jsonl", "gzip"), (parquet, "parquet", "none")):
            view = upload_file(api, path, name=path.name, fmt=fmt, compression=compression, text_column="body",
                               show_progress=False)
            submitted = api.tokenize_dataset(view["id"], tokenizer, options)
            job = wait_job(api, submitted["job_id"])
            assert job["status"] == "completed", job
            assert _decoded_shards(object_store, job["result"]["manifest_key"]) == expected
            shown = api.get_dataset(view["id"])
            assert shown["documents"] == len(documents)
            assert [t["status"] for t in shown["tokenizations"]] == ["completed"]
            again = wait_job(api, api.tokenize_dataset(view["id"], tokenizer, options)["job_id"])
            assert again["result"]["manifest_key"] == job["result"]["manifest_key"]  # the same settings: reused
        wrong = tmp_path / f"wrong-{tokenizer}.jsonl"
        wrong.write_text("".join(json.dumps({"body": doc, "n": i}) + "\n" for i, doc in enumerate(documents)))
        missing = upload_file(api, wrong, name="wrong column", fmt="jsonl", compression="none", text_column="text",
                              show_progress=False)
        failed = wait_job(api, api.tokenize_dataset(missing["id"], tokenizer, options)["job_id"])
        assert failed["status"] == "failed" and "text" in failed["error"] and "line 1" in failed["error"]


def test_training_on_a_tokenized_dataset_reads_its_shards(open_url: str, worker: object):
    with Client(open_url) as api:
        view = api.upload_dataset(f"{uuid.uuid4()}\n" + "".join(f"line {i} of the corpus, with words.\n"
                                                              for i in range(3000)),
                                  name="for training")
        tokenized = wait_job(api, api.tokenize_dataset(view["id"], "char")["job_id"])
        assert tokenized["status"] == "completed"
        created = api.create_model(f"shards-{view['id'][:8]}", dataset_id=view["id"],
                                   hyperparameters={"preset": "tiny", "max_iters": 20})
        events = list(api.follow_job(created["job_id"]))
        assert events[-1]["type"] == "TrainCompleted", events[-1]
        found = [e for e in events if e["type"] == "DatasetTokenized"]
        assert found and found[0]["reused"] and found[0]["tokenization_id"] == \
            tokenized["result"]["tokenization_id"]
        with pytest.raises(ApiError) as refused:
            api.tokenize_dataset(view["id"], "bpe", {"vocab_size": 3})
        assert refused.value.status == 422
