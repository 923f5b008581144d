"""The OpenAI-compatible wire format: chat prompts and streamed chunks, from a fake generation in flight."""

import json

from gateway.live import FeedEvent
from gateway.openai_compat import ChatMessage, chat_prompt, stream_chunks


class FakeCall:
    request_id = "r1"

    def __init__(self, *events: tuple[str, dict]):
        self._events = [FeedEvent("r1", i + 1, t, None, json.dumps(p)) for i, (t, p) in enumerate(events)]

    async def events(self):
        for event in self._events:
            yield event


def decode(chunks: list[bytes]) -> list:
    out = []
    for chunk in chunks:
        text = chunk.decode()
        assert text.startswith("data: ") and text.endswith("\n\n") and "event:" not in text
        data = text[len("data: "):-2]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


GENERATION = (
    ("JobAccepted", {}),
    ("TokensGenerated", {"sequence": 0, "index": 0, "text": "Hel"}),
    ("TokensGenerated", {"sequence": 0, "index": 3, "text": "lo"}),
    ("GenerationCompleted", {"completions": [{"index": 0, "text": "Hello", "completion_tokens": 2,
                                              "finish_reason": "length"}],
                             "prompt_tokens": 3, "completion_tokens": 2}),
)


async def test_completion_chunks_then_usage_then_done():
    chunks = [c.encode() async for c in stream_chunks(False, FakeCall(*GENERATION), "m1", 1, include_usage=True)]
    data = decode(chunks)
    assert data[-1] == "[DONE]"
    texts = [d["choices"][0]["text"] for d in data[:-1] if d["choices"]]
    assert "".join(texts) == "Hello"
    assert all(d["object"] == "text_completion" and d["id"] == "cmpl-r1" and d["model"] == "m1" for d in data[:-1])
    assert data[-3]["choices"][0]["finish_reason"] == "length"
    assert data[-2]["choices"] == [] and data[-2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2,
                                                                 "total_tokens": 5}


async def test_chat_chunks_start_with_the_role_and_carry_deltas():
    data = decode([c.encode() async for c in stream_chunks(True, FakeCall(*GENERATION), "m1", 1, False)])
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in data[:-1]) == "Hello"
    assert data[-2]["choices"][0]["finish_reason"] == "length" and data[-2]["object"] == "chat.completion.chunk"


async def test_failure_becomes_an_error_chunk():
    failed = FakeCall(("GenerationFailed", {"reason": "model has no checkpoint", "field": None}))
    data = decode([c.encode() async for c in stream_chunks(False, failed, "m1", 1, False)])
    assert data[0]["error"]["message"] == "model has no checkpoint" and data[-1] == "[DONE]"


def test_chat_messages_become_a_plain_prompt():
    messages = [ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content=[{"type": "text", "text": "Hi"}])]
    assert chat_prompt(messages) == "system: Be brief.\nuser: Hi\nassistant:"


def test_a_field_openai_has_and_this_server_does_not_is_refused_unless_it_asks_for_the_default():
    import pytest

    from gateway.errors import ApiError
    from gateway.openai_compat import CompletionRequest, check_openai_fields

    body = {"model": "m", "prompt": "a", "logprobs": None, "echo": False, "user": "u1", "presence_penalty": 0}
    check_openai_fields(body)
    assert body == {"model": "m", "prompt": "a"}  # the defaults and the harmless ones are dropped
    CompletionRequest.model_validate(body)
    for field, value in (("logprobs", 5), ("echo", True), ("best_of", 3), ("num_sequences", 2)):
        with pytest.raises(ApiError) as err:
            check_openai_fields({"model": "m", field: value})
        assert err.value.status == 400 and err.value.field == field
    with pytest.raises(Exception, match="Extra inputs"):
        CompletionRequest.model_validate({"model": "m", "frobnicate": 1})  # any other unknown field: refused too
    with pytest.raises(Exception, match="less than or equal to 2"):
        CompletionRequest.model_validate({"model": "m", "temperature": 3})  # OpenAI's limits


def test_errors_under_v1_come_in_openai_shape_and_the_rest_in_ours():
    from gateway.errors import error_response

    openai = json.loads(error_response(422, "invalid", "model: bad", "model", path="/v1/completions").body)
    assert openai == {"error": {"message": "model: bad", "type": "invalid_request_error", "param": "model",
                                "code": "invalid"}}
    assert error_response(422, "invalid", "x", path="/v1/completions").status_code == 400
    assert error_response(401, "unauthorized", "x", path="/v1/models").status_code == 401
    assert json.loads(error_response(401, "unauthorized", "x", path="/v1/models").body)["error"]["type"] == \
        "authentication_error"
    ours = json.loads(error_response(422, "invalid", "model: bad", "model", path="/api/v1/models").body)
    assert ours == {"error": {"code": "invalid", "message": "model: bad", "field": "model"}}
