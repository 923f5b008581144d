"""Bad messages end as dead letters and/or failed jobs that say what is wrong; the agents keep going."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.pipeline.conftest import train_request


def _id() -> str:
    return f"bad-{uuid.uuid4().hex[:8]}"


async def test_undecodable_messages_become_dead_letters_and_the_agents_keep_working(bus, worker):
    marker = uuid.uuid4().hex
    garbage = [
        ("train.requested", b"{this is not json " + marker.encode()),
        ("train.requested", f'{{"type": "Bogus", "marker": "{marker}"}}'.encode()),
        ("generate.requested", f'{{"type": "TrainRequested", "marker": "{marker}"}}'.encode()),
        ("evaluate.requested", b"\xff\xfe" + marker.encode()),
    ]
    for topic, raw in garbage:
        await bus.produce(topic, raw)
    letters = await bus.read("dead.letter", lambda seen: len(seen) >= len(garbage),
                             where=lambda m: marker in (m.get("payload_text") or "")
                             or marker.encode().hex() in (m.get("payload_base64") or "") or _b64(m, marker))
    by_topic = {m["topic"].removeprefix(bus.prefix): m for m in letters}
    assert set(by_topic) == {"train.requested", "generate.requested", "evaluate.requested"}
    assert any("not valid JSON" in m["error"] for m in letters)
    assert any("unknown message type" in m["error"] for m in letters)
    assert all(m["partition"] is not None and m["offset"] is not None for m in letters)

    # The agents are still up: a good request after the bad ones is served.
    job_id = _id()
    await bus.produce("train.requested", train_request(job_id, "after-garbage"), key=job_id)
    assert (await bus.job(job_id, timeout=120))[-1]["type"] == "TrainCompleted"


def _b64(message: dict, marker: str) -> bool:
    import base64

    data = message.get("payload_base64")
    return bool(data) and marker.encode() in base64.b64decode(data)


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"hyperparameters": {"preset": "tiny", "D_MODEL": 33}}, "hyperparameters.D_MODEL", "divisible"),
        ({"hyperparameters": {"preset": "tiny", "learning_rate": -1}}, "hyperparameters.learning_rate", "positive"),
        ({"hyperparameters": {"preset": "galaxy"}}, "hyperparameters.preset", "unknown preset"),
        ({"dataset": {"text": "   \n"}}, "dataset.text", "empty"),
        ({"dataset": {"key": "datasets/does-not-exist"}}, "dataset.key", "no dataset"),
        ({"dataset": {"text": "x"}}, "dataset", "split"),
        ({"tokenizer": "morse"}, "tokenizer", "tokenizer"),
        ({"model_name": ""}, "model_name", "model_name"),
    ],
)
async def test_invalid_requests_end_in_a_failed_job_naming_the_field(bus, worker, change, field, needle):
    job_id = _id()
    await bus.produce("train.requested", {**train_request(job_id, "bad"), **change}, key=job_id)
    events = await bus.job(job_id, timeout=120)
    failed = events[-1]
    assert failed["type"] == "TrainFailed", [e["type"] for e in events]
    assert failed["field"] == field
    assert needle in failed["reason"]


async def test_generation_from_a_model_that_does_not_exist_fails_clearly(bus, worker):
    request_id = _id()
    await bus.produce("generate.requested", {"type": "GenerateRequested", "request_id": request_id,
                                             "model_name": "never-trained", "prompt": "hi"}, key=request_id)
    events = await bus.job(request_id)
    assert events[-1]["type"] == "GenerationFailed"
    assert events[-1]["field"] == "model_name" and "no model" in events[-1]["reason"]
