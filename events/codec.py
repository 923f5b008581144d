"""Bytes <-> typed messages. Decoding happens where a message enters; a bad one becomes a `DecodeError`
that names the field at fault, which the caller turns into a dead letter (and a failed-job event when the
message carried a usable job id)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from pydantic import ValidationError

from events.commands import COMMANDS, Command
from events.errors import DecodeError
from events.facts import FACTS, DeadLetter
from events.fields import utc_now
from events.job import JobEvent

MAX_PAYLOAD_KEPT = 64 * 1024




def describe_validation_error(exc: ValidationError) -> tuple[str, str | None]:
    """The first problem, as `(message, dotted field path)`; the message names the field and the rule."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "field required"
    return (f"{field}: {message}" if field else message), field


MAX_DEPTH = 64  # objects and arrays inside each other; the deepest documented message has 3
MAX_INTEGER_DIGITS = 64  # the largest documented integer (a seed) has 20


class _TooLong(ValueError):
    pass


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise _TooLong(f"an integer of {digits} digits; at most {MAX_INTEGER_DIGITS} are accepted")
    return int(text)


def parse_json(raw: bytes | str) -> Any:
    """JSON text as Python values, or a `DecodeError` saying what is wrong with it.

    Whatever the bytes, nothing else escapes: invalid UTF-8 (named by its offset), nesting deeper than `MAX_DEPTH`
    (the parser's recursion would otherwise overflow), integers longer than `MAX_INTEGER_DIGITS` digits (Python
    refuses to convert 4,300), and every syntax error. Everything that decodes JSON from outside (HTTP bodies, every
    topic, a replay) goes through here, so one hostile message is refused instead of killing whoever read it."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not valid UTF-8: byte {exc.start} (0x{exc.object[exc.start]:02x}): {exc.reason}") from None
    try:
        value = json.loads(raw, parse_int=_integer)
    except _TooLong as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError(f"not valid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and whatever else the parser refuses
        raise DecodeError(f"not valid JSON: {exc}") from None
    if _depth_over(value, MAX_DEPTH):
        raise DecodeError(f"not valid JSON: nested deeper than {MAX_DEPTH} levels")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain a NUL character (U+0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain an unpaired surrogate (such as \\ud800)"
    return None


def bad_string_at(value: Any, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str] | None:
    """The first string (or key) of a JSON value that cannot be stored, as `(path, problem)`, else None.

    PostgreSQL keeps no U+0000 in text or JSONB, and an unpaired surrogate (which a JSON `\\u` escape can spell)
    is not UTF-8 at all, so a command carrying either would be accepted and then fail to be recorded or sent on; it
    is refused where it enters instead. `value` comes from `parse_json`, so its depth is bounded."""
    if isinstance(value, str):
        problem = _string_problem(value)
        return (path, problem) if problem is not None else None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str):
            problem = _string_problem(key)
            if problem is not None:
                return path, f"a field name {problem}"
        found = bad_string_at(item, (*path, str(key)))
        if found is not None:
            return found
    return None


def bad_string_error(found: tuple[tuple[str, ...], str]) -> tuple[str, str | None]:
    """`(message, field)` for `bad_string_at`'s answer."""
    path, problem = found
    field = ".".join(path) or None
    return (f"{field}: {problem}" if field else problem), field


def _parse_object(raw: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise DecodeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _usable_job_id(value: dict[str, Any]) -> str | None:
    job_id = value.get("job_id", value.get("request_id"))
    if isinstance(job_id, str) and 0 < len(job_id) <= 64 and job_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return job_id
    return None


def decode_command(
    raw: bytes | str | dict[str, Any],
    expected: tuple[type[Command], ...] | None = None,
    default_id: str | None = None,
) -> Command:
    """Decode one command. `expected` limits the types accepted (each request topic carries its own).

    `default_id` becomes the job id of a command that gives none: derive it from the message's topic, partition and
    offset, so that the same message delivered twice names the same job.
    """
    value = _parse_object(raw)
    if default_id is not None:
        id_field = "request_id" if value.get("type") == "GenerateRequested" else "job_id"
        if value.get("type") in COMMANDS and id_field not in value:
            value = {**value, id_field: default_id}
    type_name = value.get("type")
    job_id = _usable_job_id(value)
    cls = COMMANDS.get(type_name) if isinstance(type_name, str) else None
    kind = cls.kind if cls is not None else None
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in (expected or COMMANDS.values())))
        raise DecodeError(f"type: unknown message type {type_name!r}; expected one of {known}", "type", job_id)
    if expected is not None and cls not in expected:
        names = ", ".join(c.__name__ for c in expected)
        raise DecodeError(f"type: {type_name} does not belong on this topic (expected {names})", "type", job_id, kind)
    bad = bad_string_at(value)
    if bad is not None:
        raise DecodeError(*bad_string_error(bad), job_id, kind)
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        message, field = describe_validation_error(exc)
        raise DecodeError(message, field, job_id, kind) from None


def decode_event(raw: bytes | str | dict[str, Any]) -> JobEvent:
    value = _parse_object(raw)
    type_name = value.get("type")
    cls = FACTS.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise DecodeError(f"type: unknown event type {type_name!r}", "type", _usable_job_id(value))
    bad = bad_string_at(value)
    if bad is not None:
        raise DecodeError(*bad_string_error(bad), _usable_job_id(value))
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        message, field = describe_validation_error(exc)
        raise DecodeError(message, field, _usable_job_id(value)) from None


def id_from_position(topic: str, partition: int, offset: int) -> str:
    """A stable job id for a command that came without one."""
    return hashlib.sha256(f"{topic}/{partition}/{offset}".encode()).hexdigest()[:32]


def dead_letter(
    raw: bytes | str,
    error: DecodeError | str,
    *,
    producer: str,
    topic: str,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | str | None = None,
) -> DeadLetter:
    """Wrap an undecodable message with its error and its coordinates, so nothing is lost."""
    data = raw.encode() if isinstance(raw, str) else raw
    text: str | None
    b64: str | None = None
    try:
        text = data[:MAX_PAYLOAD_KEPT].decode()
    except UnicodeDecodeError:
        text, b64 = None, base64.b64encode(data[:MAX_PAYLOAD_KEPT]).decode()
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    reason = error.reason if isinstance(error, DecodeError) else str(error)
    return DeadLetter(
        time=utc_now(),
        producer=producer,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        error=reason,
        field=error.field if isinstance(error, DecodeError) else None,
        job_id=error.job_id if isinstance(error, DecodeError) else None,
        payload_text=text,
        payload_base64=b64,
    )
