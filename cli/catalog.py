"""`lfz datasets ...` and `lfz models ...`: what the gateway holds, uploaded, listed, shown and deleted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.client import ApiError, Client
from cli.connection import DEFAULT_URL, JsonOption, UrlOption, gateway, resolve_model
from cli.errors import EXIT_USAGE, CliError
from cli.follow import submitted_then
from cli.render import Output, number, when
from cli.uploads import guess_format, upload_file

datasets = typer.Typer(help="Upload training text and list what is uploaded.", no_args_is_help=True)
models = typer.Typer(help="List, show and delete models; their versions, aliases and serving checkpoint.",
                     no_args_is_help=True)

LimitOption = Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many rows.")]
RECORD_WAIT_S = 120.0


def upload(api: Client, out: Output, *, path: Path | None = None, text: str | None = None,
           name: str | None = None) -> dict[str, Any]:
    """Upload a dataset and wait until the agents have recorded it, so that a model can be trained on it at once.

    The gateway answers `stored` when the record agent has not caught up yet (a stack that is still starting)."""
    view = api.upload_dataset(text, path=path, name=name)
    return wait_recorded(api, out, view) if view.get("status") == "stored" else view


@datasets.command("upload")
def upload_dataset(
    file: Annotated[Path, typer.Argument(help="A text, JSON Lines or Parquet file (.gz too).", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="Defaults to the file's name.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="text, jsonl or parquet; by default from the "
                                                                  "file's name (.jsonl, .parquet, else text).")] = None,
    compression: Annotated[Optional[str], typer.Option("--compression", help="none or gzip; by default gzip for "
                                                                              "a .gz file.")] = None,
    text_column: Annotated[str, typer.Option("--text-column", help="The field (JSON Lines) or column (Parquet) "
                                                                   "that holds the text.")] = "text",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Upload a dataset file of any size, with a progress bar; interrupted, the same command resumes it. Train on it
    later with its id (`lfz train --data <id>`). The same file is stored once."""
    out = Output()
    guessed_format, guessed_compression = guess_format(file)
    with gateway(url) as api:
        view = upload_file(api, file, name=name or file.name, fmt=fmt or guessed_format,
                           compression=compression or guessed_compression, text_column=text_column,
                           show_progress=not as_json and out.err.is_terminal)
        if view.get("status") == "stored":
            view = wait_recorded(api, out, view)
    if as_json:
        out.json(view)
        return
    done = "already uploaded" if view.get("reused") else "uploaded"
    out.line(f"{done} {view['name']!r} as dataset {view['id']} ({view['bytes']:,} bytes, {view['format']}); train "
             f"on it: lfz train --data {view['id']}")


def wait_recorded(api: Client, out: Output, view: dict[str, Any]) -> dict[str, Any]:
    out.note("waiting for the agents to record the upload (are they still starting?) ...")
    deadline = time.monotonic() + RECORD_WAIT_S
    while time.monotonic() < deadline:
        try:
            return api.get_dataset(view["id"])
        except ApiError as error:
            if error.status != 404:
                raise
        time.sleep(0.5)
    raise CliError(f"the upload {view['id']} was stored but no agents worker recorded it within "
                   f"{RECORD_WAIT_S:.0f}s: is a worker running?")


@datasets.command("show")
def show_dataset(
    dataset: Annotated[str, typer.Argument(help="A dataset's id.", show_default=False)],
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """A dataset: its size, format and documents, and its tokenizations (tokens, vocabulary, shards)."""
    out = Output()
    with gateway(url) as api:
        view = api.get_dataset(dataset)
    if as_json:
        out.json(view)
        return
    compression = " (gzip)" if view.get("compression") == "gzip" else ""
    out.line(f"{view['name']} ({view['id']}): {view['bytes']:,} bytes of {view['format']}{compression}, "
             f"{number(view.get('characters'))} characters, {number(view.get('documents'))} documents")
    rows = [[t["id"], t["status"], t.get("tokenizer") or "-", number(t.get("vocab_size")), number(t["tokens"]),
             t.get("shards") or "-", t.get("dtype") or "-",
             t.get("phase") or t.get("error") or (f"{t['wall_s']:.1f}s" if t.get("wall_s") else "")]
            for t in view.get("tokenizations") or []]
    if rows:
        out.table(["tokenization", "status", "tokenizer", "vocabulary", "tokens", "shards", "dtype", "note"], rows,
                  right=["vocabulary", "tokens"])
    else:
        out.note(f"not tokenized yet: lfz datasets tokenize {view['id']} (or train on it)")


@datasets.command("tokenize")
def tokenize_dataset(
    dataset: Annotated[str, typer.Argument(help="A dataset's id.", show_default=False)],
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="char, word or bpe.")] = "char",
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help="word and bpe.")] = None,
    sample_bytes: Annotated[Optional[int], typer.Option("--sample-bytes", help="Train the tokenizer on about this "
                                                                               "many bytes (all by default).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show its progress until it ends.")] = False,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Tokenize a dataset once into token shards; every training run that names it with these settings reads them."""
    out = Output()
    options = {"vocab_size": vocab_size} if vocab_size is not None else {}
    with gateway(url) as api:
        submitted = api.tokenize_dataset(dataset, tokenizer, options, sample_bytes)
        submitted_then(api, out, submitted, f"tokenizing dataset {dataset} with {tokenizer}",
                       f"follow it: lfz jobs follow {submitted['job_id']}", follow=follow, as_json=as_json)


@datasets.command("delete")
def delete_dataset(
    dataset: Annotated[str, typer.Argument(help="A dataset's id.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Delete an uploaded dataset (models trained on it keep their checkpoints)."""
    out = Output()
    with gateway(url) as api:
        view = api.get_dataset(dataset)
        confirm(out, yes, f"delete dataset {view['name']} ({view['id']})?")
        api.delete_dataset(view["id"])
    out.line(f"deleted dataset {view['name']} ({view['id']})")


@datasets.command("list")
def list_datasets(url: UrlOption = DEFAULT_URL, limit: LimitOption = 50,
                  as_json: JsonOption = False) -> None:
    """The uploaded datasets, newest first."""
    out = Output()
    with gateway(url) as api:
        listing = api.list_datasets(limit=limit)
    if as_json:
        out.json(listing)
        return
    rows = [[d["id"], d["name"], d.get("format", "text") + (" (gzip)" if d.get("compression") == "gzip" else ""),
             number(d["bytes"]), number(d.get("characters")), number(d.get("documents")), when(d.get("created_at"))]
            for d in listing["items"]]
    out.table(["id", "name", "format", "bytes", "characters", "documents", "created"], rows,
              right=["bytes", "characters", "documents"])
    _more(out, listing)


def _more(out: Output, listing: dict[str, Any]) -> None:
    shown = len(listing["items"])
    if listing["total"] > shown + listing["offset"]:
        out.note(f"{shown} of {listing['total']} shown; --limit shows more")


def confirm(out: Output, yes: bool, question: str) -> None:
    """Ask before deleting, unless --yes; without a terminal to ask on, refuse."""
    if yes:
        return
    if not out.out.is_terminal:
        raise CliError("refusing to delete without confirmation: add --yes", EXIT_USAGE)
    typer.confirm(question, abort=True)


MODEL_COLUMNS = ["id", "name", "version", "status", "progress", "steps", "parameters", "val loss", "created"]


def model_row(m: dict[str, Any]) -> list[Any]:
    val_loss = (m.get("metrics") or {}).get("val_loss")
    steps = f"{m.get('step') or 0}/{m['max_iters']}" if m.get("max_iters") else str(m.get("step") or 0)
    return [m["id"], m["name"], m.get("version") or "-", m["status"], f"{100 * (m.get('progress') or 0):.0f}%", steps,
            number(m.get("num_parameters")), number(val_loss), when(m.get("created_at"))]


@models.command("list")
def list_models(
    status: Annotated[Optional[str], typer.Option(
        "--status", help="pending, training, completed, failed, cancelled or deleted.")] = None,
    url: UrlOption = DEFAULT_URL, limit: LimitOption = 50, as_json: JsonOption = False,
) -> None:
    """The models, newest first."""
    out = Output()
    with gateway(url) as api:
        listing = api.list_models(status=status, limit=limit)
    if as_json:
        out.json(listing)
        return
    out.table(MODEL_COLUMNS, [model_row(m) for m in listing["items"]],
              right=["version", "progress", "steps", "parameters", "val loss"])
    _more(out, listing)


@models.command("show")
def show_model(
    model: Annotated[str, typer.Argument(help="A model: id, name (its newest version), name@alias or name/version.",
                                         show_default=False)],
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Everything about one model version: status, lineage, configuration, metrics, checkpoints, evaluation."""
    out = Output()
    with gateway(url) as api:
        detail = resolve_model(api, model)
    if as_json:
        out.json(detail)
        return
    metrics = detail.get("metrics") or {}
    evaluation = detail.get("latest_evaluation") or {}
    held = (evaluation.get("report") or {}).get("held_out") or {}
    best = next((c["step"] for c in detail.get("checkpoints", []) if c.get("is_best")), None)
    serving = detail.get("serving_checkpoint")
    serves = f"{serving['kind']} checkpoint, step {serving.get('step')}" if serving else "- (no checkpoint yet)"
    serves += f" (chose {detail.get('serve', 'best')}: `lfz models serve`)"
    out.fields([
        ("id", detail["id"]), ("name", detail["name"]), ("version", detail.get("ref")),
        ("parent", detail.get("parent_id")), ("aliases", ", ".join(detail.get("aliases") or []) or "-"),
        ("status", detail["status"]),
        ("progress", f"{100 * (detail.get('progress') or 0):.0f}% (step {detail.get('step') or 0} of "
                     f"{detail.get('max_iters') or '-'})"),
        ("error", detail.get("error")),
        ("tokenizer", f"{detail.get('tokenizer') or '-'} (vocabulary {number(detail.get('vocab_size'))})"),
        ("parameters", number(detail.get("num_parameters"))),
        ("hyperparameters", detail.get("hyperparameters")),
        ("validation loss", number(metrics.get("val_loss"))),
        ("perplexity", number(metrics.get("perplexity"))),
        ("checkpoints", f"{len(detail.get('checkpoints', []))} (best at step {best if best is not None else '-'})"),
        ("serves from", serves),
        ("held-out perplexity", number(held.get("perplexity")) if held else "- (`lfz evaluate` measures it)"),
        ("train job", detail.get("train_job_id")),
        ("created", when(detail.get("created_at"))), ("trained", when(detail.get("trained_at"))),
    ], title=f"model {detail['name']}")


@models.command("delete")
def delete_model(
    model: Annotated[str, typer.Argument(help="A model version: id, name (its newest version), name@alias or "
                                              "name/version.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Delete a model version (its training stops; its checkpoints and aliases go; the name's other versions stay)."""
    out = Output()
    with gateway(url) as api:
        detail = resolve_model(api, model)
        confirm(out, yes, f"delete model {detail.get('ref') or detail['name']} ({detail['id']})?")
        api.delete_model(detail["id"])
    out.line(f"deleted model {detail.get('ref') or detail['name']} ({detail['id']})")


def presets(
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """The presets (what each is for, its values), then every hyperparameter `--set` takes: its meaning, default,
    bounds or choices, and the other names it answers to (the classic upper-case ones, nanoGPT's)."""
    out = Output()
    with gateway(url) as api:
        document = api.presets()
    if as_json:
        out.json(document)
        return
    out.table(["preset", "for"], [[("* " if p["name"] == document["default"] else "") + p["name"], p["about"]]
                                  for p in document["presets"]], title="presets (* the default)")
    rows = [[h["name"], h["default"], h["bounds"] or (", ".join(h["choices"]) if h["choices"] else ""), h["help"]
             + (f" (also {', '.join(h['aliases'])})" if h["aliases"] else "")] for h in document["hyperparameters"]]
    out.table(["hyperparameter", "default", "values", "meaning"], rows, title="hyperparameters (--set NAME=VALUE)")
    tokenizers = [[kind, ", ".join(f"{name} (default {spec['default']})" for name, spec in options.items()) or "-"]
                  for kind, options in document["tokenizers"].items()]
    out.table(["tokenizer", "options (--vocab-size sets vocab_size)"], tokenizers)
