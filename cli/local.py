"""The commands that act on this machine, with the LFZ_* settings: `lfz up`, `lfz replay`, `lfz migrate`,
`lfz version`.

`lfz up` runs until Ctrl-C or SIGTERM and then stops every process it started; a worker or the gateway that exits
on its own is started again (a crash loop stops the whole stack with an error naming it and its log).
"""

from __future__ import annotations

import asyncio
import platform
import time
from importlib import metadata
from typing import Annotated, Optional

import typer

from cli.connection import DEFAULT_URL
from cli.errors import EXIT_USAGE, CliError
from cli.render import Output
from cli.stack import Stack, shielded, stop_signals_interrupt
from infra.settings import Settings, load_settings



def run_stack(stack: Stack, out: Output) -> None:
    """Start the stack, wait for Ctrl-C or SIGTERM (or a child that dies), then stop all of it."""
    try:
        with stop_signals_interrupt():
            url = stack.start()
            out.line(f"lfz is up at {url}")
            target = "" if url == DEFAULT_URL else f" (first: export LFZ_URL={url})"
            out.note(f"try: lfz train --data FILE --follow, lfz models list{target}")
            out.note(f"logs in {stack.log_dir}; Ctrl-C stops everything")
            while True:
                time.sleep(0.5)
                stack.supervise()
    except KeyboardInterrupt:
        out.note("stopping (running jobs go back to the queue) ...")
    finally:
        with shielded():
            stack.stop()
    out.note("stopped")


def up(
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The gateway's port.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="The gateway's address (loopback unless you mean it).")]
    = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Agents workers (one consumer group).")]
    = 1,
) -> None:
    """Start the whole system here: broker (embedded unless LFZ_KAFKA_URL is set), migrations, agents, gateway.

    Runs until Ctrl-C or SIGTERM, then stops every process it started (running jobs go back to the queue). A worker
    or the gateway that dies is started again after a back-off (its jobs go on elsewhere meanwhile); one that keeps
    dying (a crash loop) stops the rest, with an error naming its log. State lives under LFZ_DATA_DIR (.lfz)."""
    out = Output()
    settings = load_settings()
    run_stack(Stack(settings, host=host, port=port, workers=workers, say=out.note, restart=True), out)


def replay(
    source: Annotated[Optional[str], typer.Option(
        "--from", help="kafka (the job-events topic) or database (the log kept in the job_events table); default: "
                       "kafka when LFZ_KAFKA_URL is set, else database.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Rebuild the database's tables from the event log. Stop the agents (and `lfz up`) first."""
    from agents.record.replay import replay as rebuild

    out = Output()
    settings = load_settings()
    source = source or ("kafka" if settings.kafka_url else "database")
    if source not in ("kafka", "database"):
        raise CliError(f"--from must be kafka or database, not {source!r}", EXIT_USAGE)
    if source == "kafka" and not settings.kafka_url:
        raise CliError("LFZ_KAFKA_URL is not set, and the embedded broker keeps no log across restarts: "
                       "use --from database", EXIT_USAGE)
    target = settings.resolved_database_url.split("@")[-1]
    out.note(f"this empties the tables of {target} and rebuilds them from {source}; stop the agents workers "
             f"(and `lfz up`) first, or they write into the tables while they are rebuilt")
    if not yes:
        if not out.err.is_terminal:
            raise CliError("refusing to replay without confirmation: add --yes", EXIT_USAGE)
        typer.confirm("rebuild the database now?", abort=True)
    try:
        report = asyncio.run(rebuild(settings, source))
    except Exception as error:  # a server that is down is the usual cause: one line
        raise CliError(f"the replay failed: {type(error).__name__}: {error}") from None
    out.line(f"replayed {report.applied} of {report.read} facts from {source} into {target}")
    if report.turned_away:
        out.line(f"turned away {report.turned_away} facts whose owner or kind was not their job's, as the record "
                 f"agent did")
    if report.undecodable:
        out.line(f"skipped {report.undecodable} records that are not facts (each is logged with its partition and "
                 f"offset, and the record agent dead-lettered it)")


def migrate_database() -> None:
    """Apply the database migrations (SQLite under LFZ_DATA_DIR by default, or LFZ_DATABASE_URL)."""
    from infra.db import migrate

    out = Output()
    settings = load_settings()
    ensure_data_dir(settings)
    url = settings.resolved_database_url
    try:
        migrate(url, quiet=True)
    except Exception as error:
        raise CliError(f"could not migrate {url.split('@')[-1]}: {error}") from None
    out.line(f"{url.split('@')[-1]}: migrated to the latest schema")


def ensure_data_dir(settings: Settings) -> None:
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)


def version() -> None:
    """The installed version of llm-from-zero."""
    try:
        installed = metadata.version("llm-from-zero")
    except metadata.PackageNotFoundError:
        installed = "not installed"
    Output().line(f"lfz {installed} (llm-from-zero), Python {platform.python_version()}")
