"""A schemathesis check that fails when a response leaks a traceback or a secret, in its body or its headers.

Loaded by the schemathesis CLI as a hooks file (`SCHEMATHESIS_HOOKS=<this file>`). The CLI runs in a process of
its own, so the secrets to look for arrive in the environment variable `LFZ_LEAK_SECRETS` (a JSON object, see
`secrets_env`); `find_leaks` is the pure part, tested on its own in tests/unit/gateway/test_leak_check.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import schemathesis

SECRETS_VARIABLE = "LFZ_LEAK_SECRETS"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
PROJECT_PACKAGES = ("agents", "events", "gateway", "infra", "model")

# What a Python traceback, or an exception's repr naming the code, looks like once it reaches a client.
TRACEBACK_MARKERS = (
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r'File "/'),
    re.compile(r'File "[^"]+", line \d+'),
    re.compile(r"site-packages/"),
    re.compile(r"\b(?:%s)/[A-Za-z_][A-Za-z0-9_/]*\.py\b" % "|".join(PROJECT_PACKAGES)),
)
MIN_BARE_SECRET = 8  # shorter secrets (a database password such as "lfz") are only looked for in context


def secrets_env(api_keys: Iterable[str], s3_secret_key: str, database_url: str) -> dict[str, str]:
    """The environment entry that hands the secrets to the check in the schemathesis process."""
    return {SECRETS_VARIABLE: json.dumps({"api_keys": list(api_keys), "s3_secret_key": s3_secret_key,
                                          "database_url": database_url})}


def secret_needles(api_keys: Iterable[str], s3_secret_key: str, database_url: str) -> dict[str, str]:
    """Strings that must never appear in a response, each with what it is.

    The database password goes in as `user:password@` and as part of the full URL; bare, only when it is long
    enough that finding it means a leak rather than a coincidence (the test servers' password is `lfz`, which
    every topic name contains)."""
    needles = {key: "an API key" for key in api_keys if key}
    if s3_secret_key:
        needles[s3_secret_key] = "the S3 secret key"
    if database_url:
        needles[database_url] = "the database URL"
        credentials = re.match(r"^[a-z0-9+]+://([^@/]*)@", database_url)
        if credentials:
            needles[credentials.group(1) + "@"] = "the database credentials"
            password = credentials.group(1).partition(":")[2]
            if len(password) >= MIN_BARE_SECRET:
                needles[password] = "the database password"
    needles[str(PROJECT_ROOT) + "/"] = "a path inside the project's checkout"
    return needles


def find_leaks(text: str, needles: Mapping[str, str]) -> list[str]:
    """What `text` gives away: one description per traceback marker or secret found in it."""
    found = [f"a traceback ({marker.pattern!r})" for marker in TRACEBACK_MARKERS if marker.search(text)]
    found += [what for needle, what in needles.items() if needle in text]
    return found


def response_text(response: Any) -> str:
    """Headers and body of a schemathesis `Response`, as one text to search."""
    headers = "\n".join(f"{name}: {value}" for name, values in response.headers.items() for value in values)
    body = (response.content or b"").decode("utf-8", errors="replace")
    return headers + "\n\n" + body


def _needles_from_env() -> dict[str, str]:
    # The CLI process gets the secrets only through its environment; a missing entry would make the check
    # pass vacuously, so it is an error instead.
    raw = os.environ.get(SECRETS_VARIABLE)
    if not raw:
        raise RuntimeError(f"{SECRETS_VARIABLE} is not set: the leak check would look for no secret")
    values = json.loads(raw)
    return secret_needles(values["api_keys"], values["s3_secret_key"], values["database_url"])


@schemathesis.check
def no_leaked_secrets(ctx: Any, response: Any, case: Any) -> bool | None:
    """No response carries a Python traceback, an API key, the S3 secret key or the database's URL or password."""
    leaks = find_leaks(response_text(response), _needles_from_env())
    if leaks:
        raise AssertionError(f"the response leaks {', '.join(leaks)}")
    return None
