"""The REST API over real HTTP, with the embedded broker, a SQLite projection and scripted agents."""

import asyncio
import json

import httpx
import pytest

from events import TrainCompleted, TrainProgress

from gateway.app import create_app
from tests.integration.gateway.embedded.conftest import make_settings
from tests.integration.gateway.embedded.harness import Projector, ScriptedAgents, serve

TINY = {"preset": "tiny", "max_iters": 20}


async def create_model(client, name="m1", text="to be or not to be, that is the question"):
    response = await client.post("/api/v1/models", json={"name": name, "dataset": {"text": text},
                                                          "hyperparameters": TINY})
    assert response.status_code == 202, response.text
    return response.json()


async def wait_status(client, model_id, status="completed"):
    for _ in range(100):
        body = (await client.get(f"/api/v1/models/{model_id}")).json()
        if body["status"] == status:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(body)


async def test_dataset_upload_json_and_multipart_then_listed(client, agents):
    inline = await client.post("/api/v1/datasets", json={"name": "poem", "text": "roses are red\n" * 30})
    assert inline.status_code == 201
    assert inline.json()["status"] == "recorded" and inline.json()["characters"] == 14 * 30
    assert inline.json()["preview"].startswith("roses are red\n")
    upload = await client.post("/api/v1/datasets", files={"file": ("story.txt", "once upon a time".encode())})
    assert upload.status_code == 201 and upload.json()["name"] == "story.txt" and upload.json()["bytes"] == 16
    listing = (await client.get("/api/v1/datasets")).json()
    assert {d["id"] for d in listing["items"]} == {inline.json()["id"], upload.json()["id"]}
    assert (await client.get(f"/api/v1/datasets/{upload.json()['id']}")).json()["key"] == f"datasets/{upload.json()['id']}"


@pytest.mark.parametrize("request_kwargs, field", [
    ({"json": {"name": "x", "text": "   "}}, "text"),
    ({"files": {"file": ("a.bin", b"\x00\x01\x02binary")}}, "file"),
    ({"files": {"file": ("a.txt", b"\xff\xfe latin")}}, "file"),
    ({"json": {"name": "x"}}, "text"),
    ({"json": {"name": "x", "text": "ok", "url": "file:///etc/passwd"}}, "url"),
])
async def test_bad_datasets_are_422_naming_the_field(client, request_kwargs, field):
    response = await client.post("/api/v1/datasets", **request_kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


async def test_dataset_over_the_limit_is_413(tmp_path, broker):
    settings = make_settings(tmp_path, broker, max_dataset_bytes=1000)
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/api/v1/datasets", files={"file": ("big.txt", b"a" * 5000)})
        inline = await http.post("/api/v1/datasets", json={"text": "a" * 1001})
    assert response.status_code == 413 and inline.status_code == 413


async def test_create_model_from_dataset_follow_to_completion(client, agents):
    dataset = (await client.post("/api/v1/datasets", json={"text": "abc " * 100})).json()
    response = await client.post("/api/v1/models/create", json={
        "name": "m1", "dataset": {"id": dataset["id"]}, "hyperparameters": TINY})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] in ("accepted", "running", "completed") and body["events_url"].endswith("/events")
    assert agents.commands[0].dataset.key == dataset["key"] and agents.commands[0].model_id == body["model_id"]
    stream = await client.get(body["events_url"])
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-store" and stream.headers["x-accel-buffering"] == "no"
    ids = [int(line[4:]) for line in stream.text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(1, 7))  # accepted, started, 3 x progress, completed
    assert "event: TrainCompleted" in stream.text
    model = await wait_status(client, body["model_id"])
    assert model["progress"] == 1.0 and model["dataset_key"] == dataset["key"]
    status = (await client.get(f"/api/v1/models/{body['model_id']}/status")).json()
    assert status["status"] == "completed" and status["step"] == 3 and status["loss"] == pytest.approx(1.0)
    log = (await client.get(f"{body['events_url']}?format=json&last_event_id=4")).json()
    assert [e["seq"] for e in log] == [5, 6] and log[-1]["type"] == "TrainCompleted"


async def test_model_validation_errors(client, agents):
    bad_hp = await client.post("/api/v1/models", json={"name": "m", "dataset": {"text": "x y"},
                                                        "hyperparameters": {"preset": "tiny", "LEARNING_RATE": -1}})
    assert bad_hp.status_code == 422 and bad_hp.json()["error"]["field"] == "hyperparameters.LEARNING_RATE"
    unknown_hp = await client.post("/api/v1/models", json={"name": "m", "dataset": {"text": "x"},
                                                            "hyperparameters": {"max_iterz": 3}})
    assert unknown_hp.json()["error"]["field"] == "hyperparameters.max_iterz"
    both = await client.post("/api/v1/models", json={"name": "m", "dataset": {"text": "x", "id": "d"}})
    assert both.status_code == 422 and both.json()["error"]["field"] == "dataset"
    missing = await client.post("/api/v1/models", json={"name": "m", "dataset": {"id": "nope"}})
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "dataset.id"
    not_json = await client.post("/api/v1/models", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    assert agents.commands == []


async def test_a_name_used_again_makes_its_next_version_and_a_busy_version_conflicts(client, agents):
    agents.hold_training = True
    first = await create_model(client)
    again = await create_model(client)
    assert again["model_id"] != first["model_id"]
    second = await wait_status(client, again["model_id"], "pending")
    assert (second["version"], second["ref"], second["parent_id"]) == (2, "m1/2", None)
    assert (await client.get("/api/v1/models/m1")).json()["id"] == again["model_id"]  # the newest
    assert (await client.get("/api/v1/models/m1/1")).json()["id"] == first["model_id"]
    assert (await client.get("/api/v1/models/m1/3")).status_code == 404
    versions = (await client.get("/api/v1/models/m1/versions")).json()
    assert [v["id"] for v in versions["items"]] == [first["model_id"], again["model_id"]]
    for bad in ("a@b", "a/b"):
        named = await client.post("/api/v1/models", json={"name": bad, "dataset": {"text": "abc"}})
        assert named.status_code == 422 and named.json()["error"]["field"] == "name"
    busy = await client.post(f"/api/v1/models/{first['model_id']}/train", json={})
    assert busy.status_code == 409
    generate = await client.post(f"/api/v1/models/{first['model_id']}/generate", json={"prompt": "a"})
    assert generate.status_code == 409 and generate.json()["error"]["code"] == "no_checkpoint"


async def test_cancel_a_running_job_then_cancel_again_conflicts(client, agents):
    agents.hold_training = True
    job_id = (await create_model(client))["job_id"]
    cancel = await client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert cancel.status_code == 202 and cancel.json() == {"job_id": job_id, "status": "cancelling"}
    events = (await client.get(f"/api/v1/jobs/{job_id}/events")).text
    assert "event: JobCancelled" in events
    for _ in range(50):
        if (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"] == "cancelled":
            break
        await asyncio.sleep(0.05)
    again = await client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert (await client.post("/api/v1/jobs/nope/cancel")).status_code == 404


async def test_continue_training_defaults_to_the_models_dataset(client, agents):
    first = await create_model(client)
    model = await wait_status(client, first["model_id"])
    more = await client.post(f"/api/v1/models/{first['model_id']}/train",
                             json={"hyperparameters": {"MAX_ITERS": 10}})
    assert more.status_code == 202 and more.json()["model_id"] != first["model_id"]
    assert more.headers["location"] == f"/api/v1/models/{more.json()['model_id']}"
    command = agents.commands[-1]
    assert (command.model_id, command.parent_id) == (more.json()["model_id"], first["model_id"])
    assert command.dataset.key == model["dataset_key"]
    assert command.hyperparameters == {"preset": "tiny", "MAX_ITERS": 10}
    continued = await wait_status(client, more.json()["model_id"])
    assert (continued["name"], continued["version"], continued["parent_id"]) == ("m1", 2, first["model_id"])


async def test_generate_json_and_stream(client, agents):
    model_id = (await create_model(client))["model_id"]
    await wait_status(client, model_id)
    result = await client.post(f"/api/v1/models/{model_id}/generate",
                               json={"prompt": "abc", "max_tokens": 5, "temperature": 0, "num_sequences": 2})
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["text"] == "hello" and body["texts"] == ["hello", "hello"] and body["total_tokens"] == 13
    assert agents.commands[-1].max_tokens == 5 and agents.commands[-1].temperature == 0
    stream = await client.post(f"/api/v1/models/{model_id}/generate", json={"prompt": "a", "max_length": 4,
                                                                            "stream": True})
    tokens = [json.loads(line[6:])["text"] for line in stream.text.splitlines()
              if line.startswith("data: ") and '"TokensGenerated"' in line]
    assert "".join(tokens) == "hell" and "event: GenerationCompleted" in stream.text
    too_long = await client.post(f"/api/v1/models/{model_id}/generate", json={"max_length": 10**6})
    assert too_long.status_code == 422 and too_long.json()["error"]["field"] == "max_length"
    unknown = await client.post("/api/v1/models/nope/generate", json={"prompt": "a"})
    assert unknown.status_code == 404


async def test_evaluate_submit_and_wait(client, agents):
    model_id = (await create_model(client))["model_id"]
    await wait_status(client, model_id)
    submitted = await client.post(f"/api/v1/models/{model_id}/evaluate", json={"prompts": ["a", "b"]})
    assert submitted.status_code == 202 and submitted.json()["status"] in ("accepted", "completed")
    report = await client.post(f"/api/v1/models/{model_id}/evaluate?wait=true",
                               json={"held_out": {"text": "some held-out text"}})
    assert report.status_code == 200 and report.json()["report"]["perplexity"] == 12.5
    assert agents.commands[-1].held_out.text == "some held-out text"
    nothing = await client.post(f"/api/v1/models/{model_id}/evaluate", json={})
    assert nothing.status_code == 422
    detail = (await client.get(f"/api/v1/models/{model_id}")).json()
    assert detail["latest_evaluation"]["report"]["perplexity"] == 12.5


async def test_list_and_filter_jobs_and_models(client, agents):
    a = await create_model(client, "a")
    b = await create_model(client, "b")
    await wait_status(client, a["model_id"])
    await wait_status(client, b["model_id"])
    jobs = (await client.get("/api/v1/jobs", params={"kind": "train", "model_id": a["model_id"]})).json()
    assert [j["id"] for j in jobs["items"]] == [a["job_id"]] and jobs["total"] == 1
    page = (await client.get("/api/v1/jobs", params={"limit": 1, "offset": 1})).json()
    assert len(page["items"]) == 1 and page["total"] == 2
    named = (await client.get("/api/v1/models", params={"name": "b"})).json()
    assert [m["id"] for m in named["items"]] == [b["model_id"]]
    assert (await client.get("/api/v1/models", params={"status": "failed"})).json()["total"] == 0
    assert (await client.get("/api/v1/jobs", params={"kind": "nope"})).status_code == 422
    deleted = await client.delete(f"/api/v1/models/{a['model_id']}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    assert (await client.get(f"/api/v1/models/{a['model_id']}")).status_code == 404
    assert (await client.get("/api/v1/models")).json()["total"] == 1
    recreated = await client.post("/api/v1/models", json={"name": "a", "dataset": {"text": "abc " * 20}})
    assert recreated.status_code == 202


async def test_sse_resume_after_a_dropped_connection_has_no_gap_and_no_duplicate(client, agents, projector):
    agents.delay_s = 0.05
    agents.progress_steps = 10
    job = await create_model(client)
    seen: list[int] = []
    async with client.stream("GET", job["events_url"]) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                seen.append(int(line[4:]))
                if len(seen) == 4:
                    break  # drop the connection halfway
    async with client.stream("GET", job["events_url"], headers={"Last-Event-ID": str(seen[-1])}) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                seen.append(int(line[4:]))
    assert seen == list(range(1, 14))


async def test_live_gap_is_filled_from_the_database_when_the_projector_lags(client, agents, projector):
    agents.hold_training = True
    job = await create_model(client)  # JobAccepted (seq 1) is recorded
    projector.paused.clear()  # the projector falls behind
    for step in (1, 2):  # seq 2 and 3: published before the stream starts, not recorded yet
        await agents.emit(TrainProgress, job["job_id"], "train", None, step=step, max_iters=2, loss=1.0,
                          learning_rate=1e-3, tokens_per_s=1.0, elapsed_s=1.0, progress=step / 2)
    await asyncio.sleep(0.5)  # the gateway's live feed has passed them, with nobody subscribed
    lines: list[str] = []

    async def follow():
        async with client.stream("GET", job["events_url"]) as stream:
            async for line in stream.aiter_lines():
                lines.append(line)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    await agents.emit(TrainCompleted, job["job_id"], "train", None, model_id=job["model_id"], final_step=2,
                      wall_s=1.0, num_parameters=1, checkpoint_key="models/x/checkpoints/step-2.pt")
    await asyncio.sleep(0.3)  # seq 4 arrived live; 2 and 3 are still missing from the database
    assert [line for line in lines if line.startswith("id: ")] == ["id: 1"]
    projector.paused.set()
    await asyncio.wait_for(task, 5)
    assert [int(line[4:]) for line in lines if line.startswith("id: ")] == [1, 2, 3, 4]


async def test_all_events_feed_has_ids_and_keepalive(client, agents):
    lines: list[str] = []

    async def follow():
        async with client.stream("GET", "/api/v1/events") as stream:
            async for line in stream.aiter_lines():
                lines.append(line)
                if line.startswith("event: TrainCompleted"):
                    return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.7)  # longer than the keep-alive interval of the tests
    job = await create_model(client)
    await asyncio.wait_for(task, 5)
    assert ": keep-alive" in lines
    assert f"id: {job['job_id']}:1" in lines


async def test_stream_limit_per_key(tmp_path, broker):
    settings = make_settings(tmp_path, broker, max_streams_per_key=1)
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream("GET", "/api/v1/events") as first:
            assert first.status_code == 200
            second = await http.get("/api/v1/events")
            assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_streams"
        for _ in range(20):
            if (await http.get("/metrics")).text.count("lfz_gateway_sse_streams 0.0"):
                break
            await asyncio.sleep(0.05)
        async with http.stream("GET", "/api/v1/events") as again:
            assert again.status_code == 200


async def test_two_keys_see_only_their_own_things(tmp_path, broker):
    settings = make_settings(tmp_path, broker, api_keys=["alice-key", "bob-key"])
    async with Projector(settings), ScriptedAgents(settings), serve(create_app(settings)) as url:
        alice = httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer alice-key"})
        bob = httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer bob-key"})
        anonymous = httpx.AsyncClient(base_url=url)
        async with alice, bob, anonymous:
            assert (await anonymous.get("/api/v1/models")).status_code == 401
            assert (await anonymous.get("/health")).status_code == 200
            assert (await anonymous.get("/openapi.json")).status_code == 200
            dataset = (await alice.post("/api/v1/datasets", json={"text": "alice's words"})).json()
            job = (await create_model(alice, "shared-name"))
            await wait_status(alice, job["model_id"])
            assert (await bob.get(f"/api/v1/datasets/{dataset['id']}")).status_code == 404
            assert (await bob.get(f"/api/v1/models/{job['model_id']}")).status_code == 404
            assert (await bob.get(f"/api/v1/jobs/{job['job_id']}")).status_code == 404
            assert (await bob.get(f"/api/v1/jobs/{job['job_id']}/events")).status_code == 404
            assert (await bob.post(f"/api/v1/jobs/{job['job_id']}/cancel")).status_code == 404
            assert (await bob.delete(f"/api/v1/models/{job['model_id']}")).status_code == 404
            assert (await bob.post(f"/api/v1/models/{job['model_id']}/generate", json={})).status_code == 404
            using = await bob.post("/api/v1/models", json={"name": "x", "dataset": {"id": dataset["id"]}})
            assert using.status_code == 404
            assert (await bob.get("/api/v1/models")).json()["total"] == 0
            assert (await bob.get("/api/v1/datasets")).json()["total"] == 0
            assert (await bob.get("/v1/models")).json()["data"] == []
            mine = await create_model(bob, "shared-name")  # names are unique per key only
            assert mine["model_id"] != job["model_id"]
            by_query = await anonymous.get(f"/api/v1/jobs/{job['job_id']}/events?api_key=alice-key&format=json")
            assert by_query.status_code == 200 and by_query.json()[-1]["type"] == "TrainCompleted"
            assert (await alice.get("/api/v1/models")).json()["total"] == 1


async def test_health_metrics_docs_openapi_and_index(client):
    health = (await client.get("/health")).json()
    assert health["status"] == "ok" and set(health["components"]) == {"database", "kafka", "object_store"}
    await client.get("/api/v1/models")
    metrics = (await client.get("/metrics")).text
    assert 'lfz_gateway_requests_total{method="GET",route="/api/v1/models",status="200"} 1.0' in metrics
    assert "lfz_gateway_request_seconds_bucket" in metrics and "lfz_gateway_sse_streams" in metrics
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    generate = document["paths"]["/api/v1/models/{model}/generate"]["post"]
    assert "text/event-stream" in generate["responses"]["200"]["content"]
    assert generate["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("GenerateBody")
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "/api/v1/models/{model}/generate" in docs.text and "<script" not in docs.text
    index = await client.get("/")
    assert index.status_code == 200 and "llm-from-zero" in index.text


async def test_health_names_the_component_that_is_down(settings, projector):
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).status_code == 200
        (settings.data_dir / "objects").rename(settings.data_dir / "moved")
        health = await http.get("/health")
    assert health.status_code == 503
    body = health.json()
    assert body["components"]["object_store"]["status"] == "down" and body["components"]["kafka"]["status"] == "ok"
    assert body["error"]["message"].startswith("object store is down")
    assert body["components"]["object_store"]["detail"]  # one user, no keys: that user is the operator


async def test_with_keys_health_tells_anonymous_callers_what_is_down_but_not_why(tmp_path, broker):
    """The errors behind a component's state name internal addresses and paths: only operators see them."""
    settings = make_settings(tmp_path, broker, api_keys=["tenant-key"], operator_keys=["ops-key"])
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).status_code == 200
        (settings.data_dir / "objects").rename(settings.data_dir / "moved")
        anonymous = await http.get("/health")
        tenant = await http.get("/health", headers={"Authorization": "Bearer tenant-key"})
        ops = await http.get("/health", headers={"Authorization": "Bearer ops-key"})
    for answer in (anonymous, tenant):
        assert answer.status_code == 503
        assert answer.json()["components"]["object_store"] == {"status": "down", "detail": None}
        assert answer.json()["error"]["message"] == "object store is down"
        assert str(settings.data_dir) not in answer.text
    assert ops.status_code == 503 and ops.json()["components"]["object_store"]["detail"]
