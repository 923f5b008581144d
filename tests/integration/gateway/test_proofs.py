"""Owners proven on Kafka: with API keys configured, the agents take a command only with a valid proof of its owner
(an HMAC of the value under the owner's key, in record headers), and the owner is the signer, whatever the body
says. A stack of its own (a gateway and a worker with keys, on a topic prefix of this module's)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer

from cli.client import ApiError, Client
from events.proof import OWNER_HEADER, SIGNATURE_HEADER, owner_of
from tests.integration.stack import Bus, start_gateway, start_worker

ALICE, BOB = "proof-alice-0123456789", "proof-bob-9876543210"
CORPUS = "the cat sat on the mat and the dog sat on the log.\n" * 40
TINY = {"preset": "tiny", "max_iters": 20}


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    prefix = f"lfz.test.pr{uuid.uuid4().hex[:10]}."
    env = {**stack_env, "LFZ_TOPIC_PREFIX": prefix, "LFZ_API_KEYS": f"{ALICE},{BOB}"}
    log_dir = tmp_path_factory.mktemp("proofs")
    worker = start_worker("proof-worker", env, log_dir)
    gateway, url = start_gateway("proof-gateway", env, log_dir)
    try:
        yield {"url": url, "prefix": prefix, "bootstrap": env["LFZ_KAFKA_URL"].removeprefix("kafka://")}
    finally:
        gateway.stop()
        worker.stop()


async def produce(bootstrap: str, topic: str, value: bytes, key: str, headers: list | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


def signed(api_key: str, value: bytes) -> list[tuple[str, bytes]]:
    """As the README shows: five lines of Python."""
    digest = hmac.new(api_key.encode(), value, hashlib.sha256).hexdigest()
    return [(OWNER_HEADER, owner_of(api_key).encode()), (SIGNATURE_HEADER, digest.encode())]


def train(job_id: str, **extra: object) -> bytes:
    return json.dumps({"type": "TrainRequested", "job_id": job_id, "model_name": f"m-{job_id}",
                       "dataset": {"text": CORPUS + job_id}, "hyperparameters": TINY, **extra}).encode()


def test_commands_through_the_gateway_are_signed_and_run(stack: dict):
    with Client(stack["url"], api_key=ALICE) as alice:
        created = alice.create_model(f"signed-{uuid.uuid4().hex[:6]}", text=CORPUS, hyperparameters=TINY)
        assert alice.wait_for_job(created["job_id"], timeout_s=180)["status"] == "completed"


def test_on_kafka_only_a_valid_proof_is_taken_and_the_signer_is_the_owner(stack: dict):
    bus = Bus(stack["bootstrap"], stack["prefix"])
    topic = f"{stack['prefix']}train.requested"
    ids = {name: f"proof-{name}-{uuid.uuid4().hex[:8]}" for name in
           ("unsigned", "forged", "tampered", "claims_alice", "bob")}
    value = train(ids["tampered"])
    cases = [
        (ids["unsigned"], train(ids["unsigned"]), None),
        (ids["forged"], train(ids["forged"]), [(OWNER_HEADER, owner_of(ALICE).encode()),
                                               (SIGNATURE_HEADER, b"00" * 32)]),
        (ids["tampered"], value.replace(b"max_iters\": 20", b"max_iters\": 21"), signed(BOB, value)),
        (ids["claims_alice"], train(ids["claims_alice"], owner=owner_of(ALICE)), None),
        (ids["bob"], train(ids["bob"]), None),
    ]
    for job_id, raw, headers in cases:
        if job_id in (ids["claims_alice"], ids["bob"]):
            headers = signed(BOB, raw)
        asyncio.run(produce(stack["bootstrap"], topic, raw, job_id, headers))

    refused = {ids[name] for name in ("unsigned", "forged", "tampered", "claims_alice")}
    letters = asyncio.run(bus.read("dead.letter",
                                   lambda seen: all(any(i in m["payload_text"] for m in seen) for i in refused),
                                   where=lambda m: any(i in (m.get("payload_text") or "") for i in refused)))
    errors = {next(i for i in refused if i in m["payload_text"]): m["error"] for m in letters}
    assert "needs the headers" in errors[ids["unsigned"]]
    assert "not a valid signature" in errors[ids["forged"]] and "not a valid signature" in errors[ids["tampered"]]
    assert "other than the key that signed it" in errors[ids["claims_alice"]]
    assert all(m["job_id"] is None for m in letters), "an unproven sender writes into no job's log"

    done = asyncio.run(bus.job(ids["bob"], timeout=180))
    assert done[-1]["type"] == "TrainCompleted" and {e["owner"] for e in done} == {owner_of(BOB)}
    with Client(stack["url"], api_key=BOB) as bob, Client(stack["url"], api_key=ALICE) as alice:
        # the projection follows the log: wait for it to record what Kafka already holds
        assert bob.wait_for_job(ids["bob"], timeout_s=60)["status"] == "completed"
        with pytest.raises(ApiError) as error:
            alice.get_job(ids["bob"])
        assert error.value.status == 404
        for job_id in refused:
            with pytest.raises(ApiError):
                bob.get_job(job_id)


def test_an_unsigned_cancel_of_someone_elses_job_is_a_dead_letter(stack: dict):
    bus = Bus(stack["bootstrap"], stack["prefix"])
    with Client(stack["url"], api_key=ALICE) as alice:
        created = alice.create_model(f"long-{uuid.uuid4().hex[:6]}", text=CORPUS,
                                     hyperparameters={"preset": "tiny", "max_iters": 400})
        job_id = created["job_id"]
        cancel = json.dumps({"type": "CancelRequested", "job_id": job_id, "reason": "mallory"}).encode()
        asyncio.run(produce(stack["bootstrap"], f"{stack['prefix']}job.control", cancel, job_id))
        letters = asyncio.run(bus.read("dead.letter", lambda seen: len(seen) >= 1,
                                       where=lambda m: job_id in (m.get("payload_text") or "")))
        assert "needs the headers" in letters[0]["error"]
        final = alice.wait_for_job(job_id, timeout_s=240)
    assert final["status"] == "completed", final
