"""The job queue: claims are exclusive, leases fence out a worker that lost its job, outboxes end a job once."""

import asyncio

from agents.jobs.queue import COMPLETING, DONE, QUEUED, RUNNING, JobQueue


async def test_enqueue_is_idempotent(sessions):
    queue = JobQueue(sessions, "w1")
    assert await queue.enqueue("j1", "train", None, {"a": 1}) is not None
    assert await queue.enqueue("j1", "train", None, {"a": 2}) is None
    row = await queue.get("j1")
    assert (row.state, row.spec, row.last_seq) == (QUEUED, {"a": 1}, 1)


async def test_only_one_of_two_workers_claims_a_job(sessions):
    await JobQueue(sessions, "setup").enqueue("j1", "train", None, {})
    first, second = JobQueue(sessions, "w1"), JobQueue(sessions, "w2")
    claims = await asyncio.gather(first.claim_next(), second.claim_next())
    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1 and winners[0].attempt == 1
    row = await first.get("j1")
    assert row.state == RUNNING and row.worker in ("w1", "w2")


async def test_take_over_fences_the_old_worker(sessions):
    old, new = JobQueue(sessions, "old"), JobQueue(sessions, "new")
    await old.enqueue("j1", "train", None, {})
    claim = await old.claim_next()
    lease, = await new.leases(("train",))
    taken, wait = await new.take_over(lease.job_id, lease.attempt, lease.heartbeat_at, lease.takeovers)
    assert taken is not None and taken.attempt == 2 and taken.takeovers == 1 and wait == 0
    # The old worker's renewals and its attempt to end the job now change nothing.
    assert not (await old.heartbeat("j1", claim.attempt, 5)).alive
    assert not await old.complete("j1", claim.attempt, {"type": "TrainCompleted"}, 6)
    assert (await new.heartbeat("j1", taken.attempt, 3)).alive


async def test_take_over_loses_to_a_fresh_heartbeat(sessions):
    owner, other = JobQueue(sessions, "owner"), JobQueue(sessions, "other")
    await owner.enqueue("j1", "train", None, {})
    claim = await owner.claim_next()
    lease, = await other.leases(("train",))
    await asyncio.sleep(0.01)
    assert (await owner.heartbeat("j1", claim.attempt, 2)).alive
    assert await other.take_over("j1", lease.attempt, lease.heartbeat_at, lease.takeovers) == (None, 0.0)


async def test_outbox_survives_a_crash_between_complete_and_done(sessions):
    dead, rescuer = JobQueue(sessions, "dead"), JobQueue(sessions, "rescuer")
    await dead.enqueue("j1", "train", None, {"model_id": "m"})
    claim = await dead.claim_next()
    terminal = {"type": "TrainCompleted", "event_id": "e-final"}
    assert await dead.complete("j1", claim.attempt, terminal, 9)
    lease, = await rescuer.leases(("train",))
    taken, _ = await rescuer.take_over("j1", lease.attempt, lease.heartbeat_at, lease.takeovers)
    assert taken is not None and taken.outbox == terminal
    assert (await rescuer.get("j1")).state == COMPLETING
    await rescuer.done("j1", taken.attempt)
    assert (await rescuer.get("j1")).state == DONE


async def test_cancel_of_a_queued_job_ends_it_before_it_starts(sessions):
    queue = JobQueue(sessions, "w1")
    await queue.enqueue("j1", "train", None, {})
    assert await queue.request_cancel("j1", "changed my mind") == QUEUED
    claim = await queue.cancel_queued("j1")
    assert claim is not None and claim.last_seq == 1
    assert await queue.claim_next() is None


async def test_cancel_of_a_running_job_reaches_its_heartbeat(sessions):
    queue = JobQueue(sessions, "w1")
    await queue.enqueue("j1", "train", None, {})
    claim = await queue.claim_next()
    assert await queue.request_cancel("j1", "stop") == RUNNING
    beat = await queue.heartbeat("j1", claim.attempt, 4)
    assert beat.alive and beat.cancel_requested and beat.cancel_reason == "stop"


async def test_cancel_before_the_request_arrives_is_remembered(sessions):
    queue = JobQueue(sessions, "w1")
    assert await queue.request_cancel("early", "too soon") is None
    assert await queue.enqueue("early", "train", None, {}) is None
    row = await queue.get("early")
    assert row.cancel_requested and row.state == DONE and row.last_seq == 0


async def test_released_job_is_claimed_again_with_a_new_attempt(sessions):
    queue = JobQueue(sessions, "w1")
    await queue.enqueue("j1", "train", None, {})
    claim = await queue.claim_next()
    await queue.release("j1", claim.attempt, 7)
    again = await JobQueue(sessions, "w2").claim_next()
    assert again is not None and again.attempt == claim.attempt + 1 and again.last_seq == 7



async def test_clean_hand_backs_never_count_against_the_retry_budget(sessions):
    """Ten rolling restarts used to fail a long job (every claim counted as a failed attempt)."""
    queue = JobQueue(sessions, "w1")
    await queue.enqueue("j1", "train", None, {})
    for _ in range(15):
        claim = await queue.claim_next()
        await queue.release("j1", claim.attempt, 3)
    claim = await queue.claim_next()
    assert claim.attempt == 16 and claim.takeovers == 0


async def test_takeovers_count_and_back_off_after_the_first(sessions):
    queue = JobQueue(sessions, "rescuer")
    await queue.enqueue("j1", "train", None, {})
    claim = await queue.claim_next()
    lease, = await queue.leases(("train",))
    first, wait = await queue.take_over("j1", lease.attempt, lease.heartbeat_at, lease.takeovers)
    assert first is not None and wait == 0 and first.takeovers == 1  # the first restart is at once
    lease, = await queue.leases(("train",))
    second, wait = await queue.take_over("j1", lease.attempt, lease.heartbeat_at, lease.takeovers)
    assert second is None and wait == 5.0  # the second waits in the queue
    row = await queue.get("j1")
    assert (row.state, row.takeovers, row.attempt, row.worker) == (QUEUED, 2, first.attempt + 1, None)
    assert await queue.claim_next() is None  # not before its time
    assert not (await queue.heartbeat("j1", first.attempt, 9)).alive  # the run it replaced is fenced out
    await queue._change("j1", not_before=None)
    third = await queue.claim_next()
    assert third is not None and third.takeovers == 2 and third.attempt == first.attempt + 2
    assert claim.attempt < first.attempt < third.attempt


async def test_an_owner_with_a_backlog_does_not_hold_back_another_owner(sessions):
    queue = JobQueue(sessions, "w1")
    for i in range(30):
        await queue.enqueue(f"flood-{i:02d}", "train", "alice", {})
    await queue.enqueue("bob-1", "train", "bob", {})
    await queue.enqueue("carol-1", "evaluate", "carol", {})
    started = [(await queue.claim_next()).job_id for _ in range(4)]
    # Alice's oldest first (everyone has nothing running), then Bob's and Carol's before Alice's second.
    assert started == ["flood-00", "bob-1", "carol-1", "flood-01"]


async def test_when_all_of_one_owners_jobs_end_at_once_the_other_owner_is_served_next(sessions):
    """With nothing running for anyone, the owner served longest ago goes first (round-robin), not the oldest job."""
    queue = JobQueue(sessions, "w1")
    for i in range(5):
        await queue.enqueue(f"a-{i}", "train", "alice", {})
    first, second = await queue.claim_next(), await queue.claim_next()
    assert (first.job_id, second.job_id) == ("a-0", "a-1")
    await queue.enqueue("b-0", "train", "bob", {})
    await queue.done(first.job_id, first.attempt)
    await queue.done(second.job_id, second.attempt)
    assert (await queue.claim_next()).job_id == "b-0"


async def test_a_queued_jobs_place_counts_the_turns_of_other_owners(sessions):
    from infra.db.queries import place_in_queue

    queue = JobQueue(sessions, "w1")
    for i in range(10):
        await queue.enqueue(f"a-{i}", "train", "alice", {})
    await queue.enqueue("b-0", "train", "bob", {})
    await queue.enqueue("b-1", "train", "bob", {})
    async with sessions() as session:
        # Bob's first waits for one turn of Alice's, his second for two; Alice's fourth for three of hers and two
        # of Bob's (he has no more).
        assert await place_in_queue(session, "lfz.", "b-0") == (1, 0)
        assert await place_in_queue(session, "lfz.", "b-1") == (3, 0)
        assert await place_in_queue(session, "lfz.", "a-3") == (5, 0)
    order = [(await queue.claim_next()).job_id for _ in range(5)]
    assert order.index("b-0") == 1 and order.index("b-1") == 3


async def test_a_run_offers_helpers_that_a_worker_of_the_run_never_claims_and_withdraws_them(sessions):
    leader, other = JobQueue(sessions, "leader"), JobQueue(sessions, "other")
    await leader.enqueue("j1", "train", "alice", {})
    await leader.claim_next(("train",))
    await leader.offer("j1", "train-join", "alice", {"j1+1.1": {"n": 1}, "j1+1.2": {"n": 2}})
    # The worker that runs the job (or helps it) does not join it twice; another does, once per helper.
    assert await leader.claim_next(("train-join",), busy={"j1"}) is None
    first = await other.claim_next(("train-join",), busy=set())
    assert first is not None and first.job_id in ("j1+1.1", "j1+1.2") and first.owner == "alice"
    assert await other.claim_next(("train-join",), busy={"j1"}) is None
    # A new run of the job offers its own helpers: the queued one of the run before is withdrawn.
    await leader.offer("j1", "train-join", "alice", {"j1+2.1": {"n": 1}})
    left = {"j1+1.1", "j1+1.2"} - {first.job_id}
    assert (await leader.get(left.pop())).state == DONE
    assert (await leader.get(first.job_id)).state == RUNNING, "a helper that is running is left to end with its run"
    assert (await leader.get("j1+2.1")).state == QUEUED
    await leader.withdraw("j1")
    assert (await leader.get("j1+2.1")).state == DONE
    assert (await leader.get("j1")).state == RUNNING, "withdrawing the helpers leaves the job itself alone"


async def test_withdrawing_the_helpers_of_a_job_spares_another_job_whose_id_it_begins(sessions):
    queue = JobQueue(sessions, "w")
    await queue.offer("j1", "train-join", None, {"j1+1.1": {}})
    await queue.offer("j10", "train-join", None, {"j10+1.1": {}})
    await queue.offer("j_", "train-join", None, {"j_+1.1": {}})
    await queue.withdraw("j1")
    assert (await queue.get("j1+1.1")).state == DONE
    assert (await queue.get("j10+1.1")).state == QUEUED and (await queue.get("j_+1.1")).state == QUEUED
    assert await queue.claim_next(("train-join",), busy={"j_"}) is not None  # j10's helper: `_` is no wildcard
