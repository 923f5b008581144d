"""Quotas per API key through the real HTTP API (embedded broker, SQLite, scripted agents): each limit answers 429
with `Retry-After` and the setting's name, and frees up when what held it ends."""

from __future__ import annotations

import asyncio

import httpx

from gateway.app import create_app
from tests.integration.gateway.embedded.conftest import make_settings
from tests.integration.gateway.embedded.harness import Projector, ScriptedAgents, serve

TEXT = "to be or not to be, that is the question. " * 4


async def _train(http: httpx.AsyncClient, name: str) -> httpx.Response:
    return await http.post("/api/v1/models", json={"name": name, "dataset": {"text": TEXT + name},
                                                    "hyperparameters": {"preset": "tiny", "max_iters": 20}})


def _refused(response: httpx.Response, code: str, setting: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == code and setting in error["message"], error
    assert int(response.headers["retry-after"]) >= 1


async def test_jobs_queued_or_running_per_key(tmp_path, broker):
    settings = make_settings(tmp_path, broker, max_active_jobs_per_key=2)
    async with Projector(settings), ScriptedAgents(settings) as agents, serve(create_app(settings)) as url, \
            httpx.AsyncClient(base_url=url) as http:
        agents.hold_training = True  # jobs stay running
        first, second = await _train(http, "a"), await _train(http, "b")
        assert first.status_code == second.status_code == 202
        _refused(await _train(http, "c"), "quota_exceeded", "LFZ_MAX_ACTIVE_JOBS_PER_KEY")
        cancelled = await http.post(f"/api/v1/jobs/{first.json()['job_id']}/cancel")
        assert cancelled.status_code in (200, 202), cancelled.text
        for _ in range(50):
            if (await http.get(f"/api/v1/jobs/{first.json()['job_id']}")).json()["status"] == "cancelled":
                break
            await asyncio.sleep(0.1)
        assert (await _train(http, "c")).status_code == 202
        # A sweep's trials count each: with one job running, a sweep of 2 trials passes the limit of 2.
        sweep = {"name": "s", "dataset": {"text": TEXT}, "hyperparameters": {"preset": "tiny"},
                 "space": {"learning_rate": {"values": [1e-3, 1e-2]}}, "method": "grid"}
        refused = await http.post("/api/v1/sweeps", json=sweep)
        _refused(refused, "quota_exceeded", "LFZ_MAX_ACTIVE_JOBS_PER_KEY")
        assert "adds 2" in refused.json()["error"]["message"]


async def test_datasets_per_key_by_count_and_by_bytes(tmp_path, broker):
    settings = make_settings(tmp_path, broker, max_datasets_per_key=2, max_dataset_bytes_per_key=400)
    async with Projector(settings), serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        one = await http.post("/api/v1/datasets", json={"name": "one", "text": "a" * 100})
        assert one.status_code == 201
        _refused(await http.post("/api/v1/datasets", json={"name": "big", "text": "b" * 350}), "quota_exceeded",
                 "LFZ_MAX_DATASET_BYTES_PER_KEY")
        assert (await http.post("/api/v1/datasets", json={"name": "two", "text": "c" * 100})).status_code == 201
        _refused(await http.post("/api/v1/datasets", json={"name": "three", "text": "d" * 10}), "quota_exceeded",
                 "LFZ_MAX_DATASETS_PER_KEY")
        again = await http.post("/api/v1/datasets", json={"name": "one again", "text": "a" * 100})
        assert again.status_code == 200 and again.json()["reused"]  # the same file again takes no room
        await http.delete(f"/api/v1/datasets/{one.json()['id']}")
        for _ in range(50):
            answer = await http.post("/api/v1/datasets", json={"name": "three", "text": "d" * 10})
            if answer.status_code == 201:
                break
            await asyncio.sleep(0.1)
        assert answer.status_code == 201, answer.text


async def test_generations_in_flight_per_key_streamed_or_not(tmp_path, broker):
    settings = make_settings(tmp_path, broker, max_generations_per_key=1)
    async with Projector(settings), ScriptedAgents(settings) as agents, serve(create_app(settings)) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as http:
        model = (await _train(http, "g")).json()["model_id"]
        for _ in range(50):
            if (await http.get(f"/api/v1/models/{model}")).json()["status"] == "completed":
                break
            await asyncio.sleep(0.1)
        agents.delay_s = 0.2  # each fact of a generation takes a while
        body = {"prompt": "to", "max_tokens": 8, "stream": True}
        async with http.stream("POST", f"/api/v1/models/{model}/generate", json=body) as streaming:
            assert streaming.status_code == 200
            _refused(await http.post(f"/api/v1/models/{model}/generate", json={"prompt": "to", "max_tokens": 4}),
                     "too_many_generations", "LFZ_MAX_GENERATIONS_PER_KEY")
            _refused(await http.post("/v1/completions", json={"model": model, "prompt": "to", "max_tokens": 4}),
                     "too_many_generations", "LFZ_MAX_GENERATIONS_PER_KEY")
            await streaming.aread()
        agents.delay_s = 0.0
        after = await http.post(f"/api/v1/models/{model}/generate", json={"prompt": "to", "max_tokens": 4})
        assert after.status_code == 200, after.text
