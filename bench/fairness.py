"""`python -m bench fairness`: how long another tenant's job waits to start while one tenant floods the queue.

The job queue itself (agents/jobs/queue.py, on the database of the settings: SQLite by default, or LFZ_DATABASE_URL)
with simulated workers: each claims the next job, "runs" it for `--job-s`, and claims again. Tenant A queues
`--flood` jobs at once; tenant B then submits a job every `--every-s` seconds. B's wait (queued to claimed) is
measured three ways in the same run: with the queue's fair ordering and no flood, with the fair ordering under the
flood, and with plain first-come-first-served under the flood (the queue's ordering before it was made fair).

    python -m bench fairness --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agents.jobs.queue import QUEUED, JobQueue
from bench.measure import percentiles
from infra.db import create_engine, migrate, sessionmaker
from infra.db.tables import JobQueueRow
from infra.settings import load_settings


class FirstComeFirstServed(JobQueue):
    """The baseline: the oldest queued job first, whoever owns it (the queue's ordering before it was fair)."""

    async def _candidates(self, kinds: tuple[str, ...], busy: Collection[str] = ()) -> list[tuple[str, int]]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(JobQueueRow.job_id, JobQueueRow.attempt)
                .where(*self._mine(), JobQueueRow.state == QUEUED, JobQueueRow.kind.in_(kinds))
                .order_by(JobQueueRow.created_at).limit(8))
            return [(job_id, attempt) for job_id, attempt in rows.all()]


async def scenario(sessions: Any, policy: type[JobQueue], flood: int, workers: int, job_s: float, every_s: float,
                   probes: int) -> list[float]:
    """Seconds each of tenant B's jobs waited from queued to claimed."""
    namespace = f"bench.fair.{uuid.uuid4().hex[:8]}."
    setup = policy(sessions, "setup", namespace)
    for index in range(flood):
        await setup.enqueue(f"a-{index}", "train", "tenant-a", {})
    queued_at: dict[str, float] = {}
    waits: list[float] = []
    done = asyncio.Event()

    async def worker(name: str) -> None:
        queue = policy(sessions, name, namespace)
        while not done.is_set():
            claim = await queue.claim_next()
            if claim is None:
                await asyncio.sleep(0.01)
                continue
            if claim.owner == "tenant-b":
                waits.append(time.monotonic() - queued_at[claim.job_id])
                if len(waits) == probes:
                    done.set()
            await asyncio.sleep(job_s)
            await queue.done(claim.job_id, claim.attempt)

    async def tenant_b() -> None:
        for index in range(probes):
            job_id = f"b-{index}"
            queued_at[job_id] = time.monotonic()
            await setup.enqueue(job_id, "train", "tenant-b", {})
            await asyncio.sleep(every_s)

    tasks = [asyncio.create_task(worker(f"w{i}")) for i in range(workers)]
    await tenant_b()
    await asyncio.wait_for(done.wait(), timeout=probes * every_s + flood * job_s + 60)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return waits


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    url = settings.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'fairness.db'}"
    await asyncio.to_thread(migrate, url, True)
    engine = create_engine(url)
    try:
        sessions = sessionmaker(engine)
        common = dict(workers=args.workers, job_s=args.job_s, every_s=args.every_s, probes=args.probes)
        results = {
            "fair, no flood": await scenario(sessions, JobQueue, flood=0, **common),
            "fair, flood": await scenario(sessions, JobQueue, flood=args.flood, **common),
            "first come first served, flood": await scenario(sessions, FirstComeFirstServed, flood=args.flood,
                                                             **common),
        }
    finally:
        await engine.dispose()
    return {"database": url.split("@")[-1], "flood": args.flood, **common,
                    "wait_ms": {name: percentiles([w * 1000 for w in waits]) for name, waits in results.items()}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fairness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=200, help="jobs tenant A queues at once")
    parser.add_argument("--workers", type=int, default=2, help="simulated workers, one job each at a time")
    parser.add_argument("--job-s", type=float, default=0.2, help="how long each simulated job runs")
    parser.add_argument("--every-s", type=float, default=0.3, help="tenant B submits one job this often")
    parser.add_argument("--probes", type=int, default=20, help="how many jobs tenant B submits")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, stats in figures["wait_ms"].items():
            print(f"{name:34s} tenant B's wait to start: p50 {stats['p50']:.0f} ms, p95 {stats['p95']:.0f} ms "
                  f"({stats['n']} jobs)")
    return 0
