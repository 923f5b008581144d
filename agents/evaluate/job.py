"""Evaluation, as the child process runs it: load the model, measure it, write the report to the object store.

Held-out text is what the request gave or, by default, the validation split of the model's own training data:
the tail that the trainer held out and never trained on.
"""

from __future__ import annotations

import json

from agents.jobs.child import JobContext
from agents.jobs.kinds import JobKind, JobSpec
from agents.tokenize.job import DatasetSource, Stopped, mapped_tokens, tokenize
from agents.train import checkpoints
from agents.train.job import read_text
from events import EvaluationCompleted, JobCancelled, Rejected
from model.checkpoint import load_model
from model.data import split_tokens
from model.evaluate import evaluate
from model.generate import SamplingParams
from model.tokenizers import Tokenizer

DEFAULT_PROMPTS = 4
MAX_HELD_OUT_TOKENS = 1 << 20  # of a training dataset's validation split: a large corpus's would take hours


class EvaluateSpec(JobSpec):
    """An evaluation as the evaluate agent accepted it."""

    checkpoint_key: str
    held_out_key: str | None = None  # the request's held-out text; else the model's own training data's tail
    training_dataset_key: str | None = None
    training_dataset_format: dict[str, str] | None = None  # its format, compression and text column
    prompts: list[str] = []
    max_new_tokens: int
    seed: int | None = None
    report_key: str


def _default_prompts(text: str, count: int = DEFAULT_PROMPTS) -> list[str]:
    """Beginnings of a few lines spread over the held-out text, so the prompts look like the data."""
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) >= 8]
    if not lines:
        return [text[:16]]
    picks = [lines[i * len(lines) // count] for i in range(min(count, len(lines)))]
    return [" ".join(line.split()[:3]) for line in picks]


def _validation_split(spec: EvaluateSpec, job: JobContext, tokenizer: Tokenizer,
                      val_fraction: float) -> tuple[str, str]:
    """The held-out end of the training data, read from the dataset's shards made by the model's own tokenizer (made
    now if they are gone), its first MAX_HELD_OUT_TOKENS tokens at most. -> (text, where it came from)."""
    source = DatasetSource.at(spec.training_dataset_key, **(spec.training_dataset_format or {}))
    try:
        manifest, _, _ = tokenize(job, source, tokenizer.kind, {}, given=tokenizer)
    except Stopped:
        raise Rejected("the job was stopped while it tokenized the training data") from None
    _, val = split_tokens(mapped_tokens(job, manifest, "held_out"), val_fraction)
    shown = min(len(val), MAX_HELD_OUT_TOKENS)
    part = "" if shown == len(val) else f" (its first {shown:,} of {len(val):,} tokens)"
    text = tokenizer.decode(val.view(0, shown).tensor().tolist())
    return text, f"validation split of the training data{part}"


def run_evaluation(spec: EvaluateSpec, job: JobContext) -> None:
    store = job.store
    state = checkpoints.read_checkpoint(job, spec.checkpoint_key, "model_id")
    model, tokenizer = load_model(state)
    if spec.held_out_key:
        held_out = job.stored(lambda: read_text(store, spec.held_out_key, "held_out"), "reading the held-out text")
        source = "request"
    elif spec.training_dataset_key:
        held_out, source = _validation_split(spec, job, tokenizer, state["train_config"]["val_fraction"])
    else:
        raise Rejected("held_out: give held-out text; the model's training data is not available", "held_out")
    prompts = spec.prompts or _default_prompts(held_out)
    params = SamplingParams(max_new_tokens=spec.max_new_tokens, seed=spec.seed, temperature=0.8)
    if job.should_stop():
        job.emit(JobCancelled, reason="cancelled by request")
        return
    report = evaluate(model, tokenizer, held_out, prompts, params)
    report["held_out_source"] = source
    report["checkpoint"] = spec.checkpoint_key
    report["step"] = state["step"]
    if job.should_stop():
        job.emit(JobCancelled, reason="cancelled by request")
        return
    job.stored(lambda: store.put_bytes(spec.report_key, json.dumps(report, indent=2).encode(), "application/json"),
               "writing the report")
    job.emit(EvaluationCompleted, model_id=spec.model_id, report=report, report_key=spec.report_key)


EVALUATE = JobKind("evaluate", EvaluateSpec, run_evaluation)
