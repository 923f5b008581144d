"""The resume and dedupe logic of a job's event stream, without Kafka: a Fanout fed by hand, a list as the log."""

import asyncio

import pytest

from gateway.live import Fanout, FeedEvent, SubscriptionLagged
from gateway.streams import SeqCursor, all_events, job_events


def ev(seq: int, type_: str = "TrainProgress", job: str = "j1", owner: str | None = None) -> FeedEvent:
    return FeedEvent(job, seq, type_, owner, f'{{"seq":{seq}}}')


class Log:
    """The job_events table as the stream reads it; `rows` can grow while a stream runs (the projector)."""

    def __init__(self, *rows: FeedEvent):
        self.rows = list(rows)
        self.reads = 0

    async def read(self, after: int, before: int | None) -> list[FeedEvent]:
        self.reads += 1
        return sorted((r for r in self.rows if r.seq > after and (before is None or r.seq < before)),
                      key=lambda r: r.seq)


async def collect(stream, timeout: float = 5.0) -> list[int]:
    async def run():
        return [e.seq async for e in stream]

    return await asyncio.wait_for(run(), timeout)


def test_cursor_emits_in_order_once():
    cursor = SeqCursor()
    assert [e.seq for e in cursor.offer(ev(1))] == [1]
    assert cursor.offer(ev(1)) == []
    assert cursor.offer(ev(3)) == []
    assert cursor.gap == (2, 2)
    assert [e.seq for e in cursor.offer(ev(2))] == [2, 3]
    assert cursor.gap is None and cursor.last == 3


def test_cursor_resumes_after_last_event_id_and_can_skip_a_lost_gap():
    cursor = SeqCursor(last=5)
    assert cursor.offer(ev(4)) == [] and cursor.offer(ev(5)) == []
    cursor.offer(ev(8))
    assert cursor.gap == (6, 7)
    assert [e.seq for e in cursor.skip_gap()] == [8]


async def test_replay_then_live_without_duplicates():
    feed = Fanout()
    log = Log(ev(1), ev(2), ev(3))

    async def publish_later():
        await asyncio.sleep(0.05)
        for seq in (2, 3, 4):  # 2 and 3 were replayed from the log already
            feed.publish(ev(seq))
        feed.publish(ev(5, "TrainCompleted"))

    task = asyncio.create_task(publish_later())
    assert await collect(job_events("j1", 0, feed, log.read)) == [1, 2, 3, 4, 5]
    await task
    assert feed.subscriber_count == 0


async def test_resume_from_last_event_id():
    feed = Fanout()
    log = Log(*(ev(s) for s in range(1, 6)), ev(6, "TrainCompleted"))
    assert await collect(job_events("j1", 3, feed, log.read)) == [4, 5, 6]


async def test_gap_in_live_events_is_filled_from_the_log_once_the_projector_catches_up():
    feed = Fanout()
    log = Log(ev(1))

    async def drive():
        await asyncio.sleep(0.05)
        feed.publish(ev(4))  # 2 and 3 went by before the subscription; the projector has not recorded them yet
        feed.publish(ev(5, "TrainCompleted"))
        await asyncio.sleep(0.3)
        log.rows += [ev(2), ev(3)]

    task = asyncio.create_task(drive())
    assert await collect(job_events("j1", 0, feed, log.read)) == [1, 2, 3, 4, 5]
    await task


async def test_terminal_event_missed_by_both_replay_and_live_is_found_by_polling_the_log():
    feed = Fanout()
    log = Log(ev(1))

    async def record_late():
        await asyncio.sleep(0.2)
        log.rows.append(ev(2, "TrainCompleted"))  # published before the subscription, recorded after the replay

    task = asyncio.create_task(record_late())
    assert await collect(job_events("j1", 0, feed, log.read)) == [1, 2]
    await task


async def test_stream_of_finished_job_ends_after_replay():
    feed = Fanout()
    log = Log(ev(1), ev(2, "JobCancelled"), ev(3))
    assert await collect(job_events("j1", 0, feed, log.read)) == [1, 2]


async def test_lost_gap_is_skipped_after_the_timeout():
    feed = Fanout()
    log = Log(ev(1))

    async def drive():
        await asyncio.sleep(0.05)
        feed.publish(ev(3, "TrainCompleted"))

    task = asyncio.create_task(drive())
    assert await collect(job_events("j1", 0, feed, log.read, gap_timeout_s=0.3)) == [1, 3]
    await task


async def test_slow_subscriber_is_dropped_without_blocking_others():
    feed = Fanout(queue_size=4)
    async with feed.subscribe("j1") as slow, feed.subscribe("j1") as fast:
        for seq in range(1, 8):
            feed.publish(ev(seq))
            assert (await fast.get(timeout=1)).seq == seq
        with pytest.raises(SubscriptionLagged):
            await slow.get(timeout=1)
        assert feed.dropped == 1
        feed.publish(ev(8))
        assert (await fast.get(timeout=1)).seq == 8
    assert feed.subscriber_count == 0


async def test_all_jobs_feed_shows_only_the_callers_events():
    feed = Fanout()
    stream = all_events(feed, visible=lambda owner: owner == "alice")
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.01)
    feed.publish(ev(1, job="b1", owner="bob"))
    feed.publish(ev(1, job="a1", owner="alice"))
    event = await asyncio.wait_for(first, 1)
    assert (event.job_id, event.owner) == ("a1", "alice")
    await stream.aclose()
    assert feed.subscriber_count == 0


async def test_a_stream_subscribed_before_its_request_was_published_reads_the_log_only_for_a_gap():
    """replay=False (a generation's own stream): the events come live, and the log is read only for what the feed
    missed."""
    feed = Fanout()
    log = Log(ev(1, "JobAccepted"), ev(2, "TokensGenerated"))
    async with feed.subscribe("j1") as subscription:
        async def drive():
            await asyncio.sleep(0.02)
            feed.publish(ev(1, "JobAccepted"))
            await asyncio.sleep(0.02)
            assert log.reads == 0  # nothing read before, nor for, an event that came in order
            feed.publish(ev(3, "GenerationCompleted"))  # 2 never came live: read from the log

        task = asyncio.create_task(drive())
        stream = job_events("j1", 0, feed, log.read, subscription=subscription, replay=False)
        assert await collect(stream) == [1, 2, 3]
        await task
    assert log.reads == 1
