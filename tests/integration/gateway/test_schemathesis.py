"""Schemathesis over /openapi.json, with and without auth: no request it generates gets a 5xx, and no response
leaks a traceback or a secret (the `no_leaked_secrets` check of `leaks.py`, loaded as a schemathesis hooks file).

The first gateways use topics and a database of their own with no agent behind them (so generated commands train
nothing and no model is ever trained), and short waits, so that a request that would wait answers quickly. The
second pair has a worker and a trained model behind it, which the generated requests name: generation, OpenAI
completions, evaluation and export run for real on whatever values the schema allows. The
feed of every job's events never ends, so schemathesis leaves it out and a hypothesis test of its own opens it with
generated queries and headers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from cli.client import Client
from infra.db import create_engine, sessionmaker
from infra.db.tables import Job
from infra.settings import Settings
from tests.integration.pipeline.conftest import corpus
from tests.integration.gateway import leaks
from tests.integration.gateway.conftest import KEYS, Process, _start_gateway
from tests.integration.servers import scratch_database


@pytest.fixture(scope="module")
def own_database(settings: Settings) -> Iterator[str]:
    """An empty projection of this module's own: nobody else's models to find."""
    with scratch_database(settings.database_url, "lfz_gwfuzz") as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_gateways(stack_env: dict[str, str], log_dir: Path, own_database: str) -> Iterator[dict[str, str]]:
    env = {**stack_env, "LFZ_TOPIC_PREFIX": stack_env["LFZ_TOPIC_PREFIX"] + "fuzz.", "LFZ_SUBMIT_WAIT_S": "0.2",
           "LFZ_REQUEST_TIMEOUT_S": "1", "LFZ_SSE_KEEPALIVE_S": "0.5", "LFZ_DATABASE_URL": own_database}
    started: list[Process] = []
    urls = {}
    try:
        for name, extra in (("fuzz-open", {}), ("fuzz-auth", {"LFZ_API_KEYS": ",".join(KEYS)})):
            process, urls[name] = _start_gateway(name, env, log_dir, **extra)
            started.append(process)
        yield urls
    finally:
        for process in started:
            process.stop()


def run_schemathesis(url: str, secrets: dict[str, str], *options: str, cwd: Path, config: Path | None = None,
                     request_timeout_s: int = 10) -> subprocess.CompletedProcess:
    """The schemathesis CLI over the gateway's OpenAPI document, with the leak check loaded from its hooks file."""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": leaks.__file__, **secrets}
    configured = ["--config-file", str(config)] if config is not None else []
    command = [sys.executable, "-m", "schemathesis.cli", *configured, "run", f"{url}/openapi.json",
               "--checks", "not_a_server_error,no_leaked_secrets", "--request-timeout", str(request_timeout_s),
               "--generation-deterministic", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=cwd, env=env)


@pytest.mark.parametrize("which, headers", [("fuzz-open", []), ("fuzz-auth", ["-H", f"Authorization: Bearer {KEYS[0]}"])])
def test_no_server_errors_and_no_leaks(fuzz_gateways: dict[str, str], which: str, headers: list[str],
                                      settings: Settings, own_database: str, tmp_path: Path):
    secrets = leaks.secrets_env(KEYS, settings.s3_secret_key, own_database)
    result = run_schemathesis(fuzz_gateways[which], secrets, "--max-examples", "50",
                              "--exclude-path-regex", "^/api/v1/events$", *headers, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def served_database(settings: Settings) -> Iterator[str]:
    with scratch_database(settings.database_url, "lfz_gwserved") as url:
        yield url


@pytest.fixture(scope="module")
def served_gateways(stack_env: dict[str, str], log_dir: Path, served_database: str) -> Iterator[dict]:
    """Gateways with a worker behind them and a trained model named MODEL for each caller (the open gateway's, and
    KEYS[0]'s on the gateway with keys), and the ids of their training texts (`datasets`): generated requests that
    name them generate, evaluate and export for real."""
    env = {**stack_env, "LFZ_TOPIC_PREFIX": stack_env["LFZ_TOPIC_PREFIX"] + "served.",
           "LFZ_DATABASE_URL": served_database}
    started = [Process("served-worker", ["-m", "agents", "worker"], env, log_dir)]
    urls = {}
    try:
        for name, extra in (("served-open", {}), ("served-auth", {"LFZ_API_KEYS": ",".join(KEYS)})):
            process, urls[name] = _start_gateway(name, env, log_dir, **extra)
            started.append(process)
        datasets = []
        for name, key in (("served-open", None), ("served-auth", KEYS[0])):
            with Client(urls[name], api_key=key) as client:
                job = client.create_model(MODEL, text=corpus(), hyperparameters={"preset": "tiny", "max_iters": 20})
                assert client.wait_for_job(job["job_id"], timeout_s=180)["status"] == "completed"
                datasets += [dataset["id"] for dataset in client.list_datasets()["items"]]  # its training text
        yield {**urls, "datasets": datasets}
    finally:
        for process in started:
            process.stop()


MODEL = "fuzz-model"
# Every operation that takes a model: what a trained model behind them opens up (deleting it and training it further
# are left to the run above, which has no model to lose or to keep busy).
SERVED_OPERATIONS = r"^/(api/v1/models/\{model\}(/(status|generate|evaluate|export))?|v1/.+)$"


def name_them(datasets: list[str]) -> str:
    """Schemathesis's configuration: the model's name in nine requests of ten, a dataset that exists in most
    evaluations (one of each caller's: the other's is a 404)."""
    return f"""
[dictionaries.models]
values = ["{MODEL}"]

[dictionaries.datasets]
values = {json.dumps(datasets)}

[parameters]
"path.model" = {{ dictionary = "models", probability = 0.9 }}
"body.model" = {{ dictionary = "models", probability = 0.9 }}
"body.held_out.id" = {{ dictionary = "datasets", probability = 0.9 }}
"""


@pytest.mark.parametrize("which, headers", [("served-open", []),
                                            ("served-auth", ["-H", f"Authorization: Bearer {KEYS[0]}"])])
def test_with_a_trained_model_behind_it_no_server_errors_and_no_leaks(served_gateways: dict, which: str,
                                                                      headers: list[str], settings: Settings,
                                                                      served_database: str, tmp_path: Path):
    """The same checks where generated requests name a model that exists (nine times in ten): generations, OpenAI
    completions, evaluations and exports run on the worker, with whatever sampling values the schema allows."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(name_them(served_gateways["datasets"]))
    secrets = leaks.secrets_env(KEYS, settings.s3_secret_key, served_database)
    before = asyncio.run(_jobs_by_kind(served_database))
    result = run_schemathesis(served_gateways[which], secrets, "--max-examples", "10", "--exclude-method", "DELETE",
                              "--include-path-regex", SERVED_OPERATIONS, *headers, cwd=tmp_path, config=config,
                              request_timeout_s=90)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    ran = asyncio.run(_jobs_by_kind(served_database))
    made = {kind: ran.get(kind, 0) - before.get(kind, 0) for kind in ran}
    print(f"\n{which}: schemathesis made these jobs on the trained model: {made}")
    print("\n".join(asyncio.run(_failure_reasons(served_database))))
    reasons = asyncio.run(_failure_reasons(served_database))
    assert not [reason for reason in reasons if "internal" in reason.lower()], reasons
    assert made.get("generate completed", 0) >= 5 and sum(made.get(f"evaluate {status}", 0) for status in
                                                            ("queued", "running", "completed")) >= 1, (made, result.stdout[-5000:])


async def _failure_reasons(database_url: str) -> list[str]:
    """What failed jobs said: each must be the caller's mistake, named, never an internal error."""
    engine = create_engine(database_url)
    try:
        async with sessionmaker(engine)() as session:
            rows = await session.execute(select(Job.kind, Job.error).where(Job.status == "failed").distinct())
            return [f"{kind}: {error}" for kind, error in rows.all()]
    finally:
        await engine.dispose()


async def _jobs_by_kind(database_url: str) -> dict[str, int]:
    """Jobs by kind and status, as the projection recorded them: `{"generate completed": 12, ...}`."""
    engine = create_engine(database_url)
    try:
        async with sessionmaker(engine)() as session:
            rows = await session.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))
            return {f"{kind} {status}": count for kind, status, count in rows.all()}
    finally:
        await engine.dispose()


def test_the_leak_check_is_loaded_and_fails_on_a_leak(fuzz_gateways: dict[str, str], tmp_path: Path):
    """Told that a word every /health answer holds is an API key, the run must fail, and on the leak check: proof
    that the CLI loaded the hooks file and that the check can fail."""
    secrets = leaks.secrets_env(['"components"'], "", "")
    result = run_schemathesis(fuzz_gateways["fuzz-open"], secrets, "--max-examples", "2", "--include-path", "/health",
                              cwd=tmp_path)
    assert result.returncode != 0 and "no_leaked_secrets" in result.stdout, result.stdout[-3000:]
    assert "the response leaks an API key" in result.stdout, result.stdout[-3000:]


@given(params=st.dictionaries(st.sampled_from(["api_key", "last_event_id", "format", "job_id", "x"]),
                              st.text(max_size=40) | st.integers().map(str), max_size=3),
       last_event_id=st.none() | st.integers().map(str)
       | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30))
@hsettings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_feed_of_every_jobs_events_answers_any_query_without_a_server_error(fuzz_gateways: dict[str, str],
                                                                               params: dict, last_event_id):
    """The global feed never ends, so schemathesis cannot read it to the end: this opens it with generated query
    strings and Last-Event-ID headers, reads the answer's head, and lets go."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    for which in ("fuzz-open", "fuzz-auth"):
        try:
            with httpx.stream("GET", f"{fuzz_gateways[which]}/api/v1/events", params=params, headers=headers,
                              timeout=10) as response:
                assert response.status_code < 500, (params, headers, response.status_code)
                if response.status_code == 200:
                    assert response.headers["content-type"].startswith("text/event-stream")
                else:
                    assert "Traceback" not in response.read().decode(errors="replace")
        except httpx.LocalProtocolError:
            pass  # a header value that httpx itself will not send
