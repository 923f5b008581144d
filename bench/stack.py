"""The system a benchmark measures, started for it and gone after it: `python -m bench pipeline` and
`python -m bench gateway` both run on one of these.

It is `lfz up`'s supervisor (cli.stack) on a run of its own: the servers that the settings name (Kafka,
PostgreSQL, S3), or the embedded defaults (Tansu, SQLite, a folder) in a temporary folder, always under a topic prefix
nobody else uses, so a benchmark against shared servers neither sees nor disturbs anyone's jobs. The children get an
environment built from those settings alone: an `LFZ_*` variable of the shell (a thread count, an API key) must not
change what a benchmark measures without showing up in its command line.

    with BenchStack(load_settings(), workers=2) as stack:
        stack.settings.kafka_bootstrap, stack.processes()  # {"broker": pid, "worker-1": pid, "worker-2": pid}
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from bench.measure import local_broker_pid
from cli.stack import Stack
from infra.process import free_port
from infra.settings import Settings

def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment without its `LFZ_*` variables, plus those that say where the servers are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFZ_")}
    env.update(LFZ_DATABASE_URL=settings.resolved_database_url, LFZ_OBJECT_STORE_URL=settings.resolved_object_store_url,
               LFZ_S3_ACCESS_KEY=settings.s3_access_key, LFZ_S3_SECRET_KEY=settings.s3_secret_key,
               LFZ_S3_REGION=settings.s3_region, LFZ_BUCKET=settings.bucket, LFZ_TOPIC_PREFIX=settings.topic_prefix,
               LFZ_TOPIC_PARTITIONS=str(settings.topic_partitions), LFZ_LOG_LEVEL="WARNING")
    if settings.kafka_url:
        env["LFZ_KAFKA_URL"] = settings.kafka_url
    return env


def describe_servers(settings: Settings) -> dict[str, str]:
    """Which broker, database and object store a run used, without credentials."""
    database = settings.resolved_database_url
    store = settings.resolved_object_store_url
    return {"kafka": settings.kafka_url or "embedded Tansu",
            "database": database.split("://")[0] + "://" + database.split("@")[-1].split("://")[-1],
            "object_store": "local folder" if store.startswith("file:") else store}


class BenchStack(Stack):
    """`workers` agents workers and, with `gateway=True`, a gateway on a free port, on a topic prefix of their own."""

    def __init__(self, base: Settings, *, workers: int, gateway: bool = False, name: str = "bench",
                 extra_env: Mapping[str, str] | None = None):
        self.tmp = Path(tempfile.mkdtemp(prefix=f"lfz-{name}-"))
        settings = base.model_copy(update={"topic_prefix": f"{name}.{uuid.uuid4().hex[:8]}.", "data_dir": self.tmp})
        super().__init__(settings, port=free_port() if gateway else 0, workers=workers, gateway=gateway,
                         env={**child_env(settings), **(extra_env or {})},
                         say=lambda line: print(f"  {name}: {line}", file=sys.stderr))

    def start(self) -> str:
        url = super().start()
        if self.broker is not None:  # started by the supervisor: from now on our own clients need its address too
            self.settings = self.settings.model_copy(update={"kafka_url": self.broker.url})
        return url

    def processes(self) -> dict[str, int]:
        """Name -> pid of every process of the system that runs on this machine (a remote broker is not)."""
        pids = {child.name: child.pid for child in self.children}
        broker = local_broker_pid(self.settings.kafka_bootstrap)
        if broker is not None:
            pids["broker"] = broker
        return pids

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if exc is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:  # the processes' logs say why
            print(f"  the stack's logs are kept in {self.log_dir}", file=sys.stderr)
