"""The registry in the projection: versions numbered per owner and name, aliases that move and resolve, the serving
choice, and a replay into an empty database that rebuilds all of it (lineage included)."""

from sqlalchemy import select

from agents.record.projection import apply, apply_batch
from events import (
    CheckpointSaved,
    JobAccepted,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelDeleted,
    ServingCheckpointChosen,
)
from infra.db import queries
from infra.db.tables import Model, ModelAlias
from infra.joblog import Recorded

GW = dict(producer="gw", kind="registry")


def run(job_id: str, model_id: str, name: str = "bard", owner: str = "o1", parent_id: str | None = None):
    """A version's first facts: accepted, then a checkpoint at step 10 (best) and 20 (latest)."""
    envelope = dict(producer="test", owner=owner, kind="train")
    return [
        JobAccepted(job_id=job_id, seq=1, **envelope, model_id=model_id, model_name=name, tokenizer="char",
                    hyperparameters={"preset": "tiny"}, dataset_key="datasets/d1", parent_id=parent_id),
        CheckpointSaved(job_id=job_id, seq=2, **envelope, model_id=model_id, step=10,
                        key=f"models/{model_id}/checkpoints/step-10.pt", sha256="ab" * 32, bytes=1, is_best=True,
                        best_key=f"models/{model_id}/checkpoints/best.pt"),
        CheckpointSaved(job_id=job_id, seq=3, **envelope, model_id=model_id, step=20,
                        key=f"models/{model_id}/checkpoints/step-20.pt", sha256="ab" * 32, bytes=1, is_best=False),
    ]


def alias(alias: str, model_id: str, version: int, name: str = "bard", owner: str = "o1", job_id: str = ""):
    return ModelAliasSet(job_id=job_id or f"a-{alias}-{model_id}", seq=1, owner=owner, **GW, name=name, alias=alias,
                         model_id=model_id, version=version)


async def record(sessions, facts):
    async with sessions() as session:
        for fact in facts:
            await apply(session, Recorded(fact))
        await session.commit()


async def resolve(sessions, ref, owner="o1"):
    async with sessions() as session:
        found = await queries.find_model(session, owner, ref)
    return found.id if found is not None else None


async def test_versions_are_numbered_per_owner_and_name_in_log_order_and_keep_their_parent(sessions):
    await record(sessions, run("j1", "m1") + run("j2", "m2", parent_id="m1") + run("j3", "x1", owner="o2")
                 + run("j4", "m3", name="other") + run("j5", "m4"))
    async with sessions() as session:
        rows = {m.id: (m.owner, m.name, m.version, m.parent_id)
                for m in (await session.execute(select(Model))).scalars()}
    assert rows == {"m1": ("o1", "bard", 1, None), "m2": ("o1", "bard", 2, "m1"), "x1": ("o2", "bard", 1, None),
                    "m3": ("o1", "other", 1, None), "m4": ("o1", "bard", 3, None)}
    assert await resolve(sessions, "bard") == "m4"  # the newest
    assert await resolve(sessions, "bard/2") == "m2"
    assert await resolve(sessions, "bard/9") is None
    assert await resolve(sessions, "bard", owner="o2") == "x1"
    assert await resolve(sessions, "bard/2", owner="o2") is None  # another owner's versions do not exist


async def test_a_deleted_version_keeps_its_number_taken(sessions):
    await record(sessions, run("j1", "m1") + [ModelDeleted(job_id="d", seq=1, owner="o1", producer="gw",
                                                           kind="delete", model_id="m1")] + run("j2", "m2"))
    async with sessions() as session:
        assert (await session.get(Model, "m2")).version == 2
    assert await resolve(sessions, "bard/1") is None
    assert await resolve(sessions, "bard") == "m2"


async def test_an_alias_moves_resolves_and_goes_with_its_version(sessions):
    await record(sessions, run("j1", "m1") + run("j2", "m2") + [alias("champion", "m1", 1)])
    assert await resolve(sessions, "bard@champion") == "m1"
    await record(sessions, [alias("champion", "m2", 2)])
    assert await resolve(sessions, "bard@champion") == "m2"
    async with sessions() as session:  # one row per alias: moving rewrites it
        assert len((await session.execute(select(ModelAlias))).scalars().all()) == 1
        assert await queries.aliases_of(session, ["m1", "m2"]) == {"m2": ["champion"]}
    await record(sessions, [ModelAliasRemoved(job_id="r1", seq=1, owner="o1", **GW, name="bard", alias="champion")])
    assert await resolve(sessions, "bard@champion") is None
    await record(sessions, [alias("staging", "m2", 2, job_id="s2"),
                            ModelDeleted(job_id="d2", seq=1, owner="o1", producer="gw", kind="delete", model_id="m2")])
    assert await resolve(sessions, "bard@staging") is None


async def test_an_alias_fact_that_does_not_fit_its_version_changes_nothing(sessions):
    await record(sessions, run("j1", "m1") + run("j2", "x1", owner="o2") + run("j3", "m3", name="other"))
    await record(sessions, [
        alias("champion", "x1", 1),  # another owner's version
        alias("champion", "m3", 1),  # a version of another name
        alias("champion", "m1", 2),  # the wrong number
    ])
    assert await resolve(sessions, "bard@champion") is None
    async with sessions() as session:
        assert (await session.execute(select(ModelAlias))).scalars().all() == []


async def test_the_serving_choice_picks_the_checkpoint_and_only_its_owner_changes_it(sessions):
    await record(sessions, run("j1", "m1"))
    async with sessions() as session:
        assert queries.serving_checkpoint(await session.get(Model, "m1")) == "models/m1/checkpoints/best.pt"
    await record(sessions, [ServingCheckpointChosen(job_id="c1", seq=1, owner="o2", **GW, model_id="m1",
                                                    checkpoint="last")])
    async with sessions() as session:
        assert (await session.get(Model, "m1")).serve == "best"
    await record(sessions, [ServingCheckpointChosen(job_id="c2", seq=1, owner="o1", **GW, model_id="m1",
                                                    checkpoint="last")])
    async with sessions() as session:
        model = await session.get(Model, "m1")
        assert queries.serving_checkpoint(model) == "models/m1/checkpoints/step-20.pt"
        before = queries.serving_version(model)
        model.serve = "best"
        assert queries.serving_version(model) != before  # a generation cache sees the change


async def test_a_replay_into_an_empty_database_rebuilds_versions_lineage_and_aliases(sessions, tmp_path):
    from tests.unit.agents.conftest import make_sessions

    log = (run("j1", "m1") + run("j2", "m2", parent_id="m1") + [alias("champion", "m1", 1), alias("champion", "m2", 2,
           job_id="a2"), alias("staging", "m1", 1)] + run("j3", "m3", parent_id="m2")
           + [ServingCheckpointChosen(job_id="c1", seq=1, owner="o1", **GW, model_id="m3", checkpoint="last")])
    await record(sessions, log)
    replayed = await make_sessions(tmp_path / "replay.db")
    async with replayed() as session:
        await apply_batch(session, [Recorded(e) for e in log])
        await session.commit()

    async def state(of):
        async with of() as session:
            models = [(m.id, m.version, m.parent_id, m.serve) for m in
                      (await session.execute(select(Model).order_by(Model.id))).scalars()]
            aliases = await queries.aliases_of(session, ["m1", "m2", "m3"])
        return models, aliases

    assert await state(replayed) == await state(sessions)
    assert await state(replayed) == ([("m1", 1, None, "best"), ("m2", 2, "m1", "best"), ("m3", 3, "m2", "last")],
                                     {"m1": ["staging"], "m2": ["champion"]})


async def test_version_numbers_are_given_once_each_and_go_on_above_the_recorded_ones(sessions):
    import asyncio
    from types import SimpleNamespace

    from agents.intake import allocate_version

    runtime = SimpleNamespace(sessions=sessions)
    numbers = await asyncio.gather(*(allocate_version(runtime, "o1", "bard") for _ in range(5)))
    assert sorted(numbers) == [1, 2, 3, 4, 5]
    assert await allocate_version(runtime, "o2", "bard") == 1  # another owner's name is another name
    # A database rebuilt from the log holds versions its counters never gave: numbering goes on above them.
    await record(sessions, [f.model_copy(update={"version": 9}) if isinstance(f, JobAccepted) else f
                            for f in run("j9", "m9", name="replayed")])
    async with sessions() as session:
        assert (await session.get(Model, "m9")).version == 9  # the fact's number, not the projection's
    assert await allocate_version(runtime, "o1", "replayed") == 10
