"""Kafka as real deployments run it: a private broker that takes only SASL/SCRAM-SHA-512 clients and enforces ACLs
(`SERVICES_KAFKA_SASL=1` of infra/services). A job runs end to end through it, every client of the system (the
gateway's, the agents' Faust app, the admin client) authenticating from the settings; a client without
credentials, with a wrong password, or with credentials but no ACL is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from cli.client import Client
from tests.integration.pipeline.conftest import corpus
from tests.integration.servers import PrivateServers
from tests.integration.stack import start_gateway, start_worker


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    servers = PrivateServers(tmp_path_factory.mktemp("sasl") / "services")
    servers.env["SERVICES_KAFKA_SASL"] = "1"
    try:
        servers.up("kafka")
        yield servers.settings()
    finally:
        servers.purge()


async def _produce(bootstrap: str, topic: str, timeout_s: float = 8.0, **security: object) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=4000, **security)
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}"), timeout_s)
    finally:
        await producer.stop()


def test_the_settings_name_sasl_and_a_job_runs_end_to_end_through_it(secured, pipeline_env, tmp_path: Path):
    assert secured["LFZ_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert secured["LFZ_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512" and secured["LFZ_KAFKA_USERNAME"] == "lfz"
    env = {**pipeline_env, **secured, "LFZ_TOPIC_PREFIX": f"lfz.test.sasl{uuid.uuid4().hex[:8]}."}
    worker = start_worker("sasl-worker", env, tmp_path)
    gateway, url = start_gateway("sasl-gateway", env, tmp_path)
    try:
        with Client(url) as client:
            created = client.create_model(f"sasl-{uuid.uuid4().hex[:6]}", text=corpus(),
                                          hyperparameters={"preset": "tiny", "max_iters": 30})
            assert client.wait_for_job(created["job_id"], timeout_s=180)["status"] == "completed"
            answer = client.generate(created["model_id"], "the", max_tokens=8, temperature=0)
            assert answer["completion_tokens"] > 0
    finally:
        gateway.stop()
        worker.stop()


@pytest.mark.parametrize("who, security", [
    ("no credentials", {}),
    ("a wrong password", {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                          "sasl_plain_username": "lfz", "sasl_plain_password": "not-the-password"}),
    ("credentials but no ACL", {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                                "sasl_plain_username": "guest", "sasl_plain_password": "guest-secret"}),
])
def test_a_client_without_credentials_or_rights_is_refused(secured, who: str, security: dict):
    bootstrap = secured["LFZ_KAFKA_URL"].removeprefix("kafka://")
    with pytest.raises((KafkaError, asyncio.TimeoutError, OSError)):
        asyncio.run(_produce(bootstrap, "lfz.train.requested", **security))


def test_the_systems_own_user_may_write_its_topics(secured):
    bootstrap = secured["LFZ_KAFKA_URL"].removeprefix("kafka://")
    asyncio.run(_produce(bootstrap, f"lfz.test.acl{uuid.uuid4().hex[:6]}", security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="lfz",
                         sasl_plain_password=secured["LFZ_KAFKA_PASSWORD"]))
    with pytest.raises((KafkaError, asyncio.TimeoutError)):  # but nothing outside lfz.*
        asyncio.run(_produce(bootstrap, "other.topic", security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="lfz",
                             sasl_plain_password=secured["LFZ_KAFKA_PASSWORD"]))
