"""`lfz`, the command line of llm-from-zero: the Typer app and `main()`, the console script.

`main()` runs the app and turns every expected failure into one line on stderr and a non-zero exit code: 2 for a
usage error (a bad argument, a missing file), 130 for Ctrl-C, 1 for the rest. LFZ_DEBUG=1 shows the traceback of
an unexpected error instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import typer

from cli import catalog, demo, export, inference, jobs, local, registry, sweeps
from cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, CliError, Stopped, explain
from cli.render import Output

app = typer.Typer(
    name="lfz",
    help="Train, evaluate and serve small GPT models. `lfz demo` shows everything; `lfz up` starts the system; "
         "the other commands talk to its gateway (--url or LFZ_URL, API key in LFZ_API_KEY).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a traceback with locals could print an API key
    rich_markup_mode="markdown",  # help paragraphs wrap as prose; `code` shows as code
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("demo")(demo.demo)
app.command("up")(local.up)
app.add_typer(catalog.datasets, name="datasets")
app.add_typer(catalog.models, name="models")
app.command("train", epilog=jobs.HYPERPARAMETER_HELP)(jobs.train)
app.add_typer(jobs.jobs, name="jobs")
app.command("events")(jobs.events)
app.command("compare")(registry.compare)
app.command("sweep")(sweeps.sweep)
app.add_typer(sweeps.sweeps, name="sweeps")
app.command("presets")(catalog.presets)
app.command("evaluate")(inference.evaluate)
app.command("generate")(inference.generate)
app.command("export")(export.export)
app.command("import")(export.import_model)
app.command("replay")(local.replay)
app.command("migrate")(local.migrate_database)
app.command("version")(local.version)


def main(argv: Sequence[str] | None = None) -> int:
    """Usage errors are Typer's own (exit code 2); everything raised by a command is said here in one line."""
    out = Output()
    try:
        app(args=list(argv) if argv is not None else None, prog_name="lfz")
    except SystemExit as done:  # Typer's standalone mode always ends this way, with the exit code
        return done.code if isinstance(done.code, int) else (0 if done.code is None else EXIT_FAILURE)
    except Stopped as stopped:
        out.note(stopped.message)
        return stopped.exit_code
    except CliError as error:
        out.error(error.message)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:
        if os.environ.get("LFZ_DEBUG", "").strip() not in ("", "0"):
            raise
        out.error(explain(error, "").message)
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
