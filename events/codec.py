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
from events.facts import FACTS, DeadLetter, JobEvent
from events.fields import utc_now

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


def nul_character_at(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Where a JSON value holds a U+0000 character: the path of the string (or of the object with such a key), else
    None. PostgreSQL stores no U+0000 in text or JSONB, so a command carrying one would be accepted and then fail to
    be recorded; it is refused where it enters instead."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return path
        found = nul_character_at(item, (*path, str(key)))
        if found is not None:
            return found
    return None


def nul_character_error(path: tuple[str, ...]) -> tuple[str, str | None]:
    """`(message, field)` for `nul_character_at`'s answer."""
    field = ".".join(path) or None
    message = "must not contain a NUL character (U+0000)"
    return (f"{field}: {message}" if field else f"a field name {message}"), field


def _parse_object(raw: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
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
    nul = nul_character_at(value)
    if nul is not None:
        raise DecodeError(*nul_character_error(nul), job_id, kind)
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
