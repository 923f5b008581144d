"""`lfz models versions|alias|serve` and `lfz compare`: a name's versions and aliases, which checkpoint serves, and
runs side by side.

Everywhere a model is named, `name` is its newest version, `name/3` its version 3 and `name@champion` the version
the alias points at.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from cli.catalog import MODEL_COLUMNS, model_row, models
from cli.connection import DEFAULT_URL, JsonOption, UrlOption, gateway
from cli.errors import EXIT_USAGE, CliError
from cli.render import Output, number


@models.command("versions")
def versions(
    name: Annotated[str, typer.Argument(help="A model name.", show_default=False)],
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """A name's versions, oldest first, with their parents and aliases."""
    out = Output()
    with gateway(url) as api:
        listing = api.model_versions(name)
    if as_json:
        out.json(listing)
        return
    rows = [[*model_row(m)[:3], m.get("parent_id") or "-", ", ".join(m.get("aliases") or []) or "-",
             *model_row(m)[3:]] for m in listing["items"]]
    out.table([*MODEL_COLUMNS[:3], "parent", "aliases", *MODEL_COLUMNS[3:]], rows,
              right=["version", "progress", "steps", "parameters", "val loss"], title=f"model {name}")


@models.command("alias")
def alias(
    name: Annotated[str, typer.Argument(help="A model name.", show_default=False)],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. champion, staging.", show_default=False)],
    version: Annotated[Optional[int], typer.Argument(help="The version it points at.", show_default=False)] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the alias instead.")] = False,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Point NAME@ALIAS at VERSION (moving it from where it pointed), or --remove it."""
    if (version is None) != remove:
        raise CliError("give a VERSION to point the alias at, or --remove (not both)", EXIT_USAGE)
    out = Output()
    with gateway(url) as api:
        answer = api.remove_alias(name, alias_name) if remove else api.set_alias(name, alias_name, version or 0)
    if as_json:
        out.json(answer)
    elif remove:
        out.line(f"{name}@{alias_name} removed")
    else:
        out.line(f"{name}@{alias_name} -> {name}/{answer['version']} (model {answer['model_id']})")


@models.command("serve")
def serve(
    model: Annotated[str, typer.Argument(help="A model: id, name, name@alias or name/version.", show_default=False)],
    checkpoint: Annotated[str, typer.Argument(help="best (by validation loss) or last.", show_default=False)],
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Choose which checkpoint of a version generates, evaluates and exports."""
    if checkpoint not in ("best", "last"):
        raise CliError(f"CHECKPOINT: best or last, not {checkpoint!r}", EXIT_USAGE)
    out = Output()
    with gateway(url) as api:
        answer = api.choose_serving(model, checkpoint)
    if as_json:
        out.json(answer)
        return
    serving = answer.get("serving_checkpoint") or {}
    out.line(f"{answer['ref']} serves its {checkpoint} checkpoint"
             + (f" (step {serving.get('step')})" if serving else " once it has one"))


def compare(
    runs: Annotated[list[str], typer.Argument(help="2 to 10 models: id, name, name@alias or name/version.",
                                               show_default=False)],
    every: Annotated[bool, typer.Option("--all", help="Every hyperparameter, not only those that differ.")] = False,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Runs side by side: the hyperparameters that differ (marked *), and final and best metrics."""
    out = Output()
    with gateway(url) as api:
        answer = api.compare(runs)
    if as_json:
        out.json(answer)
        return
    compared = answer["runs"]
    heads = ["", *(f"{r['name']}/{r['version']}" if r.get("version") else r["id"] for r in compared)]
    differing = set(answer["differences"])
    rows = [[f"* {key}" if key in differing else f"  {key}", *(_value(v) for v in values)]
            for key, values in answer["parameters"].items() if every or key in differing]
    metrics = [("best step", lambda r: r.get("best_step")), *(
        (name, lambda r, name=name: (r.get("metrics") or {}).get(name))
        for name in ("train_loss", "val_loss", "best_val_loss", "perplexity", "tokens_per_s")),
        ("held-out perplexity", _held_out)]
    rows += [[f"  {name}", *(number(read(r)) for r in compared)] for name, read in metrics]
    out.table(heads, rows, right=heads[1:], title=f"{len(differing)} hyperparameters differ (*)")


def _value(value: Any) -> str:
    return "-" if value is None else str(value)


def _held_out(run: dict[str, Any]) -> Any:
    report = (run.get("latest_evaluation") or {}).get("report") or {}
    return (report.get("held_out") or {}).get("perplexity")
