"""`lfz demo`: the whole product in about two minutes on a laptop CPU, through the real event pipeline.

It starts the stack (unless `--url` names a running gateway), uploads a corpus, creates a model, follows its
training live, evaluates it, streams a few samples, prints a summary and writes `report.json` and `loss.png`.
The default corpus needs no download: the English help texts every CPython carries in `pydoc_data`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import httpx
import typer

from cli.client import ApiError, Client
from cli.catalog import upload
from cli.connection import gateway, read_text_file
from cli.errors import Stopped
from cli.follow import check_outcome, follow_job
from cli.inference import prompts_from, stream_generation
from cli.jobs import MaxItersOption, SetOption, TokenizerOption
from cli.overrides import hyperparameters
from cli.render import Output, duration, number
from cli.report import curves, write_outputs
from cli.stack import Stack, Watchdog, shielded, stop_signals_interrupt
from infra.process import free_port
from infra.settings import load_settings

DEMO_PRESET = "cpu-baby"
DEMO_MAX_ITERS = 2000  # with the stack's start, the evaluation and the samples: about two minutes on two CPU cores
SAMPLE_TOKENS = 200
EVALUATION_TOKENS = 64
DEFAULT_OUT = Path("lfz-demo-output")


def default_corpus() -> tuple[str, str]:
    """(text, where it comes from): Python's own reference help texts, installed with every CPython."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[name].strip() for name in sorted(topics)) + "\n"
    return text, "pydoc_data.topics (the Python reference help texts)"


@dataclass
class DemoRun:
    """What the demo has done so far: enough to cancel its job on Ctrl-C and to write the report."""

    corpus: str
    source: str
    hyperparameters: dict[str, Any]
    tokenizer: str
    samples: int
    started: float = field(default_factory=time.monotonic)
    job_id: str | None = None  # the job running now: training, then evaluation
    phases: dict[str, float] = field(default_factory=dict)  # seconds each step took, for the report

    def lap(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.phases[phase] = round(now - since, 2)
        return now


def run_demo(api: Client, out: Output, run: DemoRun, out_dir: Path) -> dict[str, Any]:
    """Upload, train (live), evaluate, sample; returns the report, written to `out_dir` with its plot."""
    mark = time.monotonic()
    dataset = upload(api, out, text=run.corpus, name=run.source.split(" ")[0][:200])
    mark = run.lap("upload_s", mark)
    out.line(f"corpus: {len(run.corpus):,} characters from {run.source}")
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    submitted = api.create_model(name, dataset_id=dataset["id"], tokenizer=run.tokenizer,
                                 hyperparameters=run.hyperparameters, description="made by `lfz demo`")
    run.job_id, model_id = submitted["job_id"], submitted["model_id"]
    out.line(f"model {name}: training job {run.job_id}")
    follower = follow_job(api, out, run.job_id)
    trained = check_outcome(follower.final, run.job_id)
    mark = run.lap("training_s", mark)  # from the request to the recorded end: queueing and the child's start too

    out.line("evaluating on the validation split (text the model never trained on) ...")
    prompts = prompts_from(run.corpus, max(run.samples, 1))
    run.job_id = api.evaluate(model_id, prompts=prompts[:1], max_new_tokens=EVALUATION_TOKENS)["job_id"]
    evaluation = check_outcome(follow_job(api, out, run.job_id).final, run.job_id)
    mark = run.lap("evaluation_s", mark)
    samples = []
    for index, prompt in enumerate(prompts[:run.samples]):
        out.line(f"\nsample {index + 1} of {run.samples}", "bold")
        done = stream_generation(api, out, model_id, prompt, echo_prompt=True, max_tokens=SAMPLE_TOKENS,
                                 temperature=0.8, seed=index)
        samples.append({"prompt": prompt, "completion": done["completions"][0]["text"],
                        "tokens": done["completion_tokens"], "tokens_per_s": done.get("tokens_per_s"),
                        "ttft_ms": done.get("ttft_ms")})

    run.lap("samples_s", mark)
    train, validation = curves(api.job_log(trained["job_id"]))
    report = build_report(run, api.get_model(model_id), trained, evaluation["report"], samples)
    paths = write_outputs(out_dir, report, train, validation,
                          title=f"{name} ({run.hyperparameters.get('preset', 'classic')}, {run.tokenizer} tokens)")
    summary(out, report)
    out.line(f"report: {paths[0]}\nloss curve: {paths[1]}")
    return report


def build_report(run: DemoRun, model: dict[str, Any], trained: dict[str, Any], evaluation: dict[str, Any],
                 samples: list[dict[str, Any]]) -> dict[str, Any]:
    speeds = [s["tokens_per_s"] for s in samples if s.get("tokens_per_s")]
    return {
        "model": {key: model.get(key) for key in ("id", "name", "tokenizer", "vocab_size", "num_parameters",
                                                   "hyperparameters", "config")},
        "corpus": {"source": run.source, "characters": len(run.corpus)},
        "training": {key: trained.get(key) for key in ("final_step", "wall_s", "tokens_per_s", "train_loss",
                                                        "val_loss", "best_val_loss", "perplexity", "stopped_early")}
        | {"job_id": trained.get("job_id")},
        "evaluation": evaluation,
        "samples": samples,
        "generation_tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
        "wall_s": time.monotonic() - run.started,
        "phases_s": run.phases,
    }


def summary(out: Output, report: dict[str, Any]) -> None:
    training, held = report["training"], (report["evaluation"].get("held_out") or {})
    rows = [
        ("parameters", number(report["model"]["num_parameters"])),
        ("training", f"{training['final_step']} steps in {duration(training['wall_s'])} "
                     f"({number(training.get('tokens_per_s'))} tokens/s)"),
        ("training loss", number(training.get("train_loss"))),
        ("validation loss", number(training.get("val_loss"))),
        ("validation perplexity", number(training.get("perplexity"))),
        ("bits per character", f"{number(held.get('bits_per_character'))} (held-out {held.get('characters', 0):,} "
                               f"characters, perplexity {number(held.get('perplexity'))})"),
        ("generation speed", f"{number(report['generation_tokens_per_s'])} tokens/s"),
        ("wall time", duration(report["wall_s"])),
    ]
    out.line()
    out.fields(rows, title="demo summary")


def demo(
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Train on this UTF-8 text file instead of Python's own help texts.")] = None,
    preset: Annotated[str, typer.Option("--preset", help="tiny, classic, cpu-baby or small.")] = DEMO_PRESET,
    max_iters: MaxItersOption = DEMO_MAX_ITERS,
    tokenizer: TokenizerOption = "char",
    sets: SetOption = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where report.json and loss.png go.")] = DEFAULT_OUT,
    url: Annotated[Optional[str], typer.Option(
        "--url", help="Use the gateway running there instead of starting the stack (API key: LFZ_API_KEY).")]
    = None,
    samples: Annotated[int, typer.Option("--samples", min=0, max=20, help="Samples to generate.")] = 3,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port of the demo's own gateway "
                                                                        "(0: a free one).")] = 0,
) -> None:
    """Start the stack, train a small model with a live progress bar, evaluate it and sample from it."""
    out = Output()
    hp = hyperparameters(sets or [], preset=preset, max_iters=max_iters)
    corpus, source = (read_text_file(data), str(data)) if data is not None else default_corpus()
    run = DemoRun(corpus=corpus, source=source, hyperparameters=hp, tokenizer=tokenizer, samples=samples)
    if url is not None:
        with gateway(url, timeout_s=600.0) as api:
            run_demo(api, out, run, out_dir)
        return
    stack = Stack(load_settings(), port=port or free_port(), say=out.note)
    try:
        with stop_signals_interrupt():
            out.note("starting the stack: broker, agents worker, gateway ...")
            stack.start()
            run.lap("stack_start_s", run.started)
            out.note(f"stack up at {stack.url} in {duration(time.monotonic() - run.started)} (logs in {stack.log_dir})")
            with Watchdog(stack) as watchdog, gateway(stack.url, timeout_s=600.0) as api:
                try:
                    run_demo(api, out, run, out_dir)
                except (KeyboardInterrupt, Stopped):
                    if watchdog.failure is not None:
                        raise watchdog.failure from None
                    raise Stopped(_cancel(api, out, run.job_id)) from None
    finally:
        with shielded():
            stack.stop()
    out.note(f"demo finished in {duration(time.monotonic() - run.started)}; the stack is stopped")


def _cancel(api: Client, out: Output, job_id: str | None, timeout_s: float = 30.0) -> str:
    """Cancel the demo's job and wait for it to end, so that stopping the stack does not hand it back to the queue
    (the next `lfz up` would resume it). Returns what happened, to say."""
    if job_id is None:
        return "demo stopped"
    out.note("stopping the demo: cancelling its job (Ctrl-C again to stop at once) ...")
    deadline = time.monotonic() + timeout_s
    try:
        api.cancel_job(job_id)
        while time.monotonic() < deadline:
            if api.get_job(job_id)["status"] in ("cancelled", "completed", "failed"):
                return "demo stopped; its job was cancelled"
            time.sleep(0.3)
    except ApiError as error:
        if error.status == 409:  # it had finished already
            return "demo stopped"
    except httpx.HTTPError:
        pass
    return f"demo stopped; its job {job_id} did not end in time and goes back to the queue: `lfz jobs cancel` it"
