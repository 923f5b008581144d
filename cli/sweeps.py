"""`lfz sweep` and `lfz sweeps list|show`: many training runs of one search over hyperparameters.

A search space is given per hyperparameter with --space: `learning_rate=log:1e-4:1e-2` (log-uniform),
`dropout=0:0.3` (uniform), `num_blocks=int:1:4` (whole numbers), or `num_heads=2,4` (a list: every value in a grid,
one drawn at random in a random search).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.catalog import LimitOption
from cli.connection import DEFAULT_URL, JsonOption, UrlOption, gateway
from cli.errors import EXIT_USAGE, CliError
from cli.jobs import PresetOption, SetOption, TokenizerOption, dataset_for, default_name, submitted_then
from cli.overrides import hyperparameters, parse_value
from cli.render import Output, number, when

sweeps = typer.Typer(help="List and show sweeps (`lfz sweep` starts one).", no_args_is_help=True)


def parse_space(items: list[str]) -> dict[str, dict[str, Any]]:
    """--space NAME=SPEC, repeatable; a CliError naming the item that is not one."""
    space: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise CliError(f"--space {item!r}: write NAME=SPEC, e.g. learning_rate=log:1e-4:1e-2", EXIT_USAGE)
        parts = spec.split(":")
        try:
            if "," in spec or len(parts) == 1:
                space[name.strip()] = {"values": [parse_value(v) for v in spec.split(",")]}
            elif len(parts) == 3 and parts[0] in ("log", "int"):
                ranged = {"min": float(parts[1]), "max": float(parts[2])}
                space[name.strip()] = {**ranged, **({"scale": "log"} if parts[0] == "log" else {"integer": True})}
            elif len(parts) == 2:
                space[name.strip()] = {"min": float(parts[0]), "max": float(parts[1])}
            else:
                raise ValueError(spec)
        except ValueError:
            raise CliError(f"--space {item!r}: SPEC is a,b,c or MIN:MAX or log:MIN:MAX or int:MIN:MAX",
                           EXIT_USAGE) from None
    return space


def sweep(
    data: Annotated[str, typer.Option("--data", help="A UTF-8 text file, or an uploaded dataset's id.",
                                      show_default=False)],
    space: Annotated[list[str], typer.Option("--space", metavar="NAME=SPEC", help=(
        "A hyperparameter's search space (repeatable): a,b,c | MIN:MAX | log:MIN:MAX | int:MIN:MAX."),
        show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="The trials' model name (default: file + time).")]
    = None,
    preset: PresetOption = None, sets: SetOption = None, tokenizer: TokenizerOption = "char",
    method: Annotated[str, typer.Option("--method", help="random or grid.")] = "random",
    trials: Annotated[int, typer.Option("--trials", min=1, max=100, help="Trials of a random search.")] = 8,
    metric: Annotated[str, typer.Option("--metric", help="val_loss or train_loss (minimised).")] = "val_loss",
    early_stopping: Annotated[str, typer.Option("--early-stopping", help="none, median or asha.")] = "none",
    min_step: Annotated[int, typer.Option("--min-step", min=1, help="No trial stops before this step.")] = 100,
    alias: Annotated[Optional[str], typer.Option("--alias", help="Give the best trial this alias at the end.")]
    = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="The random search's draws follow from it.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show the sweep live until it ends.")] = False,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Start a hyperparameter sweep: trials (training jobs, versions of one name) drawn from --space, spread over
    the workers, the worst stopped early, the best given --alias."""
    out = Output()
    body = {"hyperparameters": hyperparameters(sets or [], preset=preset), "space": parse_space(space),
            "tokenizer": tokenizer, "method": method, "trials": trials, "metric": metric, "seed": seed,
            "early_stopping": {"rule": early_stopping, "min_step": min_step}, "alias": alias}
    with gateway(url) as api:
        dataset_id, _ = dataset_for(api, out, data)
        stem = Path(data).stem if Path(data).is_file() else data
        submitted = api.create_sweep({**body, "name": name or default_name(stem), "dataset": {"id": dataset_id}})
        job_id = submitted["job_id"]
        submitted_then(api, out, submitted, f"sweep {job_id}",
                       f"follow it: lfz events {job_id} --follow; see its trials: lfz sweeps show {job_id}",
                       follow=follow, as_json=as_json)


@sweeps.command("list")
def list_sweeps(url: UrlOption = DEFAULT_URL, limit: LimitOption = 50, as_json: JsonOption = False) -> None:
    """The sweeps, newest first."""
    out = Output()
    with gateway(url) as api:
        listing = api.list_sweeps(limit=limit)
    if as_json:
        out.json(listing)
        return
    rows = [[s["id"], s.get("model_name"), s["status"], f"{100 * (s.get('progress') or 0):.0f}%",
             number(((s.get("result") or {}).get("best") or {}).get("value")), when(s.get("created_at"))]
            for s in listing["items"]]
    out.table(["id", "name", "status", "trials ended", "best", "created"], rows, right=["trials ended", "best"])


@sweeps.command("show")
def show_sweep(
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP", help="A sweep's id.", show_default=False)],
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """A sweep and its trials: parameters, version, status, step and metric; the best marked *."""
    out = Output()
    with gateway(url) as api:
        detail = api.get_sweep(sweep_id)
    if as_json:
        out.json(detail)
        return
    best = ((detail.get("result") or {}).get("best") or {}).get("index")
    rows = [["*" if t["index"] == best else "", t["index"], t["parameters"], t.get("version") or "-", t["status"],
             f"{t.get('step') or 0}/{t.get('max_iters') or '-'}", number(t.get("value")),
             (t.get("stopped") or "")[:60]] for t in detail.get("trials", [])]
    out.table(["", "trial", "parameters", "version", "status", "steps", "metric", "stopped early"], rows,
              right=["trial", "steps", "metric"], title=f"sweep {detail['id']} of {detail.get('model_name')}: "
                                                        f"{detail['status']}")
