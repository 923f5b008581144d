"""`lfz train`, `lfz jobs ...` and `lfz events`: starting training, and watching and stopping jobs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.catalog import upload
from cli.connection import DEFAULT_URL, JsonOption, UrlOption, gateway, read_text_file, resolve_model
from cli.errors import Stopped
from cli.follow import check_outcome, describe, follow_job
from cli.overrides import hyperparameters
from cli.render import Output, duration, number, when

jobs = typer.Typer(help="List, show and cancel jobs (training, evaluation, generation).", no_args_is_help=True)

JobArgument = Annotated[str, typer.Argument(help="A job's id.", show_default=False)]
PresetOption = Annotated[Optional[str], typer.Option(
    "--preset", help="tiny, classic, cpu-baby or small (the gateway's default: classic).")]
MaxItersOption = Annotated[Optional[int], typer.Option("--max-iters", min=1, help="Training steps.")]
TokenizerOption = Annotated[str, typer.Option("--tokenizer", help="char, word or bpe.")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="A hyperparameter, e.g. --set learning_rate=3e-4 (repeatable).")]


def default_name(stem: str) -> str:
    return f"{stem[:60]}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(
    data: Annotated[Path, typer.Option("--data", help="A UTF-8 text file to train on.", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="The model's name (default: file name + time).")]
    = None,
    preset: PresetOption = None, max_iters: MaxItersOption = None, tokenizer: TokenizerOption = "char",
    sets: SetOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show the training live until it ends.")] = False,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Upload a text file and train a new model on it."""
    out = Output()
    hp = hyperparameters(sets or [], preset=preset, max_iters=max_iters)
    read_text_file(data)
    with gateway(url) as api:
        dataset = upload(api, out, path=data, name=data.name)
        submitted = api.create_model(name or default_name(data.stem), dataset_id=dataset["id"], tokenizer=tokenizer,
                                     hyperparameters=hp)
        if as_json and not follow:
            out.json(submitted)
            return
        job_id = submitted["job_id"]
        out.note(f"model {submitted['model_id']}, training job {job_id} ({submitted['status']})")
        if not follow:
            out.line(job_id)
            out.note(f"follow it: lfz events {job_id} --follow")
            return
        final = check_outcome(follow_job(api, out, job_id, show=not as_json).final, job_id)
        if as_json:
            out.json(final)


def job_row(j: dict[str, Any]) -> list[Any]:
    steps = f"{j.get('step') or 0}/{j['max_iters']}" if j.get("max_iters") else "-"
    return [j["id"], j["kind"], j["status"], j.get("model_name") or j.get("model_id"),
            f"{100 * (j.get('progress') or 0):.0f}%", steps, number(j.get("loss")), when(j.get("created_at"))]


@jobs.command("list")
def list_jobs(
    kind: Annotated[Optional[str], typer.Option("--kind", help="train, evaluate or generate.")] = None,
    status: Annotated[Optional[str], typer.Option(
        "--status", help="accepted, running, completed, failed or cancelled.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Only this model's jobs (its id or name).")]
    = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """The jobs, newest first."""
    out = Output()
    with gateway(url) as api:
        model_id = resolve_model(api, model)["id"] if model else None
        listing = api.list_jobs(kind=kind, status=status, model_id=model_id, limit=limit)
    if as_json:
        out.json(listing)
        return
    out.table(["id", "kind", "status", "model", "progress", "steps", "loss", "created"],
              [job_row(j) for j in listing["items"]], right=["progress", "steps", "loss"])


@jobs.command("show")
def show_job(job: JobArgument, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """One job's state: status, progress, losses, timing, result or error."""
    out = Output()
    with gateway(url) as api:
        view = api.get_job(job)
    if as_json:
        out.json(view)
        return
    out.fields([
        ("id", view["id"]), ("kind", view["kind"]), ("status", view["status"]),
        ("model", f"{view.get('model_name') or '-'} ({view.get('model_id') or '-'})"),
        ("progress", f"{100 * (view.get('progress') or 0):.0f}% (step {view.get('step') or 0} of "
                     f"{view.get('max_iters') or '-'})"),
        ("loss", number(view.get("loss"))), ("validation loss", number(view.get("val_loss"))),
        ("tokens/s", number(view.get("tokens_per_s"))), ("eta", duration(view.get("eta_s"))),
        ("attempt", view.get("attempt")), ("worker", view.get("worker")),
        ("error", f"{view['error']} [{view['error_field']}]" if view.get("error_field") else view.get("error")),
        ("result", view.get("result")), ("events", view.get("last_seq")),
        ("created", when(view.get("created_at"))), ("started", when(view.get("started_at"))),
        ("finished", when(view.get("finished_at"))),
    ], title=f"{view['kind']} job {view['id']}")


@jobs.command("cancel")
def cancel_job(job: JobArgument, url: UrlOption = DEFAULT_URL) -> None:
    """Stop a job: a queued one never starts, a running one stops within seconds."""
    out = Output()
    with gateway(url) as api:
        api.cancel_job(job)
    out.line(f"cancelling job {job}; `lfz jobs show {job}` shows when it has stopped")


def events(
    job: JobArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep showing new events until the job ends.")]
    = False,
    after: Annotated[int, typer.Option("--after", min=0, help="Only events after this sequence number.")] = 0,
    url: UrlOption = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="The events as JSON (one per line with --follow).")]
    = False,
) -> None:
    """A job's event log; with --follow, live (a progress bar for training)."""
    out = Output()
    with gateway(url) as api:
        if not follow:
            log = api.job_log(job, after=after)
            if as_json:
                out.json(log)
                return
            out.table(["seq", "time", "type", "what"],
                      [[e["seq"], when(e.get("time")), e["type"], describe(e)] for e in log], right=["seq"])
            return
        if as_json:
            try:
                for event in api.follow_job(job, after=after):
                    out.json_line(event)
            except KeyboardInterrupt:
                raise Stopped(f"stopped following; the job goes on - `lfz jobs cancel {job}` stops it") from None
            return
        check_outcome(follow_job(api, out, job, after=after).final, job)
