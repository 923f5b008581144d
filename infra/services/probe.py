"""Readiness checks for infra/services/up.sh: is Kafka serving clients, does the S3 server answer?

Run as a script with the project's venv: `probe.py kafka HOST:PORT` or `probe.py s3 URL --access-key ...`.
Exits 0 when the server is ready (for S3: after creating the bucket), 1 with a reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time


async def kafka_ready(bootstrap: str, deadline: float, username: str | None = None,
                      password: str | None = None, cafile: str | None = None) -> None:
    """A metadata answer that lists a broker, then a group coordinator: consumer groups work from here on. With a
    username, over SASL/SCRAM-SHA-512; with a CA file, over TLS, trusting that CA."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError
    from aiokafka.helpers import create_ssl_context

    security: dict = {}
    if username:
        security.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                        sasl_plain_username=username, sasl_plain_password=password)
    if cafile:
        security.update(security_protocol="SASL_SSL" if username else "SSL",
                        ssl_context=create_ssl_context(cafile=cafile))
    last: Exception | None = None
    while time.monotonic() < deadline:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **security)
        try:
            await client.bootstrap()
            metadata = await client.fetch_all_metadata()
            if not metadata.brokers():
                raise RuntimeError("the metadata lists no broker yet")
            # The first lookup creates __consumer_offsets; doing it here spares the first test that wait.
            await client.coordinator_lookup(0, "lfz-services-probe")
            return
        except (KafkaError, OSError, RuntimeError, asyncio.TimeoutError) as exc:
            last = exc
        finally:
            await client.close()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"Kafka at {bootstrap} not ready: {last!r}")


def s3_ready(url: str, access_key: str, secret_key: str, bucket: str, deadline: float) -> None:
    from infra.objectstore import S3ObjectStore

    store = S3ObjectStore(url, access_key, secret_key, bucket)
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            store.ensure_bucket()
            store.health()
            return
        except Exception as exc:  # connection refused while it starts, or an S3 error worth reporting
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"S3 server at {url} not ready: {last!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="service", required=True)
    kafka = sub.add_parser("kafka")
    kafka.add_argument("bootstrap")
    kafka.add_argument("--sasl-username")
    kafka.add_argument("--sasl-password")
    kafka.add_argument("--cafile", help="speak TLS, trusting this CA (a PEM file)")
    s3 = sub.add_parser("s3")
    s3.add_argument("url")
    s3.add_argument("--access-key", required=True)
    s3.add_argument("--secret-key", required=True)
    s3.add_argument("--bucket", required=True)
    for p in (kafka, s3):
        p.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    # aiokafka logs every refused connection at ERROR while the broker starts: noise here.
    logging.basicConfig(level=logging.CRITICAL)
    deadline = time.monotonic() + args.timeout
    try:
        if args.service == "kafka":
            asyncio.run(kafka_ready(args.bootstrap, deadline, args.sasl_username, args.sasl_password, args.cafile))
        else:
            s3_ready(args.url, args.access_key, args.secret_key, args.bucket, deadline)
    except TimeoutError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
