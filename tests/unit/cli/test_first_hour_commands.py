"""The first hour's commands against a scripted gateway: --data as a file or a dataset id, an upload that a refused
request leaves behind is deleted, --continue, --vocab-size, the flag names are the API's, events by model name,
jobs list without generations, presets, and a --url that is not a gateway."""

from __future__ import annotations

import json

import httpx

from cli.main import main
from tests.unit.cli.conftest import FakeGateway, error

URL = ["--url", "http://gw.test"]
SUBMITTED = {"job_id": "j1", "model_id": "m1", "status": "accepted", "events_url": "", "job_url": ""}


def test_data_may_be_a_dataset_id(capsys, fake: FakeGateway):
    fake.on("GET", "/api/v1/datasets/d42", {"id": "d42", "name": "stories.txt", "characters": 900})
    fake.on("POST", "/api/v1/models", lambda r: httpx.Response(202, json=SUBMITTED))
    assert main(["train", "--data", "d42", "--name", "m", *URL]) == 0
    assert json.loads(fake.sent("POST", "/api/v1/models").content)["dataset"] == {"id": "d42"}
    assert not any(r.method == "POST" and r.url.path == "/api/v1/datasets" for r in fake.requests)


def test_neither_a_file_nor_a_dataset_is_named_as_both(capsys, fake: FakeGateway):
    assert main(["train", "--data", "nothing-here", *URL]) == 2
    assert "no such file, and no dataset with that id" in capsys.readouterr().err


def test_a_refused_request_deletes_the_upload_it_made(tmp_path, capsys, fake: FakeGateway):
    data = tmp_path / "new.txt"
    data.write_text("words and more words\n" * 30)
    fake.on("POST", "/api/v1/datasets", lambda r: httpx.Response(201, json={"id": "d9", "name": "new.txt",
                                                                             "characters": 630}))
    fake.on("POST", "/api/v1/models", error(422, "invalid", "hyperparameters.learnig_rate: unknown hyperparameter; "
                                            "did you mean learning_rate?", "hyperparameters.learnig_rate"))
    fake.on("DELETE", "/api/v1/datasets/d9", {"dataset_id": "d9", "status": "deleted", "job_id": "x"})
    assert main(["train", "--data", str(data), "--set", "learnig_rate=0.1", *URL]) == 1
    assert "did you mean learning_rate?" in capsys.readouterr().err
    assert fake.sent("DELETE", "/api/v1/datasets/d9")


def test_a_reused_upload_is_kept_when_the_request_is_refused(tmp_path, capsys, fake: FakeGateway):
    data = tmp_path / "old.txt"
    data.write_text("words and more words\n" * 30)
    fake.on("POST", "/api/v1/datasets", {"id": "d1", "name": "old.txt", "characters": 630, "reused": True})
    fake.on("POST", "/api/v1/models", error(422, "invalid", "name: may not hold '@' or '/'", "name"))
    assert main(["train", "--data", str(data), "--name", "x@y", *URL]) == 1
    assert "already uploaded as dataset d1" in capsys.readouterr().err
    assert not any(r.method == "DELETE" for r in fake.requests)


def test_continue_posts_to_the_models_train_route_by_name(capsys, fake: FakeGateway):
    fake.on("POST", "/api/v1/models/my model/train", lambda r: httpx.Response(202, json=SUBMITTED))  # url.path: decoded
    assert main(["train", "--continue", "my model", "--max-iters", "300", *URL]) == 0
    sent = json.loads(fake.requests[-1].content)
    assert fake.requests[-1].url.raw_path == b"/api/v1/models/my%20model/train"
    assert sent == {"hyperparameters": {"max_iters": 300}}
    assert main(["train", "--continue", "m", "--name", "other", *URL]) == 2
    assert main(["train", *URL]) == 2


def test_vocab_size_goes_to_the_tokenizer_whichever_flag_says_it(tmp_path, fake: FakeGateway):
    fake.on("GET", "/api/v1/datasets/d1", {"id": "d1"})
    fake.on("POST", "/api/v1/models", lambda r: httpx.Response(202, json=SUBMITTED))
    assert main(["train", "--data", "d1", "--tokenizer", "bpe", "--vocab-size", "512", *URL]) == 0
    assert json.loads(fake.requests[-1].content)["tokenizer_options"] == {"vocab_size": 512}
    assert main(["train", "--data", "d1", "--tokenizer", "word", "--set", "vocab_size=700", *URL]) == 0
    body = json.loads(fake.requests[-1].content)
    assert body["tokenizer_options"] == {"vocab_size": 700} and "vocab_size" not in body["hyperparameters"]


def test_generate_sends_max_tokens_by_its_api_name(capsys, fake: FakeGateway):
    fake.on("GET", "/api/v1/models/m1", {"id": "m1", "name": "m1"})
    fake.on("POST", "/api/v1/models/m1/generate", {"text": "abc", "completion_tokens": 3, "total_ms": 5.0,
                                                   "warnings": ["the prompt holds 1 character(s) the model never saw"]})
    assert main(["generate", "m1", "hi", "--max-tokens", "7", *URL]) == 0
    assert json.loads(fake.requests[-1].content)["max_tokens"] == 7
    assert "never saw" in capsys.readouterr().err


def test_events_of_a_model_name_follow_its_training_job(capsys, fake: FakeGateway):
    fake.on("GET", "/api/v1/models/bard", {"id": "m7", "name": "bard", "train_job_id": "j7"})
    fake.on("GET", "/api/v1/jobs/j7/events", [{"seq": 1, "type": "JobAccepted", "kind": "train"}])
    assert main(["events", "bard", "--json", *URL]) == 0
    assert json.loads(capsys.readouterr().out)[0]["type"] == "JobAccepted"
    assert main(["events", "nobody", *URL]) == 1
    assert "no job, and no model, has the id or name 'nobody'" in capsys.readouterr().err


def test_jobs_list_leaves_generations_out_unless_asked(capsys, fake: FakeGateway):
    fake.on("GET", "/api/v1/jobs", {"items": [{"id": "j1", "kind": "train", "status": "accepted",
                                               "queue": {"ahead": 2, "running": 1}}], "total": 1, "offset": 0})
    assert main(["jobs", "list", *URL]) == 0
    assert fake.requests[-1].url.params["kind"] == "train,evaluate"
    assert "queued (2 ahead, 1 running)" in capsys.readouterr().out
    assert main(["jobs", "list", "--kind", "generate", *URL]) == 0
    assert fake.requests[-1].url.params["kind"] == "generate"


def test_presets_lists_the_default_and_every_hyperparameter(capsys, fake: FakeGateway):
    fake.on("GET", "/api/v1/presets", {
        "default": "cpu-baby", "presets": [{"name": "cpu-baby", "about": "a CPU", "values": {}},
                                           {"name": "small", "about": "a GPU", "values": {}}],
        "hyperparameters": [{"name": "num_blocks", "default": 4, "bounds": "1 <= x <= 128", "choices": None,
                             "help": "transformer blocks", "aliases": ["n_layer"]}],
        "tokenizers": {"char": {}, "bpe": {"vocab_size": {"default": 1024, "min": 259}}}})
    assert main(["presets", *URL]) == 0
    out = capsys.readouterr().out
    assert "* cpu-baby" in out and "num_blocks" in out and "n_layer" in out and "1 <= x <= 128" in out


def test_a_url_that_is_not_a_gateway_is_said_so_not_dumped(capsys, fake: FakeGateway):
    xml = "<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"
    fake.on("GET", "/api/v1/models", httpx.Response(403, headers={"content-type": "application/xml"}, text=xml))
    fake.on("GET", "/api/v1/datasets", httpx.Response(200, headers={"content-type": "text/html"}, text="<html/>"))
    assert main(["models", "list", *URL]) == 1
    err = capsys.readouterr().err
    assert "answered HTTP 403 with application/xml, not as an llm-from-zero gateway does" in err
    assert "<Error>" not in err
    assert main(["datasets", "list", *URL]) == 1
    assert "answered HTTP 200 with text/html" in capsys.readouterr().err
