"""The vocabulary of multipart (resumable) uploads, shared by both stores: S3's limits, the part record, the error for
an upload that is gone, and the checks a finish request must pass.

The checks run in the client for both stores, before anything is joined. The S3 server would refuse the same requests,
but with one message for every bad part ("InvalidPart") that names none of them, and with an unrelated one for parts
out of order (the Versity gateway answers "EntityTooSmall"); a caller resuming an upload needs the part number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's least size of every part but the last
MAX_PARTS = 10_000


@dataclass(frozen=True)
class StoredPart:
    number: int
    etag: str
    size: int


class UploadNotFound(LookupError):
    """An unknown, finished or aborted upload id (or one started for another key)."""

    def __init__(self, key: str, upload_id: object) -> None:
        super().__init__(f"no multipart upload {upload_id!r} of key {key!r} (unknown, finished or aborted)")
        self.key = key
        self.upload_id = upload_id


def validate_part_number(number: int) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_PARTS:
        raise ValueError(f"a part number must be an integer from 1 to {MAX_PARTS}, got {number!r}")
    return number


def validate_part_list(parts: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The (number, etag) pairs of a finish request, numbers in range and strictly ascending; etags unquoted (S3
    servers send them in quotes, and a caller may pass them on as they came)."""
    if not parts:
        raise ValueError("finishing an upload needs at least one part")
    checked: list[tuple[int, str]] = []
    for number, etag in parts:
        validate_part_number(number)
        if checked and number <= checked[-1][0]:
            raise ValueError(f"part numbers must ascend: part {number} comes after part {checked[-1][0]}")
        if not isinstance(etag, str):
            raise ValueError(f"the etag of part {number} must be a string, got {etag!r}")
        checked.append((number, etag.strip('"')))
    return checked


def match_parts(upload_id: str, parts: list[tuple[int, str]], stored: Iterable[StoredPart]) -> list[StoredPart]:
    """The stored parts that a checked finish request names, in its order; ValueError naming the first part that is
    missing, has another etag, or is too small to be anything but the last."""
    by_number = {part.number: part for part in stored}
    chosen: list[StoredPart] = []
    for number, etag in parts:
        part = by_number.get(number)
        if part is None:
            raise ValueError(f"part {number} of upload {upload_id} was never stored")
        if part.etag != etag:
            raise ValueError(f"part {number} of upload {upload_id} has etag {part.etag!r}, not {etag!r}")
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_BYTES:
            raise ValueError(
                f"part {part.number} of upload {upload_id} is {part.size} bytes: every part but the last needs "
                f"at least {MIN_PART_BYTES}"
            )
    return chosen
