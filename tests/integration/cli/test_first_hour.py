"""A learner's first hour, scripted, on the embedded defaults (`lfz up` with nothing installed): upload once, train
by dataset id, cancel, sample from the cancelled model's checkpoint, continue it from the CLI, evaluate, find the
right best checkpoint, list the presets, mistype a hyperparameter and get a suggestion, delete a dataset, and
leave nothing behind on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli.conftest import Result, corpus
from tests.integration.stack import wait_until


@pytest.fixture
def lfz(lfz_on_up):  # these tests drive `lfz up` on the embedded defaults, as a person does
    return lfz_on_up


def json_of(result: Result) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)


def model_when(lfz, name: str, ready, what: str, timeout_s: float = 120) -> dict:
    seen: dict = {}

    def check() -> bool:
        nonlocal seen
        shown = lfz("models", "show", name, "--json")
        seen = json.loads(shown.out) if shown.code == 0 else {}
        return bool(seen) and ready(seen)

    wait_until(check, timeout_s, what)
    return seen


def test_the_first_hour(lfz, tmp_path: Path):
    text = tmp_path / "stories.txt"
    text.write_text(corpus(400))

    # Upload once: the same file again is the same dataset.
    first = lfz("datasets", "upload", str(text))
    again = lfz("datasets", "upload", str(text))
    assert first.code == 0 and again.code == 0, first.err + again.err
    dataset_id = first.out.split(" as dataset ")[1].split()[0]
    assert again.out.startswith("already uploaded") and dataset_id in again.out
    assert [d["id"] for d in json_of(lfz("datasets", "list", "--json"))["items"]] == [dataset_id]

    # Train by dataset id, long enough to cancel after its first checkpoints.
    started = lfz("train", "--data", dataset_id, "--name", "stories", "--preset", "tiny", "--max-iters", "100000",
                  "--set", "checkpoint_every=20", "--set", "eval_every=20", "--json")
    job_id = json_of(started)["job_id"]
    model_when(lfz, "stories", lambda m: (m.get("serving_checkpoint") or {}).get("step", 0) >= 40,
               "two checkpoints of the running model")
    assert lfz("jobs", "cancel", job_id).code == 0
    cancelled = model_when(lfz, "stories", lambda m: m["status"] == "cancelled", "the cancel")

    # The cancelled model's work is kept: it samples, and says which checkpoint serves.
    assert cancelled["serving_checkpoint"]["kind"] == "best"
    sampled = json_of(lfz("generate", "stories", "The model", "--max-tokens", "5", "--temperature", "0", "--json"))
    assert sampled["model_id"] == cancelled["id"] and sampled["completions"][0]["finish_reason"] in ("length", "stop")

    # --continue trains on from the latest checkpoint as version 2 of the name, whose parent is version 1.
    cancelled_at = int(cancelled["latest_checkpoint"].rsplit("step-", 1)[1].removesuffix(".pt"))
    more = lfz("train", "--continue", "stories", "--max-iters", "40", "--follow")
    assert more.code == 0, more.err
    continued = json_of(lfz("models", "show", "stories", "--json"))
    assert (continued["version"], continued["parent_id"]) == (2, cancelled["id"])
    assert continued["status"] == "completed" and continued["step"] == cancelled_at + 40
    assert continued["hyperparameters"]["max_iters"] == 40  # this run's, as `models show` says
    assert json_of(lfz("models", "show", "stories/1", "--json"))["status"] == "cancelled"  # the parent is kept

    # Exactly one best checkpoint of the version, the one of its run with the lowest validation loss, and every
    # surface agrees.
    best = [c for c in continued["checkpoints"] if c["is_best"]]
    assert len(best) == 1
    log = json_of(lfz("events", continued["train_job_id"], "--json"))
    validations = {e["step"]: e["val_loss"] for e in log if e["type"] == "ValidationCompleted"}
    lowest = min(validations, key=validations.get)
    assert best[0]["step"] == lowest == continued["serving_checkpoint"]["step"]
    assert f"best at step {lowest}" in lfz("models", "show", "stories").out

    evaluated = lfz("evaluate", "stories", "--json")
    assert json_of(evaluated)["report"]["held_out"]["perplexity"] > 1

    # The presets, and a mistyped hyperparameter answered with the name meant; a refused request leaves no upload.
    presets = lfz("presets")
    assert presets.code == 0 and "* cpu-baby" in presets.out and "learning_rate" in presets.out
    other = tmp_path / "other.txt"
    other.write_text(corpus(300).upper())
    typo = lfz("train", "--data", str(other), "--set", "learnig_rate=0.001")
    assert typo.code != 0 and "did you mean learning_rate?" in typo.err
    assert [d["id"] for d in json_of(lfz("datasets", "list", "--json"))["items"]] == [dataset_id]

    # Delete the dataset: gone from the listing; the model trained on it keeps its checkpoints.
    assert lfz("datasets", "delete", dataset_id, "--yes").code == 0
    assert json_of(lfz("datasets", "list", "--json"))["items"] == []
    assert lfz("generate", "stories", "", "--max-tokens", "3").code == 0
