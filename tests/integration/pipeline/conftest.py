"""Agents workers on the real servers, on topics of this test session's own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.db import migrate
from infra.settings import Settings
from tests.integration.stack import Bus, Process, start_worker


@pytest.fixture(scope="session")
def pipeline_env(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    migrate(settings.resolved_database_url, quiet=True)
    env = dict(os.environ)
    env.pop("LFZ_API_KEYS", None)
    env.update(LFZ_TOPIC_PREFIX=f"lfz.test.p{uuid.uuid4().hex[:10]}.", LFZ_DATA_DIR=str(tmp_path_factory.mktemp("lfz")),
               LFZ_LOG_LEVEL="INFO", LFZ_PROGRESS_EVERY_STEPS="5", LFZ_PROGRESS_EVERY_S="0.5", LFZ_LEASE_S="6",
               LFZ_JOB_MEMORY_MB="4096")
    return env


@pytest.fixture
def own_env(pipeline_env: dict[str, str]) -> dict[str, str]:
    """A topic prefix of this test's own, so its workers see only its jobs."""
    return {**pipeline_env, "LFZ_TOPIC_PREFIX": f"lfz.test.f{uuid.uuid4().hex[:10]}."}


@pytest.fixture
def own_bus(own_env: dict[str, str], settings: Settings) -> Bus:
    return Bus(settings.kafka_bootstrap, own_env["LFZ_TOPIC_PREFIX"])


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def bus(pipeline_env: dict[str, str], settings: Settings) -> Bus:
    return Bus(settings.kafka_bootstrap, pipeline_env["LFZ_TOPIC_PREFIX"])


@pytest.fixture(scope="session")
def worker(pipeline_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    process = start_worker("worker-a", pipeline_env, log_dir)
    yield process
    process.stop()


def corpus(repeat: int = 60) -> str:
    """A small English text made here: enough to train the tiny preset on."""
    lines = [
        "The model reads the text one character at a time and learns what comes next.",
        "A small network trained for a few steps already knows which letters follow a space.",
        "Validation text is held out, so the loss on it is an honest measure.",
    ]
    return "\n".join(lines[i % len(lines)] for i in range(repeat)) + "\n"


def train_request(job_id: str, name: str, **extra: object) -> dict:
    return {"type": "TrainRequested", "schema_version": 1, "job_id": job_id, "model_name": name,
            "dataset": {"text": corpus()}, "tokenizer": "char",
            "hyperparameters": {"preset": "tiny", "max_iters": 50}, **extra}
