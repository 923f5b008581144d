"""Kafka as real deployments run it: a private broker whose client port speaks TLS, with a certificate signed by a CA
of its own, and takes only SASL/SCRAM-SHA-512 clients with ACLs (`SERVICES_KAFKA_SASL=1 SERVICES_KAFKA_TLS=1` of
infra/services: SASL_SSL). A job runs end to end through it, every client of the system (the gateway's, the agents'
Faust app, the admin client) authenticating and trusting the CA from the settings; a client without credentials,
with a wrong password, or with credentials but no ACL is refused, and so is one that speaks plain text to the TLS
port or does not trust the broker's CA."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from cli.client import Client
from tests.integration.pipeline.conftest import corpus
from tests.integration.servers import PrivateServers
from tests.integration.stack import start_gateway, start_worker


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    servers = PrivateServers(tmp_path_factory.mktemp("sasl") / "services")
    servers.env["SERVICES_KAFKA_SASL"] = "1"
    servers.env["SERVICES_KAFKA_TLS"] = "1"
    try:
        servers.up("kafka")
        yield servers.settings()
    finally:
        servers.purge()


def _security(secured: dict[str, str], protocol: str, trust: str | None = "the CA", username: str | None = None,
              password: str | None = None) -> dict:
    """A client's options: PROTOCOL; with TLS, trusting the broker's CA ("the CA") or only the system's ("system
    CAs"); with a USERNAME, SCRAM-SHA-512 as that user."""
    security: dict = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        security["ssl_context"] = create_ssl_context(
            cafile=secured["LFZ_KAFKA_SSL_CAFILE"] if trust == "the CA" else None)
    if username:
        security.update(sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=username, sasl_plain_password=password)
    return security


async def _produce(bootstrap: str, topic: str, timeout_s: float = 8.0, **security: object) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=4000, **security)
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}"), timeout_s)
    finally:
        await producer.stop()


def test_the_settings_name_sasl_over_tls_and_a_job_runs_end_to_end_through_it(secured, pipeline_env,
                                                                              tmp_path: Path):
    assert secured["LFZ_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert Path(secured["LFZ_KAFKA_SSL_CAFILE"]).is_file()
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


REFUSED = [  # who, protocol, trust, username, password
    ("no credentials", "SSL", "the CA", None, None),
    ("a wrong password", "SASL_SSL", "the CA", "lfz", "not-the-password"),
    ("credentials but no ACL", "SASL_SSL", "the CA", "guest", "guest-secret"),
    ("plain text to the TLS port", "SASL_PLAINTEXT", None, "lfz", "lfz-kafka-secret"),
    ("TLS without trusting the broker's CA", "SASL_SSL", "system CAs", "lfz", "lfz-kafka-secret"),
]


@pytest.mark.parametrize("who, protocol, trust, username, password", REFUSED, ids=[case[0] for case in REFUSED])
def test_a_client_without_credentials_rights_or_trust_is_refused(secured, who: str, protocol: str, trust: str | None,
                                                                 username: str | None, password: str | None):
    bootstrap = secured["LFZ_KAFKA_URL"].removeprefix("kafka://")
    with pytest.raises((KafkaError, asyncio.TimeoutError, OSError)):
        asyncio.run(_produce(bootstrap, "lfz.train.requested",
                             **_security(secured, protocol, trust, username, password)))


def test_the_systems_own_user_may_write_its_topics(secured):
    bootstrap = secured["LFZ_KAFKA_URL"].removeprefix("kafka://")
    own = _security(secured, "SASL_SSL", "the CA", "lfz", secured["LFZ_KAFKA_PASSWORD"])
    asyncio.run(_produce(bootstrap, f"lfz.test.acl{uuid.uuid4().hex[:6]}", **own))
    with pytest.raises((KafkaError, asyncio.TimeoutError)):  # but nothing outside lfz.*
        asyncio.run(_produce(bootstrap, "other.topic", **own))
