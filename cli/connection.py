"""The gateway a command talks to: `--url` (or LFZ_URL), the API key from LFZ_API_KEY, and names resolved to ids.

`with gateway(url) as api:` yields the typed client; any client or HTTP error that leaves the block comes out as a
one-line `CliError` that names the URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from cli.client import ApiError, Client
from cli.errors import EXIT_USAGE, CliError, explain
from events import Rejected, dataset_text

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOption = Annotated[str, typer.Option(
    "--url", envvar="LFZ_URL", show_default=True,
    help="The gateway's base URL (LFZ_URL). Send an API key with LFZ_API_KEY.",
)]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


@contextmanager
def gateway(url: str, timeout_s: float = 60.0) -> Iterator[Client]:
    api_key = os.environ.get("LFZ_API_KEY", "").strip() or None  # the CLI's edge: read once, passed in
    client = Client(url, api_key=api_key, timeout=timeout_s)
    try:
        yield client
    except (ApiError, httpx.HTTPError) as error:
        raise explain(error, url) from None
    finally:
        client.close()


def resolve_model(api: Client, model: str) -> dict[str, Any]:
    """The model whose id, or else whose name, is `model`."""
    try:
        return api.get_model(model)
    except ApiError as error:
        if error.status != 404:
            raise
    matches = api.list_models(name=model, limit=1)["items"]
    if not matches:
        raise CliError(f"no model has the id or name {model!r}; `lfz models list` shows them")
    return api.get_model(matches[0]["id"])


def read_text_file(path: Path) -> str:
    """A UTF-8 text file, or a CliError that says what is wrong with it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"no such file: {path}", EXIT_USAGE) from None
    except IsADirectoryError:
        raise CliError(f"{path} is a folder; give a text file", EXIT_USAGE) from None
    except PermissionError:
        raise CliError(f"cannot read {path}: permission denied", EXIT_USAGE) from None
    try:
        return dataset_text(data, str(path))
    except Rejected as rejected:
        raise CliError(rejected.reason, EXIT_USAGE) from None
