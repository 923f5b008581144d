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
