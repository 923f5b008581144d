"""Every client command against a real worker and gateway: upload, train --follow, list and show, events, generate
(plain and streamed), evaluate, cancel, a wrong API key, delete."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.cli.conftest import API_KEY, Result, corpus, run_lfz

NAME = f"cli-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(corpus() + f"{uuid.uuid4().hex}\n")  # this session's own: the same file would be reused
    return path


@pytest.fixture(scope="module")
def trained(gateway_url, corpus_file) -> Result:
    """A model trained with `lfz train --follow`, shared by the tests that read or use it."""
    return run_lfz(["train", "--data", str(corpus_file), "--name", NAME, "--preset", "tiny", "--max-iters", "40",
                    "--set", "eval_every=20", "--follow", "--url", gateway_url], LFZ_API_KEY=API_KEY)


def test_upload_and_list_datasets(lfz, corpus_file):
    uploaded = lfz("datasets", "upload", str(corpus_file), "--name", "cli corpus")
    assert uploaded.code == 0, uploaded.err
    assert uploaded.out.startswith("uploaded 'cli corpus' as dataset ")
    dataset_id = uploaded.out.split(" as dataset ")[1].split()[0]
    listing = lfz("datasets", "list", "--json")
    assert listing.code == 0
    assert dataset_id in [d["id"] for d in json.loads(listing.out)["items"]]
    assert dataset_id in lfz("datasets", "list").out


def test_train_follow_shows_progress_and_the_outcome(trained):
    assert trained.code == 0, trained.err
    lines = trained.out.splitlines()
    assert lines[0] == f"accepted: train job for model {NAME}"
    assert any(line.startswith("step ") and "/40" in line and "tok/s" in line for line in lines)
    assert "step 20: validation loss" in trained.out
    assert lines[-1].startswith("training completed at step 40 in ")


def test_models_list_and_show(lfz, trained):
    listing = lfz("models", "list", "--json")
    model = next(m for m in json.loads(listing.out)["items"] if m["name"] == NAME)
    assert model["status"] == "completed" and model["step"] == 40
    table = lfz("models", "list").out
    assert NAME in table and "completed" in table
    shown = lfz("models", "show", NAME)
    assert shown.code == 0 and "id:" in shown.out and model["id"] in shown.out and "40 of 40" in shown.out
    assert json.loads(lfz("models", "show", model["id"], "--json").out)["name"] == NAME


def test_jobs_list_and_show(lfz, trained):
    jobs = json.loads(lfz("jobs", "list", "--kind", "train", "--json").out)["items"]
    job = next(j for j in jobs if j["model_name"] == NAME)
    assert job["status"] == "completed"
    shown = lfz("jobs", "show", job["id"])
    assert shown.code == 0 and "status:" in shown.out and "completed" in shown.out and "40 of 40" in shown.out
    assert job["id"] in lfz("jobs", "list").out


def test_events_as_json_and_as_a_table(lfz, trained):
    job_id = next(j["id"] for j in json.loads(lfz("jobs", "list", "--json").out)["items"] if j["model_name"] == NAME)
    log = json.loads(lfz("events", job_id, "--json").out)
    assert log[0]["type"] == "JobAccepted" and log[-1]["type"] == "TrainCompleted"
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    followed = lfz("events", job_id, "--follow", "--json")  # a finished job: the whole log, then it ends
    assert followed.code == 0
    assert [json.loads(line)["seq"] for line in followed.out.splitlines()] == [e["seq"] for e in log]
    table = lfz("events", job_id)
    assert "TrainCompleted" in table.out and "training completed at step 40" in table.out


def test_generate_plain_and_streamed_give_the_same_text_for_a_seed(lfz, trained):
    plain = lfz("generate", NAME, "The model", "--max-tokens", "30", "--seed", "7", "--temperature", "0.9")
    assert plain.code == 0, plain.err
    assert plain.out.endswith("\n") and len(plain.out) > 1
    counted = re.search(r"(\d+) tokens in", plain.err)  # 30, unless the sample ends its text (end-of-text) first
    assert counted is not None and 1 <= int(counted.group(1)) <= 30, plain.err
    streamed = lfz("generate", NAME, "The model", "--max-tokens", "30", "--seed", "7", "--temperature", "0.9",
                   "--stream")
    assert streamed.code == 0, streamed.err
    assert streamed.out == plain.out
    events = lfz("generate", NAME, "The", "--max-tokens", "5", "--stream", "--json")
    types = [json.loads(line)["type"] for line in events.out.splitlines()]
    assert types[-1] == "GenerationCompleted" and "TokensGenerated" in types
    # An empty prompt starts a new document; sampled without a seed, the model may end it (end-of-text) early.
    result = json.loads(lfz("generate", NAME, "", "--max-tokens", "5", "--json").out)
    finish = result["completions"][0]["finish_reason"]
    assert finish in ("length", "stop")
    assert result["completion_tokens"] == 5 if finish == "length" else 1 <= result["completion_tokens"] <= 5


def test_evaluate_reports_held_out_perplexity(lfz, trained, corpus_file):
    done = lfz("evaluate", NAME, "--prompt", "The model", "--json")
    assert done.code == 0, done.err
    report = json.loads(done.out)["report"]
    assert report["held_out"]["perplexity"] > 1 and report["generation"]["prompts"] == 1
    table = lfz("evaluate", NAME, "--held-out", str(corpus_file), "--max-tokens", "8")
    assert table.code == 0, table.err
    assert "perplexity:" in table.out and "bits per character:" in table.out


def test_cancel_a_running_job(lfz, corpus_file):
    started = lfz("train", "--data", str(corpus_file), "--preset", "tiny", "--max-iters", "100000")
    assert started.code == 0, started.err
    job_id = started.out.strip()
    deadline = time.monotonic() + 90
    while json.loads(lfz("jobs", "show", job_id, "--json").out)["status"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.5)
    cancelled = lfz("jobs", "cancel", job_id)
    assert cancelled.code == 0 and f"cancelling job {job_id}" in cancelled.out
    followed = lfz("events", job_id, "--follow")
    assert followed.code == 1
    assert followed.err == f"error: job {job_id} was cancelled: cancelled by request\n"
    again = lfz("jobs", "cancel", job_id)
    assert again.code == 1 and "already finished (cancelled)" in again.err


def test_a_wrong_or_missing_api_key_is_one_line(lfz, monkeypatch, gateway_url):
    monkeypatch.setenv("LFZ_API_KEY", "not-the-key")
    wrong = lfz("models", "list")
    assert wrong.code == 1 and wrong.out == ""
    assert wrong.err == (f"error: the gateway at {gateway_url} refused the API key in LFZ_API_KEY "
                         f"(this API key is not valid)\n")
    monkeypatch.delenv("LFZ_API_KEY")
    missing = lfz("jobs", "list")
    assert missing.code == 1 and "needs an API key: set LFZ_API_KEY" in missing.err


def test_unknown_model_and_delete(lfz, trained):
    unknown = lfz("generate", "no-such-model", "hi")
    assert unknown.code == 1
    assert unknown.err == "error: no model has the id or name 'no-such-model'; `lfz models list` shows them\n"
    deleted = lfz("models", "delete", NAME, "--yes")
    assert deleted.code == 0 and deleted.out.startswith(f"deleted model {NAME}/1 (")
    gone = lfz("models", "show", NAME)
    assert gone.code == 1 and "no model has the id or name" in gone.err
