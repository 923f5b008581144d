"""Field types shared by commands and facts: identifiers, names, times."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from events.errors import Rejected

# Identifiers travel into object-store keys and URLs, so they are kept to a safe alphabet.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
ModelName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
]
# A new model's name: it may not hold `@` or `/`, which name an alias (`bard@champion`) and a version (`bard/3`).
NewModelName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f@/]+$")
]
# What names a model to use: a name (its newest version with a checkpoint), `name@alias` or `name/version`.
ModelRef = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=170, pattern=r"^[^\x00-\x1f\x7f]+$"),
    Field(description="A model name (its newest version with a checkpoint), `name@alias`, or `name/version`."),
]
# An alias of a model name: a word, not a number (a number is a version).
AliasName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
DatasetKey = Annotated[str, StringConstraints(pattern=r"^datasets/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every message on the wire: strict about unknown fields, so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: int = Field(default=1, ge=1, le=1, description="Version of this message's schema.")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()


class DatasetRef(BaseModel):
    """Training or held-out text: inline, or an object-store key that an upload put there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = Field(default=None, description="The text itself.")
    key: DatasetKey | None = Field(default=None, description="An object-store key such as `datasets/<id>`.")

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetRef:
        if (self.text is None) == (self.key is None):
            raise ValueError("give exactly one of `text` or `key`")
        return self


def dataset_text(data: bytes, field: str) -> str:
    """Training or held-out text from its bytes, as every surface takes it (an upload, a file given to the CLI, a
    stored dataset a job reads): UTF-8, no NUL (a binary file), not empty. Rejected naming `field` otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"{field}: not UTF-8 text (invalid byte at offset {exc.start})", field) from None
    check_text(text, field)
    return text


def check_text(text: str, field: str) -> None:
    if "\x00" in text:
        raise Rejected(f"{field}: looks like a binary file (it contains NUL bytes)", field)
    if not text.strip():
        raise Rejected(f"{field}: the dataset is empty", field)
