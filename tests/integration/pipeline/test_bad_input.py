"""Bad messages end as dead letters and/or failed jobs that say what is wrong; the agents keep going."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agents.intake import dataset_id_of_job
from agents.train.agent import model_id_for
from events import DatasetRef, TrainFailed, TrainRequested
from infra.db import queries
from infra.db import create_engine, sessionmaker
from infra.objectstore import artifacts
from tests.integration.pipeline.conftest import corpus, train_request
from tests.integration.stack import poll, recorded


def _id() -> str:
    return f"bad-{uuid.uuid4().hex[:8]}"


async def test_undecodable_messages_become_dead_letters_and_the_agents_keep_working(bus, worker):
    marker = uuid.uuid4().hex
    garbage = [
        ("train.requested", b"{this is not json " + marker.encode()),
        ("train.requested", f'{{"type": "Bogus", "marker": "{marker}"}}'.encode()),
        ("generate.requested", f'{{"type": "TrainRequested", "marker": "{marker}"}}'.encode()),
        ("evaluate.requested", b"\xff\xfe" + marker.encode()),
        # Parser bombs: each once escaped the decoder (RecursionError, the plain ValueError of a long integer).
        ("train.requested", f'{{"marker": "{marker}", "deep": '.encode() + b"[" * 100_000),
        ("generate.requested", f'{{"marker": "{marker}", "max_tokens": '.encode() + b"7" * 5000 + b"}"),
        ("job.control", f'{{"marker": "{marker}", "deep": '.encode() + b"[" * 100_000),
        ("job.control", f'{{"type": "CancelRequested", "job_id": "{marker}\\udc80"}}'.encode()),
    ]
    for topic, raw in garbage:
        await bus.produce(topic, raw)
    letters = await bus.read("dead.letter", lambda seen: len(seen) >= len(garbage),
                             where=lambda m: marker in (m.get("payload_text") or "")
                             or marker.encode().hex() in (m.get("payload_base64") or "") or _b64(m, marker))
    by_topic = {m["topic"].removeprefix(bus.prefix): m for m in letters}
    assert set(by_topic) == {"train.requested", "generate.requested", "evaluate.requested", "job.control"}
    assert any("not valid JSON" in m["error"] for m in letters)
    assert any("nested deeper than 64 levels" in m["error"] for m in letters)
    assert any("an integer of 5000 digits" in m["error"] for m in letters)
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


@pytest.mark.parametrize(
    ("topic", "message", "failed", "field", "needle"),
    [
        ("train.requested", {"hyperparameters": {"preset": "tiny", "learning_rate": float("nan")}}, "TrainFailed",
         "hyperparameters.learning_rate", "finite"),
        ("train.requested", {"hyperparameters": {"preset": "tiny", "learning_rate": float("-inf")}}, "TrainFailed",
         "hyperparameters.learning_rate", "finite"),
        ("train.requested", {"hyperparameters": {"preset": "tiny", "d_model": 0}}, "TrainFailed",
         "hyperparameters.d_model", "positive"),
        ("train.requested", {"hyperparameters": {"preset": "tiny", "batch_size": -4}}, "TrainFailed",
         "hyperparameters.batch_size", "positive"),
        ("train.requested", {"hyperparameters": {"preset": "tiny", "max_iters": 0}}, "TrainFailed",
         "hyperparameters.max_iters", "positive"),
        # Within every bound, 38 GB of weights: the job fails on its memory limit (4 GiB in these tests) before it
        # touches any.
        ("train.requested", {"hyperparameters": {"preset": "tiny", "d_model": 8192, "num_heads": 8, "mlp_ratio": 16}},
         "TrainFailed", "hyperparameters", "does not fit in the memory"),
        ("train.requested", {"hyperparameters": {"preset": "tiny", "d_model": 65536, "num_heads": 8}}, "TrainFailed",
         "hyperparameters.d_model", "at most 8192"),
        ("train.requested", {"hyperparameters": {"preset": "tiny", "max_iters": 10**12}}, "TrainFailed",
         "hyperparameters.max_iters", "at most"),
        ("train.requested", {"tokenizer": "bpe", "tokenizer_options": {"vocab_size": -1}}, "TrainFailed",
         "tokenizer_options.vocab_size", "integer"),
        ("train.requested", {"processes": 65}, "TrainFailed", "processes", "less than or equal to 64"),
        ("train.requested", {"processes": 9}, "TrainFailed", "processes", "at most 8 training processes"),
        ("train.requested", {"hosts": 9}, "TrainFailed", "hosts", "at most 8 hosts per training job"),
        ("train.requested", {"processes": 3}, "TrainFailed", "hyperparameters.batch_size", "split evenly"),
        ("generate.requested", {"max_tokens": 0}, "GenerationFailed", "max_tokens", "greater than or equal"),
        ("generate.requested", {"max_tokens": 10**30}, "GenerationFailed", "max_tokens", "less than or equal"),
        ("generate.requested", {"num_sequences": -1}, "GenerationFailed", "num_sequences", "greater than or equal"),
        ("generate.requested", {"temperature": float("nan")}, "GenerationFailed", "temperature", "finite"),
        ("evaluate.requested", {"max_new_tokens": 0}, "EvaluationFailed", "max_new_tokens", "greater than or equal"),
        # PostgreSQL stores no U+0000: accepted, these would be facts that the projection cannot record.
        ("generate.requested", {"prompt": "a\x00b"}, "GenerationFailed", "prompt", "NUL character"),
        ("train.requested", {"description": "\x00"}, "TrainFailed", "description", "NUL character"),
        ("evaluate.requested", {"prompts": ["a", "\x00"]}, "EvaluationFailed", "prompts.1", "NUL character"),
        ("export.requested", {"format": "onnx"}, "ExportFailed", "format", "'hf' or 'gguf'"),
        ("export.requested", {"step": -1}, "ExportFailed", "step", "greater than or equal"),
        ("export.requested", {}, "ExportFailed", "model_name", "no model"),
        ("import.requested", {"files": {"config.json": "models/victim/checkpoints/best.pt"}}, "ImportFailed",
         "files", "must be stored at imports/"),
        ("import.requested", {"files": {"../config.json": "imports/x/../config.json"}}, "ImportFailed", "files",
         "not a plain file name"),
        ("import.requested", {}, "ImportFailed", "files.config.json", "no upload"),
    ],
)
async def test_zero_negative_huge_and_nan_values_on_kafka_fail_the_job_naming_the_field(
        bus, worker, topic, message, failed, field, needle):
    """Python's json writes NaN and Infinity as the bare literals that some producers send."""
    job_id = _id()
    base = {
        "train.requested": train_request(job_id, "bad-value"),
        "generate.requested": {"type": "GenerateRequested", "request_id": job_id, "model_name": "m", "prompt": "a"},
        "evaluate.requested": {"type": "EvaluateRequested", "job_id": job_id, "model_name": "m", "prompts": ["a"]},
        "export.requested": {"type": "ExportRequested", "job_id": job_id, "model_name": f"nothing-{job_id}"},
        "import.requested": {"type": "ImportRequested", "job_id": job_id, "model_name": f"imported-{job_id}",
                             "files": {n: f"imports/{job_id}/{n}" for n in ("config.json", "model.safetensors",
                                                                             "tokenizer.json")}},
    }[topic]
    await bus.produce(topic, {**base, **message}, key=job_id)
    events = await bus.job(job_id, timeout=120)
    assert events[-1]["type"] == failed, [e["type"] for e in events]
    assert events[-1]["field"] == field and needle in events[-1]["reason"], events[-1]


def _victim() -> str:
    return f"victim-{uuid.uuid4().hex[:8]}"


STEERED_KEYS = [
    "../models/{victim}/checkpoints/best.pt",
    "datasets/../models/{victim}/checkpoints/best.pt",
    "datasets/../../{victim}",
    "/datasets/{victim}",
    "/etc/passwd",
    "models/{victim}/checkpoints/best.pt",
    "datasets/%2e%2e%2fmodels%2f{victim}",
    "datasets/..%2F{victim}",
    "datasets/\uff0e\uff0e\uff0fmodels\uff0f{victim}",  # fullwidth dots and slash
    "datasets/\u2024\u2024/{victim}",  # one-dot leaders
    "datasets\\..\\models\\{victim}",
    "datasets/{victim}\x00.txt",
    "datasets/{victim}/",
    "datasets/",
    "s3://lfz/models/{victim}/checkpoints/best.pt",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("template", STEERED_KEYS)
async def test_an_object_key_steered_outside_datasets_is_refused_and_nothing_is_read_or_written(
        bus, worker, object_store, template):
    """The victim objects exist, so a key that reached the store would find them: the job would train or evaluate
    instead of failing, and a write would change them. The jobs' own keys stay empty too."""
    victim = _victim()
    planted = {f"models/{victim}/checkpoints/best.pt": b"not a checkpoint", f"datasets/{victim}": b"victim text"}
    for key, data in planted.items():
        object_store.put_bytes(key, data)
    try:
        key = template.format(victim=victim)
        train_id, evaluate_id = _id(), _id()
        await bus.produce("train.requested", {**train_request(train_id, "steer"), "dataset": {"key": key}},
                          key=train_id)
        await bus.produce("evaluate.requested", {"type": "EvaluateRequested", "job_id": evaluate_id,
                                                 "model_name": "m", "held_out": {"key": key}}, key=evaluate_id)
        for job_id, failed, field in ((train_id, "TrainFailed", "dataset.key"),
                                      (evaluate_id, "EvaluationFailed", "held_out.key")):
            events = await bus.job(job_id, timeout=120)
            assert events[-1]["type"] == failed and events[-1]["field"] == field, events[-1]
            assert "rejected" in events[-1]["reason"], events[-1]
        assert {k: object_store.get_bytes(k) for k in planted} == planted
        for job_id in (train_id, evaluate_id):
            would_be = model_id_for(TrainRequested(job_id=job_id, model_name="m", dataset=DatasetRef(text="t")))
            assert object_store.list(f"models/{would_be}/") == []
            assert not object_store.exists(artifacts.dataset_key(dataset_id_of_job(job_id)))
            assert not object_store.exists(f"evaluations/{job_id}.json")
    finally:
        for key in planted:
            object_store.delete(key)


@pytest.mark.parametrize("model_id", ["../models/x", "a/b", "..", "-x", "x" * 65, "ab\u0301"])
async def test_a_model_id_that_is_not_a_plain_identifier_is_refused(bus, worker, object_store, model_id):
    job_id = _id()
    await bus.produce("train.requested", {**train_request(job_id, "steer"), "model_id": model_id}, key=job_id)
    events = await bus.job(job_id, timeout=120)
    assert events[-1]["type"] == "TrainFailed" and events[-1]["field"] == "model_id", events[-1]
    assert not object_store.exists(artifacts.dataset_key(dataset_id_of_job(job_id)))


async def test_requests_and_facts_reusing_another_tenants_job_id_touch_nothing(bus, worker, settings):
    """Each of these once appended to the victim's log (a GenerateRequested or EvaluateRequested under its job id,
    an invalid TrainRequested's failed fact), ending the victim's job and opening its log to the sender."""
    victim = _id()
    name = f"victim-{victim}"
    await bus.produce("train.requested", train_request(victim, name, owner="alice"), key=victim)
    before = await bus.job(victim, timeout=120)
    assert before[-1]["type"] == "TrainCompleted"
    attacks = [
        ("generate.requested", {"type": "GenerateRequested", "request_id": victim, "model_name": name,
                                "prompt": "x", "owner": "mallory"}),
        ("generate.requested", {"type": "GenerateRequested", "request_id": victim, "model_name": name,
                                "prompt": "x", "owner": "alice"}),  # her own, but not a generation's id
        ("evaluate.requested", {"type": "EvaluateRequested", "job_id": victim, "model_name": name,
                                "prompts": ["x"], "owner": "mallory"}),
        ("train.requested", train_request(victim, "mine", owner="mallory", tokenizer="morse")),  # fails to decode
        ("train.requested", train_request(victim, "mine", owner="mallory")),
    ]
    for topic, message in attacks:
        await bus.produce(topic, message, key=victim)
    letters = await bus.read("dead.letter", lambda seen: len(seen) >= len(attacks), timeout=30,
                             where=lambda m: victim in (m.get("payload_text") or "")
                             and m["topic"] != f"{bus.prefix}job.events")
    assert all("already taken" in m["error"] or "tokenizer" in m["error"] for m in letters), letters
    # A hostile fact straight on the facts topic, under the victim's job id and another owner: turned away.
    forged = TrainFailed(job_id=victim, seq=len(before) + 1, producer="mallory", owner="mallory", kind="train",
                         reason="forged", event_id=f"{victim}-forged").to_json()
    await bus.produce("job.events", forged, key=victim)
    turned = await bus.read("dead.letter", lambda seen: len(seen) >= 1,
                            where=lambda m: f"{victim}-forged" in (m.get("payload_text") or ""))
    assert turned[0]["error"].startswith("owner:")
    await asyncio.sleep(2)  # whatever the attacks would have made has been made by now
    after = await bus.job_until(victim, lambda seen: True)
    assert [e["event_id"] for e in after if e["event_id"] != f"{victim}-forged"] == \
        [e["event_id"] for e in before], "nothing was appended to the victim's log"
    rows = await recorded(settings.resolved_database_url, victim)
    assert [row[0] for row in rows] == [e["event_id"] for e in before], "nor to its copy in the database"


async def test_an_inline_text_becomes_a_dataset_of_its_owner_and_only_the_dataset_rows_open_it(bus, worker, settings):
    """Access to a stored text is decided by the dataset rows alone: the train agent records an inline text as its
    owner's dataset (once per owner and content), and another owner naming its key is refused like any stranger."""
    first, again, steal = _id(), _id(), _id()
    text = corpus() + f"\n{uuid.uuid4().hex}\n"  # a text of this test's alone: no earlier dataset has it
    await bus.produce("train.requested", {**train_request(first, f"inline-{first}", owner="alice"),
                                          "dataset": {"text": text}}, key=first)
    accepted = (await bus.job_until(first, lambda seen: any(e["type"] == "JobAccepted" for e in seen)))[0]
    dataset_id = dataset_id_of_job(first)
    assert accepted["dataset_key"] == artifacts.dataset_key(dataset_id)
    uploaded = (await bus.job_until(dataset_id, lambda seen: len(seen) >= 1, timeout=30))[0]
    assert uploaded["type"] == "DatasetUploaded" and uploaded["owner"] == "alice"
    assert uploaded["key"] == accepted["dataset_key"] and uploaded["characters"] == len(text)
    # The same text again, from the same owner, once the first is recorded: the same dataset, not a second copy (two
    # requests racing each other may each store one; the lookup is by recorded rows).
    engine = create_engine(settings.resolved_database_url)
    try:
        async def recorded_yet() -> bool:
            async with sessionmaker(engine)() as session:
                return await queries.dataset_readable(session, "alice", accepted["dataset_key"])
        await asyncio.wait_for(poll(recorded_yet, bool), 30)
    finally:
        await engine.dispose()
    await bus.produce("train.requested", {**train_request(again, f"inline-{again}", owner="alice"),
                                          "dataset": {"text": text}}, key=again)
    accepted_again = (await bus.job_until(again, lambda seen: any(e["type"] == "JobAccepted" for e in seen)))[0]
    assert accepted_again["dataset_key"] == accepted["dataset_key"]
    # Another owner naming the key: refused, as for a key that does not exist.
    await bus.produce("train.requested", {**train_request(steal, "steal", owner="mallory"),
                                          "dataset": {"key": accepted["dataset_key"]}}, key=steal)
    refused = await bus.job(steal, timeout=60)
    assert refused[-1]["type"] == "TrainFailed" and refused[-1]["field"] == "dataset.key", refused[-1]
    for job_id in (first, again):
        assert (await bus.job(job_id, timeout=180))[-1]["type"] == "TrainCompleted"
    engine = create_engine(settings.resolved_database_url)
    try:
        async with sessionmaker(engine)() as session:
            assert await queries.dataset_readable(session, "alice", accepted["dataset_key"])
            assert not await queries.dataset_readable(session, "mallory", accepted["dataset_key"])
            # The training job's own id opens nothing: only dataset rows do.
            assert not await queries.dataset_readable(session, "alice", artifacts.dataset_key(first))
    finally:
        await engine.dispose()
