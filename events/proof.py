"""Who sent a command. With API keys configured, a command on a request topic must prove its owner: two record
headers, `lfz-owner` (the owner id, a digest of the key: `owner_of`) and `lfz-signature` (the hex HMAC-SHA256 of
the record's value under that key). The owner is then the signer, never what the body says; a command without a
valid proof is a dead letter naming why. Without keys (one user on their own machine) nothing is checked.

The gateway signs every command for the key that called it; anyone producing to Kafka directly signs with their own
key (the README shows how, in Python and with kcat + openssl). Facts topics carry no proofs: they are written by
the system's own processes, and a tenant reads its facts over the gateway's SSE.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from events.errors import DecodeError

OWNER_HEADER = "lfz-owner"
SIGNATURE_HEADER = "lfz-signature"

Headers = list[tuple[str, bytes]]


def owner_of(api_key: str) -> str:
    """The tenant id every row and message carries: a short digest of the key (never the key itself)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def signature(api_key: str, value: bytes) -> str:
    return hmac.new(api_key.encode(), value, hashlib.sha256).hexdigest()


class Signer:
    """Signs and checks proofs for a set of API keys."""

    def __init__(self, api_keys: Iterable[str]):
        self._keys = {owner_of(key): key for key in api_keys if key}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def headers(self, owner: str | None, value: bytes) -> Headers:
        """The proof headers for a command of `owner` (none when keys are off or the command has no owner)."""
        key = self._keys.get(owner) if owner is not None else None
        if key is None:
            return []
        return [(OWNER_HEADER, owner.encode()), (SIGNATURE_HEADER, signature(key, value).encode())]  # type: ignore[union-attr]

    def signer_of(self, headers: Any, value: bytes) -> str:
        """The owner whose key signed `value`, from a record's headers (a list of pairs or a mapping); a
        DecodeError naming what is missing or wrong otherwise."""
        found = _header_dict(headers)
        owner, claimed = found.get(OWNER_HEADER), found.get(SIGNATURE_HEADER)
        if owner is None or claimed is None:
            raise DecodeError(f"headers: API keys are configured, so a command needs the headers {OWNER_HEADER} and "
                              f"{SIGNATURE_HEADER} (an HMAC-SHA256 of the value under the owner's key)", "headers")
        key = self._keys.get(owner)
        expected = signature(key, value) if key is not None else ""
        # Compared in constant time; an unknown owner is refused in the same words, so ids cannot be probed.
        if key is None or not hmac.compare_digest(expected, claimed):
            raise DecodeError(f"headers: {SIGNATURE_HEADER} is not a valid signature of this value by the key of "
                              f"the owner in {OWNER_HEADER}", "headers")
        return owner


    def owner(self, signer: str | None, stated: str | None) -> str | None:
        """Whose command it is: with keys, its signer (`signer_of`), and a body stating someone else is refused;
        without keys, what the body states."""
        if not self.enabled:
            return stated
        if stated is not None and stated != signer:
            raise DecodeError("owner: the command states an owner other than the key that signed it", "owner")
        return signer


def _header_dict(headers: Any) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    found: dict[str, str] = {}
    for name, raw in pairs:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(raw, (bytes, bytearray)):
            raw = bytes(raw).decode("latin-1")
        if isinstance(name, str) and isinstance(raw, str):
            found.setdefault(name.lower(), raw.strip())
    return found
