"""The object store away in the middle of a training run, for one worker: its S3 traffic goes through a proxy that
the test cuts (tests/integration/proxy.py). A short outage is waited out; a long one hands the job back to the
queue, to resume once the store is back. Neither fails the job (a blip used to end it as an internal error)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from tests.integration.pipeline.conftest import train_request
from tests.integration.proxy import CuttableProxy
from tests.integration.stack import distinct, start_worker

LONG = {"preset": "tiny", "max_iters": 600, "checkpoint_every": 50, "eval_every": 100}


def _proxy(settings) -> CuttableProxy:
    store = urlparse(settings.object_store_url)
    return CuttableProxy((store.hostname or "127.0.0.1", store.port or 80))


async def _run_through_an_outage(own_env, own_bus, settings, tmp_path: Path, outage_s: float,
                                 patience_s: float) -> tuple[list[dict], float]:
    proxy = _proxy(settings)
    env = {**own_env, "LFZ_OBJECT_STORE_URL": f"http://127.0.0.1:{proxy.port}",
           "LFZ_OBJECT_STORE_PATIENCE_S": str(patience_s)}
    worker = start_worker(f"store-{uuid.uuid4().hex[:4]}", env, tmp_path)
    try:
        job_id = f"store-{uuid.uuid4().hex[:8]}"
        await own_bus.produce("train.requested", {**train_request(job_id, "stored"), "hyperparameters": LONG},
                              key=job_id)
        await own_bus.job_until(job_id, lambda s: any(e["type"] == "CheckpointSaved" for e in s), 120)
        proxy.cut()
        cut_at = time.monotonic()
        await asyncio.sleep(outage_s)
        proxy.mend()
        facts = distinct(await own_bus.job(job_id, timeout=240))
        return facts, time.monotonic() - cut_at
    finally:
        worker.stop()
        proxy.close()


async def test_a_short_outage_of_the_object_store_is_waited_out(own_env, own_bus, settings, tmp_path: Path):
    facts, took = await _run_through_an_outage(own_env, own_bus, settings, tmp_path, outage_s=6, patience_s=120)
    types = [e["type"] for e in facts]
    assert types[-1] == "TrainCompleted" and types.count("TrainStarted") == 1, types
    waits = [e for e in facts if e["type"] == "TrainProgress" and "object store is unavailable" in (e["warning"] or "")]
    assert waits, "the progress said the job waits for the object store"
    assert [e["seq"] for e in facts] == list(range(1, len(facts) + 1))
    print(f"\nobject store away 6s: the job waited and completed {took:.1f}s after the cut")


async def test_a_long_outage_hands_the_job_back_and_it_resumes_once_the_store_is_back(own_env, own_bus, settings,
                                                                                   tmp_path: Path):
    facts, took = await _run_through_an_outage(own_env, own_bus, settings, tmp_path, outage_s=12, patience_s=3)
    types = [e["type"] for e in facts]
    assert types[-1] == "TrainCompleted" and "TrainFailed" not in types, types
    started = [e for e in facts if e["type"] == "TrainStarted"]
    assert len(started) == 2 and started[1]["resumed_from_step"] >= 50, started
    assert [e["seq"] for e in facts] == list(range(1, len(facts) + 1))
    print(f"\nobject store away 12s (patience 3s): handed back, resumed from step {started[1]['resumed_from_step']}, "
          f"completed {took:.1f}s after the cut")
