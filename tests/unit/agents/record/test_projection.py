"""The projection: facts become rows, the same fact twice changes nothing, and a replay rebuilds the same state."""

from sqlalchemy import select

from agents.record.projection import apply, apply_batch
from infra.db.queries import last_recorded
from infra.joblog import Recorded
from events import (
    CheckpointSaved,
    DatasetDeleted,
    DatasetUploaded,
    GenerationFailed,
    JobAccepted,
    JobsPruned,
    ModelDeleted,
    TrainCompleted,
    TrainFailed,
    TrainProgress,
    TrainStarted,
    ValidationCompleted,
)
from infra.db.tables import Checkpoint, Dataset, Job, JobEventRow, Model

ENVELOPE = dict(producer="test", owner="o1", kind="train")


def training_log(job_id="j1", model_id="m1"):
    seq = iter(range(1, 100))
    return [
        JobAccepted(job_id=job_id, seq=next(seq), **ENVELOPE, model_id=model_id, model_name="shakespeare",
                    tokenizer="char", hyperparameters={"preset": "tiny"}, dataset_key="datasets/d1"),
        TrainStarted(job_id=job_id, seq=next(seq), **ENVELOPE, model_id=model_id, worker="w1", max_iters=50,
                     num_parameters=1234, device="cpu", config={"d_model": 32}, vocab_size=40),
        TrainProgress(job_id=job_id, seq=next(seq), **ENVELOPE, step=25, max_iters=50, loss=2.5,
                      learning_rate=1e-3, tokens_per_s=900.0, elapsed_s=1.0, eta_s=1.0, progress=0.5),
        ValidationCompleted(job_id=job_id, seq=next(seq), **ENVELOPE, step=25, val_loss=2.6, best_val_loss=2.6),
        CheckpointSaved(job_id=job_id, seq=next(seq), **ENVELOPE, model_id=model_id, step=25,
                        key=f"models/{model_id}/checkpoints/step-25.pt", sha256="ab" * 32, bytes=100, is_best=True,
                        best_key=f"models/{model_id}/checkpoints/best.pt"),
        TrainCompleted(job_id=job_id, seq=next(seq), **ENVELOPE, model_id=model_id, final_step=50, val_loss=2.4,
                       best_val_loss=2.4, wall_s=2.0, num_parameters=1234,
                       checkpoint_key=f"models/{model_id}/checkpoints/step-50.pt"),
    ]


async def snapshot(sessions):
    async with sessions() as session:
        models = [(m.id, m.status, m.step, m.metrics, m.best_checkpoint, m.latest_checkpoint)
                  for m in (await session.execute(select(Model).order_by(Model.id))).scalars()]
        jobs = [(j.id, j.status, j.progress, j.step, j.last_seq, j.error)
                for j in (await session.execute(select(Job).order_by(Job.id))).scalars()]
        rows = [(r.job_id, r.seq, r.type) for r in (await session.execute(select(JobEventRow))).scalars()]
        checkpoints = [c.key for c in (await session.execute(select(Checkpoint))).scalars()]
    return models, jobs, sorted(rows), sorted(checkpoints)


async def test_a_training_log_projects_to_a_completed_model(sessions):
    async with sessions() as session:
        assert await apply_batch(session, [Recorded(e) for e in training_log()]) == 6
        await session.commit()
    async with sessions() as session:
        model = await session.get(Model, "m1")
        job = await session.get(Job, "j1")
        assert (model.status, model.step, model.owner, model.num_parameters) == ("completed", 50, "o1", 1234)
        assert model.best_checkpoint == "models/m1/checkpoints/best.pt"
        assert model.latest_checkpoint == "models/m1/checkpoints/step-50.pt"
        assert model.metrics["val_loss"] == 2.4
        assert (job.status, job.progress, job.last_seq, job.kind) == ("completed", 1.0, 6, "train")
        assert (await last_recorded(session, "j1"))[0] == 6


async def test_the_same_fact_twice_changes_nothing(sessions):
    log = training_log()
    async with sessions() as session:
        await apply_batch(session, [Recorded(e) for e in log[:3]])
        await session.commit()
    before = await snapshot(sessions)
    async with sessions() as session:
        assert not await apply(session, Recorded(log[2]))
        assert not await apply(session, Recorded(log[0]))
        await session.commit()
    assert await snapshot(sessions) == before


async def test_replaying_the_log_rebuilds_the_same_state(sessions, tmp_path):
    from tests.unit.agents.conftest import make_sessions

    log = training_log() + training_log("j2", "m2")[:2] + [
        TrainFailed(job_id="j2", seq=3, **ENVELOPE, model_id="m2", reason="dataset.text: the dataset is empty",
                    field="dataset.text"),
        DatasetUploaded(job_id="d1", seq=1, producer="gw", owner="o1", kind="dataset", dataset_id="d1", name="t",
                        key="datasets/d1", bytes=3, characters=3, preview="abc"),
        ModelDeleted(job_id="x1", seq=1, producer="gw", owner="o1", kind="delete", model_id="m1"),
    ]
    async with sessions() as session:
        for event in log:  # one transaction per fact, as the record agent might
            await apply(session, Recorded(event))
            await session.commit()
    replayed = await make_sessions(tmp_path / "replay.db")
    async with replayed() as session:
        await apply_batch(session, [Recorded(e) for e in log])
        await session.commit()
    assert await snapshot(replayed) == await snapshot(sessions)
    async with replayed() as session:
        assert (await session.get(Model, "m1")).status == "deleted"
        assert (await session.get(Model, "m2")).status == "failed"
        assert (await session.get(Job, "j2")).error == "dataset.text: the dataset is empty"
        assert (await session.get(Dataset, "d1")).characters == 3
        assert await session.get(Job, "d1") is None  # uploads are not jobs


def test_partitions_merge_in_time_order_keeping_each_partitions_own_order():
    from datetime import timedelta

    from infra.joblog import in_time_order

    start = training_log()[0].time
    training = [fact.model_copy(update={"time": start + timedelta(seconds=i)})
                for i, fact in enumerate(training_log("train-1", "m1"))]
    evaluation = JobAccepted(job_id="eval-1", seq=1, producer="test", owner="o1", kind="evaluate", model_id="m1",
                             model_name="shakespeare", tokenizer="char", hyperparameters={}, dataset_key=None,
                             time=start + timedelta(seconds=len(training)))
    late_first = [Recorded(evaluation, 0, 0)]  # partition 0: read first, happened last
    on_one = [Recorded(fact, 1, offset) for offset, fact in enumerate(training)]
    on_one[2], on_one[3] = on_one[3], on_one[2]  # a partition's own order wins over the times within it
    merged = in_time_order([late_first, on_one])
    assert [(r.partition, r.offset) for r in merged] == [(1, 0), (1, 1), (1, 3), (1, 2), (1, 4), (1, 5), (0, 0)]


def checkpoint(seq: int, step: int, is_best: bool, pruned: tuple[str, ...] = (), job_id: str = "j1") -> CheckpointSaved:
    return CheckpointSaved(job_id=job_id, seq=seq, **ENVELOPE, model_id="m1", step=step,
                           key=f"models/m1/checkpoints/step-{step}.pt", sha256="ab" * 32, bytes=100, is_best=is_best,
                           best_key="models/m1/checkpoints/best.pt" if is_best else None, pruned=list(pruned))


async def test_exactly_one_checkpoint_is_the_best_and_pruned_ones_are_gone(sessions):
    """Regression: every checkpoint kept is_best once it had been the best, and `models show` named the oldest."""
    log = training_log()[:2] + [checkpoint(3, 25, True), checkpoint(4, 50, True), checkpoint(5, 75, False),
                                checkpoint(6, 100, True, pruned=("models/m1/checkpoints/step-75.pt",))]
    async with sessions() as session:
        await apply_batch(session, [Recorded(e) for e in log])
        await session.commit()
    async with sessions() as session:
        rows = {c.step: c.is_best for c in (await session.execute(select(Checkpoint))).scalars()}
        model = await session.get(Model, "m1")
    assert rows == {25: False, 50: False, 100: True}  # 75 was pruned: its object is gone, so is its row
    assert model.best_step == 100 and model.best_checkpoint == "models/m1/checkpoints/best.pt"
    assert model.latest_checkpoint == "models/m1/checkpoints/step-100.pt"


async def test_a_continued_model_shows_its_latest_runs_hyperparameters(sessions):
    more = JobAccepted(job_id="j2", seq=1, **ENVELOPE, model_id="m1", model_name="shakespeare", tokenizer="char",
                       hyperparameters={"preset": "tiny", "max_iters": 300}, dataset_key="datasets/d1", resume=True)
    async with sessions() as session:
        await apply_batch(session, [Recorded(e) for e in [*training_log(), more]])
        await session.commit()
    async with sessions() as session:
        model = await session.get(Model, "m1")
    assert model.hyperparameters == {"preset": "tiny", "max_iters": 300} and model.train_job_id == "j2"


async def test_pruned_jobs_leave_the_listing_only_their_owners_finished_ones(sessions):
    theirs = JobAccepted(job_id="g2", seq=1, producer="test", owner="o2", kind="generate")
    running = JobAccepted(job_id="g3", seq=1, producer="test", owner="o1", kind="generate")
    done = [JobAccepted(job_id="g1", seq=1, producer="test", owner="o1", kind="generate"),
            GenerationFailed(job_id="g1", seq=2, producer="test", owner="o1", kind="generate", reason="no"),
            GenerationFailed(job_id="g2", seq=2, producer="test", owner="o2", kind="generate", reason="no")]
    prune = JobsPruned(job_id="p1", seq=1, producer="test", owner="o1", kind="delete", job_ids=["g1", "g2", "g3"])
    async with sessions() as session:
        await apply_batch(session, [Recorded(e) for e in [theirs, running, *done, prune]])
        await session.commit()
    async with sessions() as session:
        left = sorted(j.id for j in (await session.execute(select(Job))).scalars())
        logged = {r.job_id for r in (await session.execute(select(JobEventRow))).scalars()}
    assert left == ["g2", "g3"]  # another owner's, and one not finished, stay
    assert "g1" not in logged and {"g2", "g3", "p1"} <= logged


async def test_a_deleted_dataset_leaves_the_listing(sessions):
    uploaded = DatasetUploaded(job_id="d1", seq=1, producer="test", owner="o1", kind="dataset", dataset_id="d1",
                               name="t.txt", key="datasets/d1", bytes=3, characters=3, preview="abc", sha256="cd" * 32)
    deleted = DatasetDeleted(job_id="x1", seq=1, producer="test", owner="o1", kind="delete", dataset_id="d1")
    async with sessions() as session:
        await apply_batch(session, [Recorded(uploaded)])
        await session.commit()
        assert (await session.get(Dataset, "d1")).sha256 == "cd" * 32
        await apply_batch(session, [Recorded(deleted)])
        await session.commit()
    async with sessions() as session:
        assert await session.get(Dataset, "d1") is None


async def test_a_fact_stating_another_owner_or_kind_for_a_job_is_turned_away_unrecorded(sessions):
    """A fact appended to a victim's log under another owner once ended the victim's job and opened its log to the
    sender (whose one fact in it made the log visible to them)."""
    async with sessions() as session:
        await apply_batch(session, [Recorded(e) for e in training_log()[:3]])
        await session.commit()
    hostile = [
        TrainFailed(job_id="j1", seq=4, producer="mallory", owner="o2", kind="train", reason="gotcha"),
        GenerationFailed(job_id="j1", seq=4, producer="mallory", owner="o1", kind="generate", reason="gotcha"),
        DatasetUploaded(job_id="j1", seq=1, producer="mallory", owner="o1", kind="dataset", dataset_id="j1",
                        name="x", key="datasets/j1", bytes=1, characters=1, preview="x"),
    ]
    turned_away: list = []
    async with sessions() as session:
        assert await apply_batch(session, [Recorded(e) for e in hostile], turned_away) == 0
        await session.commit()
    assert [recorded.event for recorded, _ in turned_away] == hostile
    assert all(reason.startswith(("owner:", "job_id:")) for _, reason in turned_away)
    async with sessions() as session:
        job = await session.get(Job, "j1")
        assert (job.status, job.last_seq, job.owner) == ("running", 3, "o1")
        owners = set((await session.execute(select(JobEventRow.owner).where(JobEventRow.job_id == "j1"))).scalars())
        assert owners == {"o1"} and await session.get(Dataset, "j1") is None


async def test_deletes_from_another_owner_change_nothing(sessions):
    upload = DatasetUploaded(job_id="d9", seq=1, producer="gw", owner="o1", kind="dataset", dataset_id="d9", name="n",
                             key="datasets/d9", bytes=1, characters=1, preview="x")
    async with sessions() as session:
        await apply_batch(session, [Recorded(e) for e in [*training_log(), upload]])
        await apply_batch(session, [
            Recorded(ModelDeleted(job_id="del-1", seq=1, producer="gw", owner="o2", kind="delete", model_id="m1")),
            Recorded(DatasetDeleted(job_id="del-2", seq=1, producer="gw", owner="o2", kind="delete", dataset_id="d9")),
        ])
        await session.commit()
    async with sessions() as session:
        assert (await session.get(Model, "m1")).status == "completed"
        assert await session.get(Dataset, "d9") is not None
