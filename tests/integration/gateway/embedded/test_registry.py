"""The registry over HTTP: versions, aliases that move and resolve in every route, the serving choice, compare."""

from tests.integration.gateway.embedded.test_api import create_model, wait_status


async def two_versions(client):
    first = await create_model(client)
    await wait_status(client, first["model_id"])
    more = await client.post(f"/api/v1/models/{first['model_id']}/train", json={"hyperparameters": {"MAX_ITERS": 10}})
    assert more.status_code == 202, more.text
    await wait_status(client, more.json()["model_id"])
    return first["model_id"], more.json()["model_id"]


async def test_an_alias_points_at_a_version_moves_and_is_removed(client, agents):
    v1, v2 = await two_versions(client)
    put = await client.put("/api/v1/models/m1/aliases/champion", json={"version": 1})
    assert put.status_code == 200 and put.json() == {"name": "m1", "alias": "champion", "version": 1, "model_id": v1}
    assert (await client.get("/api/v1/models/m1@champion")).json()["id"] == v1
    generated = await client.post("/api/v1/models/m1@champion/generate", json={"prompt": "a", "max_tokens": 2})
    assert generated.status_code == 200 and agents.commands[-1].model_id == v1
    completion = await client.post("/v1/completions", json={"model": "m1@champion", "prompt": "a", "max_tokens": 2})
    assert completion.status_code == 200 and agents.commands[-1].model_id == v1

    moved = await client.put("/api/v1/models/m1/aliases/champion", json={"version": 2})
    assert moved.json()["model_id"] == v2
    assert (await client.get("/api/v1/models/m1@champion")).json()["id"] == v2
    listing = (await client.get("/api/v1/models/m1/versions")).json()
    assert listing["aliases"] == {"champion": 2}
    assert [(v["version"], v["parent_id"], v["aliases"]) for v in listing["items"]] == [(1, None, []),
                                                                                       (2, v1, ["champion"])]
    gone = await client.delete("/api/v1/models/m1/aliases/champion")
    assert gone.status_code == 200 and gone.json()["version"] is None
    assert (await client.get("/api/v1/models/m1@champion")).status_code == 404
    assert (await client.delete("/api/v1/models/m1/aliases/champion")).status_code == 404


async def test_alias_requests_that_name_nothing_are_clear_4xx(client, agents):
    await two_versions(client)
    cases = [
        (("/api/v1/models/m1/aliases/champion", {"version": 7}), 404, "version"),
        (("/api/v1/models/m1/aliases/3x", {"version": 1}), 422, "alias"),  # a number-like alias reads as a version
        (("/api/v1/models/m1/aliases/champion", {"version": 0}), 422, "version"),
        (("/api/v1/models/m1/aliases/champion", {"version": 2**70}), 422, "version"),  # no such integer column
        (("/api/v1/models/m1/aliases/champion", {"version": 1, "extra": 1}), 422, "extra"),
        (("/api/v1/models/nobody/aliases/champion", {"version": 1}), 404, "version"),
    ]
    for (path, body), status, field in cases:
        answer = await client.put(path, json=body)
        assert (answer.status_code, answer.json()["error"]["field"]) == (status, field), (path, answer.text)
    assert (await client.get("/api/v1/models/nobody/versions")).status_code == 404
    for ref in ("m1/99999999999999999999", "m1/0", "m1@nothing"):
        assert (await client.get(f"/api/v1/models/{ref}")).status_code == 404, ref


async def test_the_serving_checkpoint_is_the_versions_choice(client, agents):
    v1, _ = await two_versions(client)
    chosen = await client.put(f"/api/v1/models/{v1}/serving", json={"checkpoint": "last"})
    assert chosen.status_code == 200 and chosen.json()["serve"] == "last"
    assert (await client.get(f"/api/v1/models/{v1}")).json()["serve"] == "last"
    bad = await client.put(f"/api/v1/models/{v1}/serving", json={"checkpoint": "first"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "checkpoint"


async def test_compare_marks_exactly_the_differing_hyperparameters(client, agents):
    v1, v2 = await two_versions(client)
    answer = await client.get("/api/v1/compare", params={"runs": "m1/1,m1/2"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["id"] for r in body["runs"]] == [v1, v2]
    assert body["differences"] == ["train.max_iters"]
    assert body["parameters"]["train.max_iters"] == [20, 10]
    assert body["parameters"]["preset"] == ["tiny", "tiny"]
    assert [step for step, _, _ in body["runs"][0]["history"]["train"]] == [1, 2, 3]
    for runs, status in (("m1/1", 422), ("m1/1,nope", 404), (",".join(["m1"] * 11), 422)):
        refused = await client.get("/api/v1/compare", params={"runs": runs})
        assert (refused.status_code, refused.json()["error"]["field"]) == (status, "runs")


async def test_a_sweep_request_is_checked_where_it_enters(client, agents):
    base = {"name": "lr", "dataset": {"text": "to be or not to be, that is the question " * 5},
            "hyperparameters": {"preset": "tiny"}, "space": {"learning_rate": {"min": 1e-4, "max": 1e-2,
                                                                               "scale": "log"}}}
    cases = [
        ({"space": {"learnig_rate": {"values": [0.1]}}}, "space.learnig_rate"),  # not a hyperparameter
        ({"space": {"dropout": {"values": [0.5, 2.0]}}, "method": "grid"}, "space.dropout"),  # 2.0 cannot train
        ({"space": {"learning_rate": {"min": 1e-4, "max": 1e-2}}, "method": "grid"}, "space.learning_rate"),
        ({"space": {"learning_rate": {"min": 0, "max": 1, "scale": "log"}}}, "space.learning_rate"),
        ({"space": {}}, "space"),
        ({"early_stopping": {"rule": "sometimes"}}, "early_stopping.rule"),
        ({"alias": "3"}, "alias"),
        ({"name": "a@b"}, "name"),
        ({"trials": 101}, "trials"),
    ]
    for change, field in cases:
        answer = await client.post("/api/v1/sweeps", json={**base, **change})
        assert answer.status_code == 422 and answer.json()["error"]["field"] == field, (change, answer.text)
    started = await client.post("/api/v1/sweeps", json={**base, "trials": 3})
    assert started.status_code == 202, started.text
    sweep_id = started.json()["job_id"]
    assert started.headers["location"] == f"/api/v1/sweeps/{sweep_id}"
    command = agents.commands[-1]
    assert (command.type, command.trials, command.model_name) == ("SweepRequested", 3, "lr")
    shown = await client.get(f"/api/v1/sweeps/{sweep_id}")
    assert shown.status_code == 200 and (shown.json()["kind"], shown.json()["model_name"]) == ("sweep", "lr")
    listed = (await client.get("/api/v1/sweeps")).json()
    assert [s["id"] for s in listed["items"]] == [sweep_id]
    assert (await client.get("/api/v1/sweeps/nope")).status_code == 404
