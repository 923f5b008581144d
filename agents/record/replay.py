"""Rebuilding the database from the log: drop the projection's tables, then apply every fact again, in order.

The source is the job-events topic read from its beginning (`kafka`), or, for the embedded broker that keeps
nothing across restarts, the log the database itself holds in `job_events` (`database`). The job queue is left
alone: it is coordination between workers, not a projection. `lfz replay` runs this.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from agents.record.projection import apply_batch
from events import decode_event
from infra.db import create_engine, sessionmaker
from infra.db.tables import PROJECTION_TABLES, Base, JobEventRow
from infra.joblog import Recorded, TopicRead, read_topic
from infra.settings import Settings

BATCH = 500


@dataclass
class ReplayReport:
    read: int = 0
    applied: int = 0
    undecodable: int = 0
    turned_away: int = 0  # facts whose owner or kind was not their job's (the record agent dead-lettered them)


async def read_table(url: str) -> TopicRead:
    engine = create_engine(url)
    try:
        async with sessionmaker(engine)() as session:
            rows = (await session.execute(select(JobEventRow).order_by(JobEventRow.position))).scalars().all()
            return TopicRead([Recorded(decode_event(row.data), row.kafka_partition, row.kafka_offset)
                              for row in rows])
    finally:
        await engine.dispose()


async def rebuild(url: str, facts: list[Recorded]) -> ReplayReport:
    """Empty the projection's tables at `url` and apply `facts` to them."""
    engine = create_engine(url)
    report = ReplayReport(read=len(facts))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: Base.metadata.drop_all(sync, tables=list(PROJECTION_TABLES)))
            await connection.run_sync(lambda sync: Base.metadata.create_all(sync, tables=list(PROJECTION_TABLES)))
        sessions = sessionmaker(engine)
        for start in range(0, len(facts), BATCH):
            turned_away: list = []
            async with sessions() as session:
                report.applied += await apply_batch(session, facts[start:start + BATCH], turned_away)
                await session.commit()
            report.turned_away += len(turned_away)
    finally:
        await engine.dispose()
    return report


async def replay(settings: Settings, source: str = "kafka", into: str | None = None) -> ReplayReport:
    if source == "kafka":
        read = await read_topic(settings)
    elif source == "database":
        read = await read_table(settings.resolved_database_url)
    else:
        raise ValueError(f"source must be kafka or database, not {source!r}")
    report = await rebuild(into or settings.resolved_database_url, read.facts)
    report.undecodable = read.undecodable
    return report
