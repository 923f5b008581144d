"""The registry as its users meet it, on the real servers with an API key: a name's versions with their lineage,
an alias that resolves the same way in the CLI, REST, `/v1` and a signed bare Kafka command and moves in one step,
the serving choice, and `lfz compare` naming exactly the hyperparameters that differ."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from events.proof import Signer, owner_of
from tests.integration.cli.conftest import API_KEY, corpus
from tests.integration.stack import Bus


def json_of(result) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)


async def recorded_job(http: httpx.AsyncClient, job_id: str) -> dict:
    for _ in range(50):
        answer = await http.get(f"/api/v1/jobs/{job_id}")
        if answer.status_code == 200:
            return answer.json()
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} was not recorded: {answer.text}")


async def kafka_generate(settings, prefix: str, model: str) -> list[dict]:
    """A GenerateRequested naming `model`, signed with the key, produced straight to the topic; its facts."""
    request_id = f"kafka-{uuid.uuid4().hex[:10]}"
    value = json.dumps({"type": "GenerateRequested", "request_id": request_id, "model_name": model,
                        "prompt": "The", "max_tokens": 3, "owner": owner_of(API_KEY)}).encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(f"{prefix}generate.requested", value, key=request_id.encode(),
                                     headers=Signer([API_KEY]).headers(owner_of(API_KEY), value))
    finally:
        await producer.stop()
    return await Bus(settings.kafka_bootstrap, prefix).job(request_id, timeout=60)


async def test_versions_aliases_serving_and_compare_in_every_surface(lfz, gateway_url, cli_env, settings,
                                                                     tmp_path: Path):
    N = f"reg-{uuid.uuid4().hex[:6]}"  # the name, in every command below
    text = tmp_path / "registry.txt"
    text.write_text(corpus(200))
    first = lfz("train", "--data", str(text), "--name", f"{N}", "--preset", "tiny", "--max-iters", "30", "--follow")
    assert first.code == 0, first.err
    more = lfz("train", "--continue", f"{N}", "--max-iters", "20", "--set", "learning_rate=0.002", "--follow")
    assert more.code == 0, more.err
    versions = json_of(lfz("models", "versions", f"{N}", "--json"))["items"]
    v1, v2 = versions[0]["id"], versions[1]["id"]
    assert [(v["version"], v["parent_id"], v["status"]) for v in versions] == [(1, None, "completed"),
                                                                             (2, v1, "completed")]
    assert f"{N}/2" in lfz("models", "show", f"{N}").out  # the bare name is the newest version

    pointed = lfz("models", "alias", f"{N}", "champion", "1")
    assert pointed.code == 0 and f"{N}@champion -> {N}/1 (model {v1})" in pointed.out
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=60) as http:
        for version_id in (v1, v2):
            # CLI, REST, /v1 and Kafka all resolve reg@champion to the version it points at now.
            assert json_of(lfz("models", "show", f"{N}@champion", "--json"))["id"] == version_id
            generated = json_of(lfz("generate", f"{N}@champion", "The", "--max-tokens", "3", "--json"))
            assert generated["model_id"] == version_id
            assert (await http.get(f"/api/v1/models/{N}@champion")).json()["id"] == version_id
            completion = await http.post("/v1/completions", json={"model": f"{N}@champion", "prompt": "The",
                                                                  "max_tokens": 3})
            assert completion.status_code == 200, completion.text
            job_id = completion.json()["id"].removeprefix("cmpl-")  # the generation's job
            assert (await recorded_job(http, job_id))["model_id"] == version_id
            facts = await kafka_generate(settings, cli_env["LFZ_TOPIC_PREFIX"], f"{N}@champion")
            assert facts[0]["model_id"] == version_id and facts[-1]["type"] == "GenerationCompleted"
            if version_id == v1:
                assert lfz("models", "alias", f"{N}", "champion", "2").code == 0  # moves it
        listed = (await http.get("/v1/models")).json()["data"]
        assert {f"{N}", f"{N}/1", f"{N}/2", f"{N}@champion"} <= {m["id"] for m in listed}
        other = await http.get(f"/api/v1/models/{N}@champion", headers={"Authorization": "Bearer someone-else-key"})
        assert other.status_code == 403

    served = lfz("models", "serve", f"{N}/1", "last")
    assert served.code == 0 and f"{N}/1 serves its last checkpoint (step 30)" in served.out
    assert json_of(lfz("models", "show", f"{N}/1", "--json"))["serving_checkpoint"]["step"] == 30

    compared = json_of(lfz("compare", f"{N}/1", f"{N}@champion", "--json"))
    assert [run["id"] for run in compared["runs"]] == [v1, v2]
    assert compared["differences"] == ["train.learning_rate", "train.max_iters"]
    assert compared["parameters"]["train.max_iters"] == [30, 50]  # a continue counts on from its parent's step
    assert all(run["history"]["train"] and run["history"]["val"] for run in compared["runs"])
    table = lfz("compare", f"{N}/1", f"{N}/2")
    assert table.code == 0 and "* train.learning_rate" in table.out and "best_val_loss" in table.out
    assert lfz("compare", f"{N}/1").code != 0
