"""Two API keys against the real servers and worker: neither sees nor touches the other's things.

Alice and Bob each train a model from an uploaded dataset once, for the whole module. Then Bob tries every way to
reach Alice's: read, list, generate (plain, streamed, OpenAI-style), evaluate, train, cancel, follow a job's events,
the feed of every job's events, naming her dataset in a body or a URL, and, straight on Kafka, naming her dataset's
key in his own evaluation. Each must be refused (404, as if it did not exist), and the object store is checked
afterwards for what would have been written.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from events.proof import owner_of
from cli.client import ApiError, Client
from infra.objectstore import ObjectStore
from infra.settings import Settings
from tests.integration.gateway.conftest import KEYS, OPERATOR_KEY
from tests.integration.stack import Bus

TINY = {"preset": "tiny", "max_iters": 20}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def train(client: Client, who: str, text: str) -> dict[str, Any]:
    # A text of this session's own: the same file uploaded in an earlier session (the database outlives the topics)
    # would be that upload again, whose facts are on another session's topic.
    dataset = client.upload_dataset(f"{text}{uuid.uuid4().hex}\n", name=f"{who}'s words")
    created = client.create_model(f"{who}-{uuid.uuid4().hex[:6]}", dataset_id=dataset["id"], hyperparameters=TINY)
    assert client.wait_for_job(created["job_id"], timeout_s=120)["status"] == "completed"
    return {**created, "dataset": dataset, "name": client.get_model(created["model_id"])["name"]}


@pytest.fixture(scope="module")
def tenants(gateways: dict[str, str], worker: object) -> Iterator[dict[str, Any]]:
    """Alice's and Bob's clients on the gateway with API keys, each with one trained model."""
    url = gateways["auth"]
    with Client(url, api_key=KEYS[0]) as alice, Client(url, api_key=KEYS[1]) as bob:
        yield {"url": url, "alice": alice, "bob": bob,
               "alice_model": train(alice, "alice", "alice writes about cats and mats. " * 40),
               "bob_model": train(bob, "bob", "bob writes about dogs and logs. " * 40)}


def refused(call: Callable[[], Any], status: int = 404, field: str | None = None) -> None:
    with pytest.raises(ApiError) as error:
        call()
    assert error.value.status == status, error.value
    if field is not None:
        assert error.value.field == field, error.value


def test_two_keys_are_isolated(tenants: dict[str, Any]):
    url, bob, created = tenants["url"], tenants["bob"], tenants["alice_model"]
    dataset = created["dataset"]
    assert httpx.get(f"{url}/api/v1/models").status_code == 401
    assert httpx.get(f"{url}/api/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.get(f"{url}/health").status_code == 200
    for call in (lambda: bob.get_dataset(dataset["id"]), lambda: bob.get_model(created["model_id"]),
                 lambda: bob.get_job(created["job_id"]), lambda: bob.job_log(created["job_id"]),
                 lambda: bob.generate(created["model_id"], "cats"),
                 lambda: bob.create_model("theft", dataset_id=dataset["id"]),
                 lambda: bob.delete_model(created["model_id"])):
        refused(call)
    assert created["model_id"] not in [m["id"] for m in bob.list_models()["items"]]
    assert created["job_id"] not in [j["id"] for j in bob.list_jobs()["items"]]
    events = httpx.get(f"{url}/api/v1/jobs/{created['job_id']}/events",
                       params={"api_key": KEYS[0], "format": "json"}).json()
    assert events[-1]["type"] == "TrainCompleted"
    bob_openai = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[1])
    alice_openai = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[0])
    assert created["name"] not in [m.id for m in bob_openai.models.list().data]
    assert created["name"] in [m.id for m in alice_openai.models.list().data]
    with pytest.raises(openai.NotFoundError):
        bob_openai.completions.create(model=created["name"], prompt="cats", max_tokens=3)
    with pytest.raises(openai.NotFoundError):
        bob_openai.chat.completions.create(model=created["model_id"], messages=[{"role": "user", "content": "hi"}])
    completion = alice_openai.completions.create(model=created["name"], prompt="cats", max_tokens=3)
    assert completion.choices[0].text is not None


def test_another_keys_model_cannot_be_exported_nor_her_export_read(tenants: dict[str, Any], tmp_path):
    alice, bob = tenants["alice"], tenants["bob"]
    hers = tenants["alice_model"]
    refused(lambda: bob.export(hers["model_id"]))
    job_id = alice.export(hers["model_id"], dtype="float16")["job_id"]
    assert alice.wait_for_job(job_id, timeout_s=120)["status"] == "completed"
    listing = alice.get_export(job_id)
    assert listing["dtype"] == "float16" and "model.safetensors" in [f["name"] for f in listing["files"]]
    refused(lambda: bob.get_export(job_id), field="job_id")
    stolen = bob.http.get(f"/api/v1/exports/{job_id}/files/model.safetensors")
    assert stolen.status_code == 404, stolen.text
    mine = alice.http.get(f"/api/v1/exports/{job_id}/files/config.json")
    assert mine.status_code == 200 and mine.json()["architectures"] == ["GPTNeoXForCausalLM"]
    assert alice.http.get(f"/api/v1/exports/{job_id}/files/..%2F..%2Fsecret").status_code == 404
    # Imported back, the model is hers alone, and answers as the original does.
    full = alice.export(hers["model_id"])["job_id"]  # float32: greedy text cannot turn on a rounded weight
    assert alice.wait_for_job(full, timeout_s=120)["status"] == "completed"
    folder = tmp_path / "export"
    folder.mkdir()
    for file in alice.get_export(full)["files"]:
        alice.download_export_file(full, file["name"], folder / file["name"])
    name = f"imported-{uuid.uuid4().hex[:6]}"
    imported = alice.import_model(folder, name)
    assert alice.wait_for_job(imported["job_id"], timeout_s=120)["status"] == "completed"
    model = alice.get_model(name)
    refused(lambda: bob.get_model(name))
    assert name not in [m["name"] for m in bob.list_models()["items"]]
    a = alice.generate(name, "cats", max_tokens=8, temperature=0)["text"]
    assert a == alice.generate(hers["model_id"], "cats", max_tokens=8, temperature=0)["text"]
    assert model["status"] == "completed"


def test_another_keys_model_cannot_be_evaluated_trained_or_streamed_from(tenants: dict[str, Any]):
    alice, bob = tenants["alice"], tenants["bob"]
    hers, his = tenants["alice_model"], tenants["bob_model"]
    jobs_before = bob.list_jobs()["total"]  # the keys are fixed, so earlier sessions' jobs are his too
    refused(lambda: bob.evaluate(hers["model_id"], prompts=["cats"]))
    refused(lambda: bob.evaluate(hers["model_id"], prompts=["cats"], wait=True))
    refused(lambda: bob.train_more(hers["model_id"], max_iters=5))
    refused(lambda: bob.model_status(hers["model_id"]))
    refused(lambda: list(bob.generate_stream(hers["model_id"], "cats")))
    # Her dataset, named from his own model's requests, does not exist for him either.
    refused(lambda: bob.evaluate(his["model_id"], dataset_id=hers["dataset"]["id"]), field="dataset_id")
    held_out = bob.http.post(f"/api/v1/models/{his['model_id']}/evaluate",
                             json={"held_out": {"id": hers["dataset"]["id"]}})
    assert held_out.status_code == 404 and held_out.json()["error"]["field"] == "held_out.id", held_out.text
    refused(lambda: bob.train_more(his["model_id"], max_iters=5, dataset_id=hers["dataset"]["id"]),
            field="dataset.id")
    assert bob.list_jobs()["total"] == jobs_before  # nothing was started
    assert alice.get_model(hers["model_id"])["status"] == "completed"


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The data of each event on an open stream (keep-alive comments skipped)."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


async def read_until(events: AsyncIterator[dict[str, Any]], done: Callable[[dict[str, Any]], bool],
                     timeout_s: float = 120) -> list[dict[str, Any]]:
    seen = []
    async with asyncio.timeout(timeout_s):
        async for event in events:
            seen.append(event)
            if done(event):
                return seen
    raise AssertionError(f"the stream ended before the awaited event; saw {[e['type'] for e in seen]}")


async def test_another_keys_running_job_cannot_be_cancelled_or_followed(
        tenants: dict[str, Any], settings: Settings, stack_env: dict[str, str]):
    """Alice's job runs while Bob tries to cancel it (over HTTP, and on Kafka as its stated owner) and to follow its
    events (with a header, with `?api_key=`, with his header beside her key). Both feeds of every job's events are
    open throughout: Bob's shows his own upload, made after her job's events had reached her feed, and nothing of
    hers before it."""
    url = tenants["url"]
    bus = Bus(settings.kafka_bootstrap, stack_env["LFZ_TOPIC_PREFIX"])
    async with httpx.AsyncClient(base_url=url, headers=bearer(KEYS[0]), timeout=60) as alice, \
            httpx.AsyncClient(base_url=url, headers=bearer(KEYS[1]), timeout=60) as bob, \
            aconnect_sse(alice, "GET", "/api/v1/events") as alice_feed, \
            aconnect_sse(bob, "GET", "/api/v1/events") as bob_feed:
        assert alice_feed.response.status_code == 200 and bob_feed.response.status_code == 200
        alice_events, bob_events = sse(alice_feed.response), sse(bob_feed.response)
        created = await alice.post("/api/v1/models", json={
            "name": f"long-{uuid.uuid4().hex[:6]}", "dataset": {"id": tenants["alice_model"]["dataset"]["id"]},
            "hyperparameters": {"preset": "tiny", "max_iters": 1_000_000}})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        try:
            await read_until(alice_events, lambda e: e["job_id"] == job_id and e["type"] == "TrainProgress")
            events_path = f"/api/v1/jobs/{job_id}/events"
            attempts = [
                await bob.post(f"/api/v1/jobs/{job_id}/cancel"),
                await bob.get(events_path),
                await bob.get(events_path, params={"format": "json"}),
                await bob.get(events_path, headers={"Last-Event-ID": "1"}),
                await bob.get(events_path, params={"api_key": KEYS[1]}, headers={"Authorization": ""}),
                await bob.get(events_path, params={"api_key": KEYS[0]}),  # his header wins over her key
                await bob.get(f"/api/v1/jobs/{job_id}"),
            ]
            assert [a.status_code for a in attempts] == [404] * len(attempts), [a.text for a in attempts]
            assert all(a.json()["error"]["code"] == "not_found" for a in attempts)
            await bus.produce("job.control", {"type": "CancelRequested", "job_id": job_id,
                                              "owner": owner_of(KEYS[1])}, key=job_id)
            letters = await bus.read("dead.letter", lambda seen: bool(seen),
                                     where=lambda m: job_id in (m.get("payload_text") or ""))
            assert letters[0]["field"] == "job_id" and "no job" in letters[0]["error"], letters[0]

            mine = await bob.post("/api/v1/datasets", json={"text": f"bob's second upload {uuid.uuid4().hex}"})
            assert mine.status_code == 201
            seen = await read_until(bob_events, lambda e: e["job_id"] == mine.json()["id"])
            assert {e["owner"] for e in seen} == {owner_of(KEYS[1])}, seen
            assert job_id not in {e["job_id"] for e in seen}

            job = (await alice.get(f"/api/v1/jobs/{job_id}")).json()
            assert job["status"] == "running", job  # Bob's cancel did not reach it
        finally:
            cancel = await alice.post(f"/api/v1/jobs/{job_id}/cancel")
        assert cancel.status_code == 202, cancel.text
        await read_until(alice_events, lambda e: e["job_id"] == job_id and e["type"] == "JobCancelled")


WEIRD_IDS = ["../models/x/checkpoints/best.pt", "datasets/../x", "/etc/passwd", "..%2Fmodels%2Fx",
             "%2e%2e", "\uff0e\uff0e\uff0fmodels", "x\u0000", "a" * 65, "", "datasets/x"]


def test_dataset_ids_that_would_steer_a_key_are_refused_and_nothing_is_written(
        tenants: dict[str, Any], object_store: ObjectStore):
    bob, his = tenants["bob"], tenants["bob_model"]
    alice_dataset = tenants["alice_model"]["dataset"]
    before = object_store.get_bytes(alice_dataset["key"])
    jobs_before = bob.list_jobs()["total"]
    for weird in WEIRD_IDS:
        for path, body, field in (
            ("/api/v1/models", {"name": "steered", "dataset": {"id": weird}}, "dataset.id"),
            (f"/api/v1/models/{his['model_id']}/train", {"dataset": {"id": weird}}, "dataset.id"),
            (f"/api/v1/models/{his['model_id']}/evaluate", {"held_out": {"id": weird}}, "held_out.id"),
            (f"/api/v1/models/{his['model_id']}/evaluate", {"dataset_id": weird}, "dataset_id"),
        ):
            response = bob.http.post(path, json=body)
            assert response.status_code == 422 and response.json()["error"]["field"] == field, (weird, response.text)
    keyed = bob.http.post("/api/v1/models", json={"name": "steered", "dataset": {"key": alice_dataset["key"]}})
    assert keyed.status_code == 422 and keyed.json()["error"]["field"] == "dataset.key", keyed.text
    for raw in ("..%2F..%2Fmodels", "%2e%2e", "%EF%BC%8E%EF%BC%8E", "datasets%2F" + alice_dataset["id"],
                alice_dataset["id"], "a" * 2000):
        response = bob.http.get(f"/api/v1/datasets/{raw}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", (raw, response.text)
    assert bob.http.get(f"/api/v1/datasets/{alice_dataset['id']}%00").status_code == 400
    assert bob.list_models(name="steered")["total"] == 0 and bob.list_jobs()["total"] == jobs_before
    assert object_store.get_bytes(alice_dataset["key"]) == before


async def test_on_kafka_an_evaluation_cannot_read_another_keys_dataset(
        tenants: dict[str, Any], settings: Settings, stack_env: dict[str, str], object_store: ObjectStore):
    """A producer that states Bob as the owner cannot evaluate on Alice's upload by naming its key; his own works."""
    bus = Bus(settings.kafka_bootstrap, stack_env["LFZ_TOPIC_PREFIX"])
    bob, his = tenants["bob"], tenants["bob_model"]
    outcomes = {}
    for whose, key in (("alice", tenants["alice_model"]["dataset"]["key"]), ("bob", his["dataset"]["key"])):
        job_id = f"kafka-eval-{uuid.uuid4().hex[:8]}"
        await bus.produce("evaluate.requested", {
            "type": "EvaluateRequested", "job_id": job_id, "owner": owner_of(KEYS[1]), "model_id": his["model_id"],
            "held_out": {"key": key}, "max_new_tokens": 4}, key=job_id)
        outcomes[whose] = await asyncio.to_thread(_finished, bob, job_id)
    assert outcomes["alice"]["status"] == "failed" and outcomes["alice"]["error_field"] == "held_out.key"
    assert "no dataset" in outcomes["alice"]["error"]
    assert not object_store.exists(f"evaluations/{outcomes['alice']['id']}.json")
    assert outcomes["bob"]["status"] == "completed", outcomes["bob"]


def _finished(client: Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """A job produced straight on Kafka: the gateway knows it once the projection has its first fact."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.get_job(job_id)
            break
        except ApiError as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    return client.wait_for_job(job_id, timeout_s=timeout_s)


async def test_on_kafka_training_cannot_read_another_keys_dataset(
        tenants: dict[str, Any], settings: Settings, stack_env: dict[str, str]):
    """A producer that states Bob as the owner cannot train on Alice's upload by naming its key; his own works."""
    bus = Bus(settings.kafka_bootstrap, stack_env["LFZ_TOPIC_PREFIX"])
    bob = tenants["bob"]
    outcomes = {}
    for whose in ("alice", "bob"):
        job_id = f"kafka-train-{uuid.uuid4().hex[:8]}"
        await bus.produce("train.requested", {
            "type": "TrainRequested", "job_id": job_id, "owner": owner_of(KEYS[1]), "model_name": f"on-{whose}s",
            "dataset": {"key": tenants[f"{whose}_model"]["dataset"]["key"]}, "hyperparameters": TINY}, key=job_id)
        outcomes[whose] = await asyncio.to_thread(_finished, bob, job_id)
    assert outcomes["alice"]["status"] == "failed" and outcomes["alice"]["error_field"] == "dataset.key"
    assert "no dataset" in outcomes["alice"]["error"]
    assert outcomes["bob"]["status"] == "completed", outcomes["bob"]


async def test_on_kafka_a_job_id_that_names_a_dataset_is_refused_and_the_dataset_kept(
        tenants: dict[str, Any], settings: Settings, stack_env: dict[str, str], object_store: ObjectStore):
    """Inline training text is stored under its job id, like an upload under its dataset id: a job id that names
    Alice's upload would write over it. It becomes a dead letter, and her dataset and its log stay as they were."""
    bus = Bus(settings.kafka_bootstrap, stack_env["LFZ_TOPIC_PREFIX"])
    dataset = tenants["alice_model"]["dataset"]
    before = object_store.get_bytes(dataset["key"])
    marker = f"overwritten by bob {uuid.uuid4().hex}"
    await bus.produce("train.requested", {
        "type": "TrainRequested", "job_id": dataset["id"], "owner": owner_of(KEYS[1]), "model_name": "overwrite",
        "dataset": {"text": marker * 20}, "hyperparameters": TINY}, key=dataset["id"])
    letters = await bus.read("dead.letter", lambda seen: bool(seen),
                             where=lambda letter: marker in (letter.get("payload_text") or ""))
    assert letters[0]["field"] == "job_id" and "already taken" in letters[0]["error"], letters[0]
    assert object_store.get_bytes(dataset["key"]) == before
    log = await bus.read("job.events", lambda seen: any(e["type"] == "DatasetUploaded" for e in seen),
                         where=lambda e: e.get("job_id") == dataset["id"])
    assert [e["type"] for e in log] == ["DatasetUploaded"], log


def test_keys_never_reach_the_access_log_and_operator_routes_need_an_operator_key(tenants, log_dir):
    """The dashboard's EventSource sends its key as `?api_key=`; uvicorn's access log wrote it down."""
    url, key = tenants["url"], KEYS[0]
    job_id = tenants["alice_model"]["job_id"]
    with httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("GET", f"/api/v1/jobs/{job_id}/events?api_key={key}&format=json") as stream:
            assert stream.status_code == 200
            stream.read()
        assert http.get("/metrics").status_code == 401
        tenant = http.get("/metrics", headers=bearer(key))
        assert tenant.status_code == 403 and "LFZ_OPERATOR_KEYS" in tenant.json()["error"]["message"]
        operator = http.get("/metrics", headers=bearer(OPERATOR_KEY))
        assert operator.status_code == 200 and "lfz_gateway_requests_total" in operator.text
        assert http.get("/api/v1/models", headers=bearer(OPERATOR_KEY)).status_code == 403
    deadline = time.monotonic() + 10
    while "api_key=[redacted]" not in (log := (log_dir / "auth.log").read_text(errors="replace")):
        assert time.monotonic() < deadline, "the access log never showed the request"
        time.sleep(0.2)
    assert key not in log and KEYS[1] not in log and OPERATOR_KEY not in log
