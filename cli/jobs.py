"""`lfz train`, `lfz jobs ...` and `lfz events`: starting training, and watching and stopping jobs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.catalog import upload
from cli.client import ApiError, Client
from cli.connection import DEFAULT_URL, JsonOption, UrlOption, gateway, read_text_file, resolve_model
from cli.errors import EXIT_USAGE, CliError, Stopped
from cli.follow import check_outcome, describe, follow_job, submitted_then
from cli.overrides import hyperparameters
from cli.render import Output, duration, number, when
from model.config import describe_hyperparameters
from model.presets import DEFAULT_PRESET, PRESETS

jobs = typer.Typer(help="List, show and cancel jobs (training, evaluation, generation).", no_args_is_help=True)

JobArgument = Annotated[str, typer.Argument(help="A job's id.", show_default=False)]
PresetOption = Annotated[Optional[str], typer.Option(
    "--preset", help=f"{', '.join(PRESETS)} (default: {DEFAULT_PRESET}); `lfz presets` says what each is for.")]
MaxItersOption = Annotated[Optional[int], typer.Option("--max-iters", min=1, help="Training steps.")]
TokenizerOption = Annotated[str, typer.Option("--tokenizer", help="char, word or bpe.")]
VocabSizeOption = Annotated[Optional[int], typer.Option("--vocab-size", min=1,
                                                        help="Tokens in the vocabulary of a word or bpe tokenizer.")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="A hyperparameter, e.g. --set learning_rate=3e-4 (repeatable); `lfz presets` "
                                       "lists them all with their defaults and bounds.")]


def _hyperparameter_help() -> str:
    """Every hyperparameter --set takes, from the config dataclasses themselves: name, default, bounds, meaning."""
    lines = ["**Hyperparameters** (`--set NAME=VALUE`; `lfz presets` shows the presets' values):\n"]
    for spec in describe_hyperparameters():
        values = spec["bounds"] or ", ".join(spec["choices"] or [])
        also = f"; also {', '.join(spec['aliases'])}" if spec["aliases"] else ""
        lines.append(f"- `{spec['name']}` = {spec['default']}" + (f" ({values})" if values else "")
                     + f": {spec['help']}{also}")
    return "\n".join(lines)


HYPERPARAMETER_HELP = _hyperparameter_help()


def default_name(stem: str) -> str:
    return f"{stem[:60]}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(
    data: Annotated[Optional[str], typer.Option(
        "--data", help="A UTF-8 text file, or the id of an uploaded dataset (`lfz datasets list`).",
        show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="The model's name (default: file name + time).")]
    = None,
    continue_: Annotated[Optional[str], typer.Option(
        "--continue", help="Train this model (id or name) further, from its latest checkpoint; --max-iters counts "
                           "the steps to add. --data defaults to the model's own dataset.", show_default=False)]
    = None,
    preset: PresetOption = None, max_iters: MaxItersOption = None, tokenizer: TokenizerOption = "char",
    vocab_size: VocabSizeOption = None, sets: SetOption = None,
    processes: Annotated[int, typer.Option(
        "--processes", min=1, max=64, help="Training processes (DDP ranks) on one worker, one device each; the "
                                           "global batch (batch_size x grad_accum) is split over them.")] = 1,
    hosts: Annotated[int, typer.Option(
        "--hosts", min=1, max=64, help="Workers the job trains on, each with --processes ranks: the worker that claims "
                                       "it waits for others to join (LFZ_TRAIN_JOIN_TIMEOUT_S).")] = 1,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show the training live until it ends.")] = False,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Train a new model on a text file or an uploaded dataset, or (--continue) train a model further."""
    out = Output()
    hp = hyperparameters(sets or [], preset=preset, max_iters=max_iters)
    options = {"vocab_size": vocab_size} if vocab_size is not None else {}
    if "vocab_size" in hp:  # the tokenizer's, whichever flag says it
        options["vocab_size"] = hp.pop("vocab_size")
    if continue_ is None and data is None:
        raise CliError("give --data (a text file or a dataset id), or --continue MODEL to train a model further",
                       EXIT_USAGE)
    with gateway(url) as api:
        if continue_ is not None:
            if options or preset is not None or name is not None:
                raise CliError("--continue keeps the model's name, preset and tokenizer: drop --name, --preset and "
                               "--vocab-size", EXIT_USAGE)
            dataset_id, _ = dataset_for(api, out, data) if data is not None else (None, False)
            submitted = api.train_more(continue_, dataset_id=dataset_id, hyperparameters=hp, processes=processes,
                                       hosts=hosts)
        else:
            assert data is not None
            dataset_id, fresh = dataset_for(api, out, data)
            stem = Path(data).stem if Path(data).is_file() else data
            submitted = create_or_clean_up(api, dataset_id, fresh, name or default_name(stem), tokenizer=tokenizer,
                                           tokenizer_options=options, hyperparameters=hp, processes=processes,
                                           hosts=hosts)
        job_id = submitted["job_id"]
        submitted_then(api, out, submitted, f"model {submitted['model_id']}, training job {job_id}",
                       f"follow it: lfz events {job_id} --follow", follow=follow, as_json=as_json)


def dataset_for(api: Client, out: Output, data: str) -> tuple[str, bool]:
    """The dataset `--data` names, and whether this command has just uploaded it: a file is uploaded (the gateway
    keeps one copy of the same file); anything else must be the id of an upload."""
    path = Path(data)
    if path.exists() or "/" in data or path.suffix:  # a dataset id has neither a folder nor an extension
        read_text_file(path)  # a clear message for a missing, folder or binary file before anything is sent
        view = upload(api, out, path=path, name=path.name)
        out.note(("already uploaded as" if view.get("reused") else "uploaded as") + f" dataset {view['id']}")
        return view["id"], not view.get("reused")
    try:
        return api.get_dataset(data)["id"], False
    except ApiError as error:
        if error.status != 404:
            raise
    raise CliError(f"--data {data}: no such file, and no dataset with that id (`lfz datasets list` shows them)",
                   EXIT_USAGE)


def create_or_clean_up(api: Client, dataset_id: str, fresh_upload: bool, name: str, **request: Any) -> dict[str, Any]:
    """Create the model; if the gateway refuses it, an upload this command has just made is deleted again, so that a
    refused request leaves nothing behind."""
    try:
        return api.create_model(name, dataset_id=dataset_id, **request)
    except ApiError:
        if fresh_upload:
            api.delete_dataset(dataset_id)
        raise


def job_named(api: Client, job: str) -> str:
    """A job's id as given, or else the latest training job of the model with that id or name (an id that is
    neither may still name an upload's or a deletion's log: the caller asks for it)."""
    try:
        return api.get_job(job)["id"]
    except ApiError as error:
        if error.status != 404:
            raise
    try:
        model = api.get_model(job)
    except ApiError as error:
        if error.status != 404:
            raise
        return job
    if not model.get("train_job_id"):
        raise CliError(f"model {job!r} has no training job yet")
    return model["train_job_id"]


def job_status(j: dict[str, Any]) -> str:
    """The status, and for a job that waits for a worker, what it waits behind."""
    queue = j.get("queue")
    if j["status"] != "accepted" or not queue:
        return j["status"]
    return f"queued ({queue['ahead']} ahead, {queue['running']} running)"


def job_row(j: dict[str, Any]) -> list[Any]:
    steps = f"{j.get('step') or 0}/{j['max_iters']}" if j.get("max_iters") else "-"
    return [j["id"], j["kind"], job_status(j), j.get("model_name") or j.get("model_id"),
            f"{100 * (j.get('progress') or 0):.0f}%", steps, number(j.get("val_loss")), when(j.get("created_at"))]


@jobs.command("list")
def list_jobs(
    kind: Annotated[str, typer.Option(
        "--kind", help="train, evaluate or generate, or several separated by commas. Generations are left out "
                       "unless asked for.")] = "train,evaluate",
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
    out.table(["id", "kind", "status", "model", "progress", "steps", "val loss", "created"],
              [job_row(j) for j in listing["items"]], right=["progress", "steps", "val loss"])


@jobs.command("prune")
def prune_jobs(
    kind: Annotated[str, typer.Option("--kind", help="train, evaluate or generate, or several, comma separated.")]
    = "generate",
    older_than: Annotated[float, typer.Option("--older-than", min=0.0, help="Only jobs that ended at least this many "
                                                                            "hours ago.")] = 0.0,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Take finished jobs (by default generations) out of the listings; their events stay on the Kafka topic."""
    out = Output()
    pruned = 0
    with gateway(url) as api:
        while (batch := api.prune_jobs(kind=kind, older_than_s=older_than * 3600)["pruned"]) > 0:
            pruned += batch
    out.line(f"pruned {pruned} finished {kind.replace(',', ', ')} job(s)")


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
        ("id", view["id"]), ("kind", view["kind"]), ("status", job_status(view)),
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
    job: Annotated[str, typer.Argument(help="A job's id, or a model's id or name (its latest training job).",
                                       show_default=False)],
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
        job = job_named(api, job)
        try:
            show_events(api, out, job, follow, after, as_json)
        except ApiError as error:
            if error.status != 404:
                raise
            raise CliError(f"no job, and no model, has the id or name {job!r}: `lfz jobs list` and `lfz models list` "
                           "show them") from None


def show_events(api: Client, out: Output, job: str, follow: bool, after: int, as_json: bool) -> None:
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
