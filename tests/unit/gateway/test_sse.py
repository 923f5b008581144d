"""The SSE wire format."""

from gateway.sse import ServerSentEvent


def test_event_with_id_type_and_json_data():
    encoded = ServerSentEvent(data={"a": 1}, event="TrainProgress", id=7).encode()
    assert encoded == b'id: 7\nevent: TrainProgress\ndata: {"a":1}\n\n'


def test_multiline_data_becomes_one_data_line_each():
    encoded = ServerSentEvent(data="one\ntwo\r\nthree").encode()
    assert encoded == b"data: one\ndata: two\ndata: three\n\n"


def test_newlines_cannot_inject_fields_through_id_or_type():
    encoded = ServerSentEvent(data="x", event="a\ndata: evil", id="1\nid: 2").encode().decode()
    assert encoded.count("\n") == 4  # three fields and the blank line
    assert "id: 1 id: 2" in encoded


def test_comment_and_retry():
    assert ServerSentEvent(comment="keep-alive").encode() == b": keep-alive\n\n"
    assert ServerSentEvent(data="[DONE]", retry_ms=1500).encode() == b"retry: 1500\ndata: [DONE]\n\n"
