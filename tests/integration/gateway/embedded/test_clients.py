"""The official `openai` client and the gateway's own client, unchanged, against the served gateway."""

import asyncio

import httpx
import openai
import pytest

from cli.client import ApiError, Client


async def trained_model(base_url: str, name: str = "m1") -> dict:
    def run() -> dict:
        with Client(base_url) as client:
            created = client.create_model(name, text="abc " * 50, hyperparameters={"preset": "tiny", "max_iters": 20})
            events = list(client.follow_job(created["job_id"]))
            assert events[-1]["type"] == "TrainCompleted"
            return created

    return await asyncio.to_thread(run)


async def test_openai_client_lists_completes_and_streams(base_url, agents):
    await trained_model(base_url)
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="anything")
    async with httpx.AsyncClient(base_url=base_url) as rest:
        aliased = await rest.put("/api/v1/models/m1/aliases/champion", json={"version": 1})
        assert aliased.status_code == 200, aliased.text
    models = await client.models.list()
    assert [m.id for m in models.data] == ["m1", "m1/1", "m1@champion"]
    completion = await client.completions.create(model="m1@champion", prompt="Once", max_tokens=5, temperature=0)
    assert completion.choices[0].text == "hello" and completion.usage.completion_tokens == 5
    stream = await client.completions.create(model="m1", prompt="Once", max_tokens=5, stream=True)
    assert "".join([chunk.choices[0].text async for chunk in stream if chunk.choices]) == "hello"
    chat = await client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=4)
    assert chat.choices[0].message.content == "hell" and chat.choices[0].message.role == "assistant"
    chat_stream = await client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True,
        stream_options={"include_usage": True})
    pieces, usage = [], None
    async for chunk in chat_stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == "hel" and usage.completion_tokens == 3
    assert agents.commands[-1].prompt == "user: hi\nassistant:"
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(model="nope", prompt="x")


async def test_gateway_client_round_trip(base_url, agents):
    await asyncio.to_thread(_round_trip, base_url)  # a sync client: the server's loop must keep running


def _round_trip(base_url: str) -> None:
    with Client(base_url) as client:
        assert client.health()["status"] == "ok"
        dataset = client.upload_dataset("hello world " * 10, name="greetings")
        created = client.create_model("m2", dataset_id=dataset["id"], hyperparameters={"preset": "tiny"})
        job = client.wait_for_job(created["job_id"], timeout_s=10)
        assert job["status"] == "completed"
        assert client.model_status(created["model_id"])["status"] == "completed"
        assert [e["seq"] for e in client.job_log(created["job_id"], after=2)] == [3, 4, 5, 6]
        assert client.generate(created["model_id"], "hi", max_length=3)["text"] == "hel"
        streamed = list(client.generate_stream(created["model_id"], "hi", max_length=2))
        assert [e["type"] for e in streamed][-1] == "GenerationCompleted"
        assert client.evaluate(created["model_id"], prompts=["a"], wait=True)["status"] == "completed"
        assert client.list_jobs(kind="evaluate")["total"] == 1
        assert client.list_models(name="m2")["total"] == 1
        with pytest.raises(ApiError) as error:
            client.create_model("m2@x", text="abc")
        assert (error.value.status, error.value.field) == (422, "name")
        with pytest.raises(ApiError) as error:
            client.get_model("missing")
        assert error.value.status == 404
        assert client.delete_model(created["model_id"])["status"] == "deleted"


def test_follow_job_skips_keep_alive_comments_between_events():
    """httpx-sse hands a keep-alive comment on as an event with no data and the previous event's id."""
    body = (b'id: 1\nevent: JobAccepted\ndata: {"seq":1,"type":"JobAccepted"}\n\n'
            b": keep-alive\n\n"
            b'id: 2\nevent: TrainCompleted\ndata: {"seq":2,"type":"TrainCompleted"}\n\n')

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with Client("http://gateway", transport=httpx.MockTransport(answer)) as client:
        assert [e["seq"] for e in client.follow_job("j1")] == [1, 2]


def _stream(*events: tuple[int, str]) -> bytes:
    return b"".join(f'id: {seq}\nevent: {kind}\ndata: {{"seq":{seq},"type":"{kind}"}}\n\n'.encode()
                    for seq, kind in events)


def test_follow_job_waits_out_a_gateway_that_restarts_or_has_lost_its_database():
    """Regression: a 503 (the gateway's database down) ended `lfz events --follow` at once, and a gateway restart
    longer than ten quick retries ended it too."""
    answers = iter([
        httpx.Response(200, content=_stream((1, "JobAccepted")), headers={"content-type": "text/event-stream"}),
        httpx.ConnectError("connection refused"),  # the gateway restarting
        httpx.ConnectError("connection refused"),
        httpx.Response(503, json={"error": {"code": "database_unavailable", "message": "database is unavailable"}}),
        httpx.Response(503, json={"error": {"code": "database_unavailable", "message": "database is unavailable"}}),
        httpx.Response(200, content=_stream((2, "TrainCompleted")), headers={"content-type": "text/event-stream"}),
    ])
    resumed_from: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        resumed_from.append(request.headers.get("last-event-id"))
        reply = next(answers)
        if isinstance(reply, Exception):
            raise reply
        return reply

    with Client("http://gateway", transport=httpx.MockTransport(answer)) as client:
        assert [e["seq"] for e in client.follow_job("j1", retry_delay_s=0.01)] == [1, 2]
    assert resumed_from == [None, "1", "1", "1", "1", "1"]


def test_follow_job_gives_up_after_its_patience_and_raises_other_errors_at_once():
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with Client("http://gateway", transport=httpx.MockTransport(unreachable)) as client:
        with pytest.raises(ApiError) as error:
            list(client.follow_job("j1", patience_s=0.2, retry_delay_s=0.01))
    assert (error.value.status, error.value.code) == (503, "stream_lost")

    calls = []

    def missing(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no job j1"}})

    with Client("http://gateway", transport=httpx.MockTransport(missing)) as client:
        with pytest.raises(ApiError) as error:
            list(client.follow_job("j1", retry_delay_s=0.01))
    assert error.value.status == 404 and len(calls) == 1
