"""`lfz export` and `lfz import`: a model written as a Hugging Face transformers directory or a GGUF file and
downloaded to a folder; a transformers directory uploaded to become a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.connection import DEFAULT_URL, JsonOption, UrlOption, gateway, resolve_model
from cli.errors import CliError
from cli.follow import check_outcome, follow_job
from cli.render import Output
from events.commands import IMPORT_FILES

FORMAT_HELP = ("hf: config.json, model.safetensors and a tokenizer that transformers loads; gguf: one file for "
               "llama.cpp.")


def export(
    model: Annotated[str, typer.Argument(help="A model's id or name.", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="The folder to write the files into (created if missing).")],
    format: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "hf",
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or float16.")] = "float32",
    step: Annotated[Optional[int], typer.Option("--step", min=0, help="A saved checkpoint's step (default: the one "
                                                                      "that serves the model).")] = None,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Export a model so that other programs run it: transformers (`--format hf`) or llama.cpp (`--format gguf`)."""
    out = Output()
    if format not in ("hf", "gguf"):
        raise CliError(f"--format: must be hf or gguf, got {format!r}")
    if dtype not in ("float32", "float16"):
        raise CliError(f"--dtype: must be float32 or float16, got {dtype!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out: {out_dir} exists and is not a folder")
    with gateway(url) as api:
        detail = resolve_model(api, model)
        job_id = api.export(detail["id"], format=format, dtype=dtype, step=step)["job_id"]
        out.note(f"export job {job_id} ...")
        check_outcome(follow_job(api, out, job_id, show=False).final, job_id)
        listing = api.get_export(job_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        for file in listing["files"]:
            api.download_export_file(job_id, file["name"], out_dir / file["name"])
    if as_json:
        out.json({**listing, "out": str(out_dir)})
        return
    rows: list[tuple[str, object]] = [("architecture", listing["architecture"]), ("step", listing["step"]),
                                      ("dtype", listing["dtype"])]
    rows += [(file["name"], f"{file['bytes']:,} bytes") for file in listing["files"]]
    out.fields(rows, title=f"{detail['name']} exported to {out_dir} (job {job_id})")
    if format == "hf":
        out.note(f"load it: AutoModelForCausalLM.from_pretrained({str(out_dir)!r}) and AutoTokenizer.from_pretrained"
                 f"({str(out_dir)!r})")
    else:
        out.note(f"run it: llama-cli -m {out_dir / 'model.gguf'}")


def import_model(
    folder: Annotated[Path, typer.Argument(help="A transformers model directory: config.json, model.safetensors, "
                                                "tokenizer.json (e.g. written by `lfz export`).", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="The new model's name.")],
    description: Annotated[str, typer.Option("--description", help="What the model is.")] = "",
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Import a model: it then generates, evaluates and trains further like one trained here."""
    out = Output()
    if not folder.is_dir():
        raise CliError(f"{folder}: not a folder")
    missing = [n for n in IMPORT_FILES if not (folder / n).is_file()]
    if missing:
        raise CliError(f"{folder}: {', '.join(missing)} missing")
    with gateway(url) as api:
        job_id = api.import_model(folder, name, description)["job_id"]
        out.note(f"import job {job_id} ...")
        final = check_outcome(follow_job(api, out, job_id, show=False).final, job_id)
        detail = api.get_model(final["model_id"])
    if as_json:
        out.json({"job_id": job_id, "model_id": detail["id"], "name": detail["name"], "status": detail["status"],
                  "architecture": final["architecture"], "num_parameters": final["num_parameters"]})
        return
    out.fields([("model", f"{detail['name']} ({detail['id']})"), ("from", final["architecture"]),
                ("parameters", f"{final['num_parameters']:,}")], title=f"imported {folder}")
    out.note(f"try it: lfz generate {detail['name']} \"\" --max-tokens 50")
