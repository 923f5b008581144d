"""Kafka plumbing shared by the gateway, the agents and the CLI: topic creation, client construction, a topic's
partitions, `KafkaUnavailable` (the broker did not take a message: try again) and `MessageRefused` (it never will)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    UnsupportedForMessageFormatError,
)

from events import Topics
from infra.settings import Settings

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The broker cannot be reached, or did not acknowledge a message in time."""


class MessageRefused(ValueError):
    """Kafka will never take this message (too large for the broker, or malformed): sending it again cannot help."""


# What Kafka answers about the message itself. Everything else (no broker, a timeout, a leader moving, a missing
# permission an operator can grant) may pass, so it is waited out; aiokafka's own `retriable` flag cannot tell
# these apart: it calls a timeout of an unreachable broker not retriable.
REFUSED_FOR_GOOD: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError, CorruptRecordException,
    InvalidMessageError, InvalidTimestampError, UnsupportedForMessageFormatError, InvalidTopicError,
)


def bootstrap_servers(settings: Settings) -> str:
    if not settings.kafka_url:
        raise RuntimeError("no Kafka URL: set LFZ_KAFKA_URL, or start the stack with `lfz up` (embedded broker)")
    return settings.kafka_bootstrap


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the settings' protocol (SSL, SASL_SSL), verifying the broker against the CA file when one
    is given (else the system's CAs), with a client certificate when one is given; None without TLS."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return create_ssl_context(cafile=settings.kafka_ssl_cafile or None, certfile=settings.kafka_ssl_certfile or None,
                              keyfile=settings.kafka_ssl_keyfile or None)


def client_options(settings: Settings) -> dict[str, Any]:
    """Where the broker is and how to reach it, for every aiokafka client the system makes: the one place that
    knows about SASL and TLS (Faust gets the same through `faust_credentials`)."""
    options: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(settings),
                               "security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        if not settings.kafka_username:
            raise RuntimeError(f"LFZ_KAFKA_SECURITY_PROTOCOL is {settings.kafka_security_protocol}: set "
                               "LFZ_KAFKA_USERNAME and LFZ_KAFKA_PASSWORD")
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_username,
                       sasl_plain_password=settings.kafka_password)
    return options


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create every topic the system uses (idempotent), waiting up to `timeout_s` for the broker."""
    topics = Topics(settings.topic_prefix)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [name for name in topics.all() if name not in existing]
            if missing:
                new = [NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=1)
                       for name in missing]
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass  # another process created them between the list and the create
            return
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"Kafka at {settings.kafka_url} is not reachable: {exc}") from exc
            log.info("waiting for Kafka at %s: %s", settings.kafka_url, exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def partitions(settings: Settings, topic: str, timeout_s: float = 15.0) -> list[int]:
    """The topic's partitions, from the cluster's metadata. A topic created a moment ago may take a few metadata
    rounds to appear; after `timeout_s` without it, RuntimeError."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
    await admin.start()
    try:
        while True:
            described = await admin.describe_topics([topic])
            found = sorted(p["partition"] for d in described if d["topic"] == topic for p in d["partitions"])
            if found:
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topic {topic} does not exist (ensure_topics creates it)")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def create_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """A producer that keeps order per key and waits for the broker to acknowledge."""
    return AIOKafkaProducer(
        **client_options(settings),
        client_id=client_id,
        acks="all",
        linger_ms=2,
        request_timeout_ms=30_000,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka 0.14 can raise CancelledError out of `stop()` for a consumer without a group
    (it awaits a helper task it has just cancelled); that must not look like this task being cancelled."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
