"""`lfz datasets upload FILE`: a file of any size sent as an upload session, its parts two at a time, with a
progress bar; run again after an interruption, it sends only the parts the gateway does not have yet.

What a resumed upload needs is kept in a small state file per local file and gateway (under
`$LFZ_STATE_DIR/uploads`, by default `~/.local/state/lfz/uploads`): the session's id, and the file's size and
modification time when the upload began, so that a changed file starts a new upload instead of mixing two versions.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from cli.client import ApiError, Client
from cli.errors import EXIT_USAGE, CliError
from infra.corpus import CorpusError, check_part

PARALLEL_PARTS = 2


def guess_format(path: Path) -> tuple[str, str]:
    """(format, compression) from the file's name: `.jsonl`, `.parquet`, and `.gz` after either; else text."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = "gzip" if suffixes[-1:] == [".gz"] else "none"
    inner = suffixes[:-1] if compression == "gzip" else suffixes
    last = inner[-1] if inner else ""
    fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}.get(last, "text")
    return fmt, compression


def state_dir() -> Path:
    return Path(os.environ.get("LFZ_STATE_DIR", "~/.local/state/lfz")).expanduser() / "uploads"


def _state_path(path: Path, base_url: str) -> Path:
    digest = hashlib.sha256(f"{path.resolve()}\n{base_url}".encode()).hexdigest()[:32]
    return state_dir() / f"{digest}.json"


def _read_state(state: Path, stat: os.stat_result) -> str | None:
    """The session to resume: only when the file is the same size and age as when its upload began."""
    try:
        saved = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("size") != stat.st_size or saved.get("mtime_ns") != stat.st_mtime_ns:
        return None
    return saved.get("upload_id")


def _read_part(path: Path, number: int, part_bytes: int, size: int) -> bytes:
    with open(path, "rb") as file:
        file.seek((number - 1) * part_bytes)
        return file.read(min(part_bytes, size - (number - 1) * part_bytes))


def upload_file(api: Client, path: Path, *, name: str, fmt: str, compression: str, text_column: str,
                show_progress: bool = True) -> dict[str, Any]:
    """Upload `path` (resuming an interrupted upload of it), complete it, and return the dataset's view."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise CliError(f"no such file: {path}", EXIT_USAGE) from None
    if not path.is_file():
        raise CliError(f"{path} is not a file", EXIT_USAGE)
    if stat.st_size == 0:
        raise CliError(f"{path} is empty", EXIT_USAGE)
    with open(path, "rb") as file:  # the gateway checks every part; the first is checked here before anything is sent
        head = file.read(1 << 16)
    try:
        check_part(head, 1, 0, fmt, compression)
    except CorpusError as error:
        raise CliError(f"{path}: {error}", EXIT_USAGE) from None
    state = _state_path(path, str(api.http.base_url))
    session = None
    upload_id = _read_state(state, stat)
    if upload_id is not None:
        try:
            session = api.upload_status(upload_id)
        except ApiError as error:
            if error.status != 404:
                raise
    if session is None:
        session = api.start_upload(name=name, size=stat.st_size, fmt=fmt, compression=compression,
                                   text_column=text_column)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"upload_id": session["upload_id"], "size": stat.st_size,
                                     "mtime_ns": stat.st_mtime_ns, "path": str(path.resolve())}))
    missing = [n for n in range(1, session["parts"] + 1) if n not in {p["number"] for p in session["received"]}]
    part_bytes = session["part_bytes"]
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress, console=Console(stderr=True)) as progress:
        resumed = session["bytes_received"]
        label = f"{path.name} (resumed)" if resumed else path.name
        task = progress.add_task(label, total=stat.st_size, completed=resumed)

        def send(number: int) -> None:
            data = _read_part(path, number, part_bytes, stat.st_size)
            answer = api.put_part(session["upload_id"], number, data)
            if answer["sha256"] != hashlib.sha256(data).hexdigest():
                raise CliError(f"part {number} arrived damaged; run the same command again to resume")
            progress.advance(task, len(data))

        with ThreadPoolExecutor(PARALLEL_PARTS) as pool:
            for done in pool.map(send, missing):
                del done
    view = api.complete_upload(session["upload_id"])
    state.unlink(missing_ok=True)
    return view
