"""Following a job while it runs: a progress bar for training (step, loss, tokens/s, ETA) on a terminal, a line
every few seconds otherwise, one line for each other event, and the outcome at the end.

Ctrl-C stops the following, never the job: `follow_job` turns it into `Stopped`, whose message says how to cancel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cli.client import ApiError, Client
from cli.errors import JobFailed, Stopped
from cli.render import Output, duration, number
from events import FAILED_TYPE_FOR_KIND, TERMINAL_TYPES

# The facts that end a job without its result: each kind's failure, and a cancel.
FAILURES = (*(fact.model_fields["type"].default for fact in FAILED_TYPE_FOR_KIND.values()), "JobCancelled")
PLAIN_PROGRESS_EVERY_S = 5.0
FINISHED = ("completed", "failed", "cancelled")
RECORD_WAIT_S = 30.0


def describe(event: dict[str, Any]) -> str:
    """One line saying what an event means."""
    kind, e = event.get("type", "?"), event
    if kind == "JobAccepted":
        return f"accepted: {e.get('kind')} job" + (f" for model {e['model_name']}" if e.get("model_name") else "")
    if kind == "TrainStarted":
        resumed = f", resumed from step {e['resumed_from_step']}" if e.get("resumed_from_step") else ""
        where = e.get("device")
        if e.get("world_size", 1) > 1:  # tokens/s in the progress lines is then the ranks' sum
            where = f"{e['world_size']} processes ({', '.join(e.get('ranks') or [])})"
        return (f"training started on {where}: {e.get('num_parameters', 0):,} parameters, "
                f"{e.get('max_iters')} steps, attempt {e.get('attempt', 1)}{resumed}")
    if kind == "TrainRendezvous":
        return (f"waiting for {e.get('hosts', 2) - 1} more host(s) to join at {e.get('endpoint')} "
                f"({e.get('processes', 1)} process(es) each, for up to {duration(e.get('join_timeout_s'))})")
    if kind == "TrainProgress":
        warning = f"\n  note: {e['warning']}" if e.get("warning") else ""
        return (f"step {e['step']}/{e['max_iters']}  loss {e['loss']:.4f}  {e.get('tokens_per_s', 0):,.0f} tok/s  "
                f"eta {duration(e.get('eta_s'))}{warning}")
    if kind == "ValidationCompleted":
        return f"step {e['step']}: validation loss {e['val_loss']:.4f} (best {e['best_val_loss']:.4f})"
    if kind == "CheckpointSaved":
        return f"checkpoint at step {e['step']}" + (" (best so far)" if e.get("is_best") else "")
    if kind == "TrainCompleted":
        return (f"training completed at step {e['final_step']} in {duration(e.get('wall_s'))}: validation loss "
                f"{number(e.get('val_loss'))}, perplexity {number(e.get('perplexity'))}")
    if kind == "EvaluationCompleted":
        held = (e.get("report") or {}).get("held_out") or {}
        return (f"evaluation completed: held-out loss {number(held.get('loss'))}, perplexity "
                f"{number(held.get('perplexity'))}, {number(held.get('bits_per_character'))} bits per character")
    if kind == "ExportCompleted":
        return (f"export completed: {e.get('architecture')}, step {e.get('step')}, "
                f"{sum(f.get('bytes', 0) for f in e.get('files', [])):,} bytes in {len(e.get('files', []))} files")
    if kind == "ModelImported":
        return f"model imported from {e.get('architecture')}: {e.get('num_parameters', 0):,} parameters"
    if kind == "TokensGenerated":
        return f"tokens {e.get('index')}+: {e.get('text', '')!r}"
    if kind == "GenerationCompleted":
        return (f"generation completed: {e.get('completion_tokens')} tokens, "
                f"{number(e.get('tokens_per_s'))} tokens/s")
    if kind == "DatasetUploaded":
        return f"dataset {e.get('name')!r} uploaded ({e.get('bytes', 0):,} bytes)"
    if kind == "TokenizeProgress":
        total = e.get("bytes_total") or 0
        share = f" {100 * e.get('bytes_done', 0) / total:.0f}%" if total else ""
        speed = f", {e['mb_per_s']:.1f} MB/s" if e.get("mb_per_s") else ""
        return f"tokenizing: {e.get('phase')}{share} ({number(e.get('tokens'))} tokens{speed})"
    if kind == "DatasetTokenized":
        again = "found from an earlier run" if e.get("reused") else f"made in {duration(e.get('wall_s'))}"
        return (f"dataset tokenized ({again}): {number(e.get('tokens'))} tokens in {e.get('shards')} shards of "
                f"{e.get('dtype')}, vocabulary {number(e.get('vocab_size'))}, {number(e.get('documents'))} documents")
    if kind == "TokenizeCompleted":
        speed = f" at {e['mb_per_s']:.1f} MB/s" if e.get("mb_per_s") else ""
        return f"tokenize completed in {duration(e.get('wall_s'))}{speed}"
    if kind == "ModelDeleted":
        return f"model {e.get('model_id')} deleted"
    if kind == "SweepStarted":
        return (f"sweep started: {len(e.get('trials', []))} trials ({e.get('method')}), minimising {e.get('metric')}, "
                f"early stopping {e.get('early_stopping', {}).get('rule')}")
    if kind == "SweepTrialStopped":
        return f"trial {e.get('index')} stopped early at step {e.get('step')}: {e.get('reason')}"
    if kind == "SweepProgress":
        best = e.get("best") or {}
        leader = f"; best so far trial {best['index']} {best['parameters']}: {best['value']:.4f}" if best else ""
        return (f"trials: {e.get('finished')}/{e.get('total')} ended ({e.get('stopped')} stopped early, "
                f"{e.get('failed')} failed){leader}")
    if kind == "SweepCompleted":
        best = e.get("best") or {}
        won = (f"best: trial {best['index']} {best['parameters']}, {best['value']:.4f} at step {best['step']}, "
               f"version {best.get('version')}" if best else "no trial completed")
        alias = f" (now @{e['alias']})" if e.get("alias") else ""
        return (f"sweep completed in {duration(e.get('wall_s'))}: {won}{alias}; {number(e.get('steps_run'))} of "
                f"{number(e.get('steps_planned'))} planned steps run")
    if kind == "JobCancelled":
        return f"cancelled: {e.get('reason')}"
    if kind in FAILURES:
        where = f" [{e['field']}]" if e.get("field") else ""
        return f"failed: {e.get('reason')}{where}"
    return kind


def check_outcome(final: dict[str, Any] | None, job_id: str) -> dict[str, Any]:
    """The terminal event when the job succeeded; JobFailed saying why otherwise."""
    if final is None:
        raise JobFailed(f"the event stream of job {job_id} ended before the job did; `lfz jobs show {job_id}`")
    if final.get("type") == "JobCancelled":
        raise JobFailed(f"job {job_id} was cancelled: {final.get('reason')}")
    if final.get("type") in FAILURES:
        raise JobFailed(f"job {job_id} failed: {final.get('reason')}")
    return final


class Follower:
    """Shows the events of one job as they come; keeps the loss curve and the terminal event."""

    def __init__(self, out: Output, job_id: str, clock: Callable[[], float] = time.monotonic, show: bool = True):
        self.out, self.job_id, self.clock, self.show = out, job_id, clock, show
        self.final: dict[str, Any] | None = None
        self.started: dict[str, Any] | None = None
        self.losses: list[tuple[int, float]] = []
        self.val_losses: list[tuple[int, float]] = []
        self._progress: Progress | None = None
        self._task: Any = None
        self._last_line = float("-inf")

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _say(self, text: str, style: str | None = None) -> None:
        if not self.show:
            return
        if self._progress is not None:
            self._progress.console.print(text, style=style, markup=False, highlight=False)
        else:
            self.out.line(text, style)

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "TrainStarted":
            self.started = event
            self._say(describe(event))
            if self.out.rich and self.show:
                self._open_bar(event)
        elif kind == "TrainProgress":
            self.losses.append((event["step"], event["loss"]))
            if event.get("warning"):
                self._say(f"note: {event['warning']}", "yellow")
            self._progress_update(event)
        elif kind == "ValidationCompleted":
            self.val_losses.append((event["step"], event["val_loss"]))
            self._say(describe(event), "cyan")
        elif kind == "CheckpointSaved":
            pass  # many and dull; `lfz events` lists them
        elif kind == "TokensGenerated":
            pass
        else:
            failed = kind in FAILURES
            if kind in ("TrainCompleted", *FAILURES) and self._progress is not None:
                self._progress.stop()
                self._progress = None
            self._say(describe(event), "bold red" if failed else ("bold green" if kind != "JobAccepted" else None))
        if event.get("type") in TERMINAL_TYPES:
            self.final = event

    def _open_bar(self, started: dict[str, Any]) -> None:
        if self._progress is not None:  # a later attempt of the same job (a worker handed it back)
            self._progress.stop()
        self._progress = Progress(
            TextColumn("[bold]training"), BarColumn(),
            TextColumn("{task.completed:>.0f}/{task.total:.0f}"),
            TextColumn("loss [bold]{task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
            TextColumn("eta {task.fields[eta]}"), TimeElapsedColumn(),
            console=self.out.out, transient=False, refresh_per_second=4,
        )
        self._task = self._progress.add_task("training", total=started.get("max_iters") or 1,
                                             completed=started.get("resumed_from_step") or 0,
                                             loss="-", speed="-", eta="-")
        self._progress.start()

    def _progress_update(self, event: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=event["step"], total=event["max_iters"],
                                  loss=f"{event['loss']:.4f}", speed=f"{event.get('tokens_per_s', 0):,.0f}",
                                  eta=duration(event.get("eta_s")))
            return
        now = self.clock()
        if now - self._last_line >= PLAIN_PROGRESS_EVERY_S or event["step"] >= event["max_iters"]:
            self._last_line = now
            self._say(describe(event))


def follow_job(api: Client, out: Output, job_id: str, after: int = 0, show: bool = True) -> Follower:
    """Show the job's events until its terminal one (or only wait for it, without `show`); returns the follower
    (curve, final event).

    The live stream can be a moment ahead of the database: once the job has ended, this waits (briefly) for the
    job's row to say so, so that the next command (generate with the new model) finds it trained."""
    follower = Follower(out, job_id, show=show)
    try:
        with follower:
            for event in api.follow_job(job_id, after=after):
                follower.handle(event)
        deadline = time.monotonic() + RECORD_WAIT_S
        while follower.final is not None and time.monotonic() < deadline:
            try:
                if api.get_job(job_id)["status"] in FINISHED:
                    break
            except ApiError as error:
                if error.status == 404:  # uploads and deletions have a log but no job row
                    break
                raise
            time.sleep(0.2)
    except KeyboardInterrupt:
        raise Stopped(f"stopped following; the job goes on - `lfz jobs cancel {job_id}` stops it") from None
    return follower


def submitted_then(api: Client, out: Output, submitted: dict[str, Any], said: str, hint: str, *, follow: bool,
                   as_json: bool) -> None:
    """What a command that has submitted a job shows: the answer (--json), or what it started and the job's id, or
    (--follow) the job live until it ends, then its final state with --json."""
    if as_json and not follow:
        out.json(submitted)
        return
    job_id = submitted["job_id"]
    out.note(f"{said} ({submitted['status']})")
    if not follow:
        out.line(job_id)
        out.note(hint)
        return
    final = check_outcome(follow_job(api, out, job_id, show=not as_json).final, job_id)
    if as_json:
        out.json(final)
