"""The message contract: the documented messages decode, bad ones become DecodeErrors naming the field."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    DecodeError,
    GenerateRequested,
    TrainProgress,
    TrainRequested,
    dead_letter,
    decode_command,
    decode_event,
    id_from_position,
)
from events.schemas import main as schemas_main

DOCUMENTED_TRAIN = {
    "type": "TrainRequested",
    "schema_version": 1,
    "model_name": "m1",
    "dataset": {"text": "hello world"},
    "tokenizer": "char",
    "hyperparameters": {"preset": "tiny", "max_iters": 50},
}
DOCUMENTED_GENERATE = {
    "type": "GenerateRequested",
    "schema_version": 1,
    "request_id": "r1",
    "model_name": "m1",
    "prompt": "Once",
    "max_tokens": 40,
}


def test_documented_train_message_decodes_with_defaults():
    command = decode_command(json.dumps(DOCUMENTED_TRAIN).encode(), (TrainRequested,))
    assert isinstance(command, TrainRequested)
    assert command.hyperparameters == {"preset": "tiny", "max_iters": 50}
    assert command.dataset.text == "hello world"
    assert len(command.job_id) == 32  # one was made up


def test_documented_generate_message_decodes():
    command = decode_command(json.dumps(DOCUMENTED_GENERATE), (GenerateRequested,))
    assert isinstance(command, GenerateRequested)
    assert (command.job_id, command.max_tokens, command.num_sequences) == ("r1", 40, 1)


def test_missing_job_id_is_derived_from_the_position_so_redelivery_names_the_same_job():
    default = id_from_position("lfz.train.requested", 2, 17)
    first = decode_command(json.dumps(DOCUMENTED_TRAIN), default_id=default)
    second = decode_command(json.dumps(DOCUMENTED_TRAIN), default_id=default)
    assert first.job_id == second.job_id == default
    assert id_from_position("lfz.train.requested", 2, 18) != default


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (json.dumps({"type": "Bogus"}).encode(), "type", "unknown message type"),
        (json.dumps({**DOCUMENTED_TRAIN, "dataset": {}}).encode(), "dataset", "exactly one"),
        (json.dumps({**DOCUMENTED_TRAIN, "tokenizer": "morse"}).encode(), "tokenizer", "tokenizer"),
        (json.dumps({**DOCUMENTED_TRAIN, "hyperparamters": {}}).encode(), "hyperparamters", "unknown field"),
        (json.dumps({k: v for k, v in DOCUMENTED_TRAIN.items() if k != "model_name"}).encode(), "model_name", "required"),
        (json.dumps({**DOCUMENTED_TRAIN, "dataset": {"key": "../etc/passwd"}}).encode(), "dataset.key", "pattern"),
        (json.dumps({**DOCUMENTED_GENERATE, "max_tokens": 0}).encode(), "max_tokens", "greater than or equal"),
        (b'{"type": "GenerateRequested", "model_name": "m", "temperature": NaN}', "temperature", "finite"),
        (json.dumps({**DOCUMENTED_GENERATE, "prompt": "a\x00b"}).encode(), "prompt", "NUL character"),
        (json.dumps({**DOCUMENTED_TRAIN, "hyperparameters": {"preset\x00": "tiny"}}).encode(), "hyperparameters",
         "NUL character"),
        (json.dumps({**DOCUMENTED_GENERATE, "stop": ["ok", "\x00"]}).encode(), "stop.1", "NUL character"),
    ],
)
def test_bad_messages_name_the_field(raw, field, needle):
    with pytest.raises(DecodeError) as info:
        decode_command(raw)
    assert info.value.field == field
    assert needle in info.value.reason


BOMBS = [
    (b"[" * 100_000, "nested deeper than 64 levels"),
    (b'{"type": "TrainRequested", "hyperparameters": ' + b"[" * 70 + b"]" * 70 + b"}", "nested deeper than 64"),
    (b'{"type": "GenerateRequested", "max_tokens": ' + b"7" * 5000 + b"}", "an integer of 5000 digits"),
    (b'{"type": "GenerateRequested", "prompt": "caf\xe9"}', "not valid UTF-8: byte 44 (0xe9): invalid continuation byte"),
    (b'{"type": "GenerateRequested", "prompt": "' + b"x" * 2_000_000 + b'"', "not valid JSON"),
    (b"\xef\xbb\xbf{}", "not valid JSON"),
]


@pytest.mark.parametrize(("raw", "needle"), BOMBS)
def test_parser_bombs_are_decode_errors_on_every_decoder(raw, needle):
    """Deep nesting overflows the parser's recursion, long integers make Python refuse the conversion, invalid UTF-8
    and truncated giants are ordinary syntax errors: each must end as a DecodeError, for commands and facts alike."""
    for decode in (decode_command, decode_event):
        with pytest.raises(DecodeError) as info:
            decode(raw)
        assert needle in info.value.reason


def test_an_unpaired_surrogate_is_refused_naming_the_field():
    raw = json.dumps({**DOCUMENTED_GENERATE, "prompt": "ok \ud800 then"}).encode()  # json.dumps writes \ud800
    with pytest.raises(DecodeError) as info:
        decode_command(raw)
    assert (info.value.field, info.value.job_id) == ("prompt", "r1")
    assert "unpaired surrogate" in info.value.reason


def test_nesting_up_to_the_limit_is_fine():
    assert decode_command(json.dumps({**DOCUMENTED_TRAIN, "hyperparameters": {"max_iters": 5}})).job_id
    deep: object = 1
    for _ in range(63):
        deep = [deep]
    from events.codec import parse_json
    assert parse_json(json.dumps(deep)) == deep


def test_command_on_the_wrong_topic_is_rejected():
    with pytest.raises(DecodeError, match="does not belong on this topic"):
        decode_command(json.dumps(DOCUMENTED_GENERATE), (TrainRequested,))


def test_decode_error_keeps_the_job_id_so_a_failed_event_can_be_published():
    with pytest.raises(DecodeError) as info:
        decode_command(json.dumps({**DOCUMENTED_TRAIN, "job_id": "job-7", "tokenizer": "morse"}))
    assert (info.value.job_id, info.value.kind) == ("job-7", "train")


def test_job_event_round_trip():
    event = TrainProgress(
        job_id="j1", seq=3, producer="test", kind="train", step=10, max_iters=100, loss=2.5,
        learning_rate=1e-3, tokens_per_s=1000.0, elapsed_s=1.5, eta_s=13.5, progress=0.1,
    )
    back = decode_event(event.to_json())
    assert back == event
    assert not back.terminal


def test_dead_letter_keeps_binary_payloads():
    letter = dead_letter(b"\xff\x00binary", DecodeError("not valid JSON"), producer="p", topic="t", partition=1, offset=9)
    assert letter.payload_text is None and letter.payload_base64
    assert (letter.topic, letter.partition, letter.offset, letter.error) == ("t", 1, 9, "not valid JSON")


def test_published_json_schemas_are_up_to_date():
    assert schemas_main(["--check"]) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
command_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["TrainRequested", "EvaluateRequested", "GenerateRequested", "CancelRequested", "X"])},
    optional={
        "model_name": json_values, "dataset": json_values, "job_id": json_values, "prompt": json_values,
        "hyperparameters": json_values, "max_tokens": json_values, "model_id": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | command_like.map(json.dumps))
def test_any_input_decodes_or_raises_decode_error(raw):
    try:
        decode_command(raw)
    except DecodeError as exc:
        assert exc.reason
        dead_letter(raw, exc, producer="fuzz", topic="t")  # every failure can be kept as a dead letter
