"""The `lfz` app: every command is there with help, arguments reach the request as typed, and every failure is one
line on stderr with a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
import typer

from cli.main import app, main
from tests.unit.cli.conftest import FakeGateway, error

COMMANDS = ["demo", "up", "train", "events", "presets", "evaluate", "generate", "replay", "migrate", "version",
            "datasets", "models", "jobs", "compare", "sweep", "sweeps"]
GROUPS = {"datasets": ["upload", "list", "show", "tokenize", "delete"], "models": ["list", "show", "delete", "versions", "alias", "serve"],
          "jobs": ["list", "show", "cancel", "prune"], "sweeps": ["list", "show"]}


def test_help_lists_every_command_with_its_help(capsys):
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    for name in COMMANDS:
        assert f" {name} " in listing, name
    root = typer.main.get_command(app)
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        assert (command.help or "").strip(), f"`lfz {name}` has no help"
        for sub_name, sub in getattr(command, "commands", {}).items():
            assert (sub.help or "").strip(), f"`lfz {name} {sub_name}` has no help"
    for group, subcommands in GROUPS.items():
        assert set(root.commands[group].commands) == set(subcommands)  # type: ignore[attr-defined]


def test_an_unreachable_gateway_is_one_line_and_exit_1(capsys, closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    assert main(["models", "list", "--url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: cannot reach the gateway at {url} - is `lfz up` running? (or pass --url / " \
                           f"set LFZ_URL)\n"


def test_the_console_script_prints_no_traceback(closed_port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFZ_")}
    env["LFZ_URL"] = f"http://127.0.0.1:{closed_port}"
    done = subprocess.run([sys.executable, "-m", "cli.main", "jobs", "list"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "cannot reach the gateway" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [
    ["generate", "m", "p", "--top-k", "0"], ["demo", "--samples", "99"], ["up", "--workers", "0"],
    ["train", "--data", "x", "--set", "no-equals-sign"], ["events"], ["jobs", "frobnicate"],
    ["replay", "--from", "tape", "--yes"],
])
def test_usage_errors_exit_2(args, capsys):
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_missing_or_binary_file_is_named(tmp_path, capsys, fake):
    assert main(["train", "--data", str(tmp_path / "nope.txt")]) == 2
    assert capsys.readouterr().err == f"error: no such file: {tmp_path / 'nope.txt'}\n"
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00text")
    assert main(["datasets", "upload", str(binary)]) == 2
    assert "a NUL byte at byte 2: this looks like a binary file, not text" in capsys.readouterr().err
    assert fake.requests == []  # nothing was sent


def test_train_sends_the_typed_hyperparameters(tmp_path, capsys, fake: FakeGateway):
    data = tmp_path / "corpus.txt"
    data.write_text("hello world\n" * 20)
    fake.on("POST", "/api/v1/datasets", lambda r: httpx.Response(201, json={"id": "d1", "name": "corpus.txt",
                                                                             "characters": 240}))
    fake.on("POST", "/api/v1/models", lambda r: httpx.Response(202, json={
        "job_id": "j1", "model_id": "m1", "status": "accepted", "events_url": "", "job_url": ""}))
    code = main(["train", "--data", str(data), "--name", "mine", "--preset", "tiny", "--max-iters", "30",
                 "--tokenizer", "word", "--set", "learning_rate=3e-4", "--set", "qk_norm=true",
                 "--set", "positions=learned", "--url", "http://gw.test"])
    assert code == 0
    body = json.loads(fake.sent("POST", "/api/v1/models").content)
    assert body["name"] == "mine" and body["tokenizer"] == "word" and body["dataset"] == {"id": "d1"}
    assert body["hyperparameters"] == {"preset": "tiny", "max_iters": 30, "learning_rate": 3e-4, "qk_norm": True,
                                       "positions": "learned"}
    captured = capsys.readouterr()
    assert captured.out == "j1\n"  # the job id alone on stdout, for scripts
    assert "lfz events j1 --follow" in captured.err


def test_the_api_key_comes_from_the_environment_and_a_refused_one_is_explained(monkeypatch, capsys, fake):
    fake.on("GET", "/api/v1/jobs", error(403, "forbidden", "this API key is not valid"))
    monkeypatch.setenv("LFZ_API_KEY", "wrong-key")
    assert main(["jobs", "list", "--url", "http://gw.test"]) == 1
    assert fake.requests[0].headers["authorization"] == "Bearer wrong-key"
    assert capsys.readouterr().err == ("error: the gateway at http://gw.test refused the API key in LFZ_API_KEY "
                                       "(this API key is not valid)\n")
    fake.on("GET", "/api/v1/jobs", error(401, "unauthorized", "an API key is required"))
    monkeypatch.delenv("LFZ_API_KEY")
    assert main(["jobs", "list", "--url", "http://gw.test"]) == 1
    assert "set LFZ_API_KEY" in capsys.readouterr().err


def test_a_model_is_found_by_name_when_no_id_matches(capsys, fake):
    detail = {"id": "abc123", "name": "shakespeare", "status": "completed", "checkpoints": []}
    fake.on("GET", "/api/v1/models", lambda r: httpx.Response(200, json={
        "items": [detail] if r.url.params.get("name") == "shakespeare" else [], "total": 1, "limit": 1, "offset": 0}))
    fake.on("GET", "/api/v1/models/abc123", detail)
    assert main(["models", "show", "shakespeare", "--json", "--url", "http://gw.test"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "abc123"
    assert main(["models", "show", "nobody", "--url", "http://gw.test"]) == 1
    assert capsys.readouterr().err == "error: no model has the id or name 'nobody'; `lfz models list` shows them\n"


def test_an_api_error_shows_its_message(capsys, fake):
    fake.on("POST", "/api/v1/jobs/j9/cancel", error(409, "conflict", "job 'j9' has already finished (completed)"))
    assert main(["jobs", "cancel", "j9", "--url", "http://gw.test"]) == 1
    assert capsys.readouterr().err == "error: job 'j9' has already finished (completed)\n"


def test_an_unexpected_error_is_one_line_too(monkeypatch, capsys, fake):
    def broken(request):
        raise RuntimeError("the fake broke")

    fake.on("GET", "/api/v1/datasets", broken)
    monkeypatch.delenv("LFZ_DEBUG", raising=False)
    assert main(["datasets", "list", "--url", "http://gw.test"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected RuntimeError: the fake broke") and err.count("\n") == 1


def test_delete_asks_unless_yes_and_refuses_off_a_terminal(capsys, fake):
    detail = {"id": "m1", "name": "old", "status": "completed", "checkpoints": []}
    fake.on("GET", "/api/v1/models/m1", detail)
    fake.on("DELETE", "/api/v1/models/m1", {"model_id": "m1", "status": "deleted", "job_id": "x"})
    assert main(["models", "delete", "m1", "--url", "http://gw.test"]) == 2
    assert "add --yes" in capsys.readouterr().err
    assert main(["models", "delete", "m1", "--yes", "--url", "http://gw.test"]) == 0
    assert capsys.readouterr().out == "deleted model old (m1)\n"


def test_replay_from_kafka_needs_a_kafka_url(monkeypatch, capsys):
    monkeypatch.delenv("LFZ_KAFKA_URL", raising=False)
    assert main(["replay", "--from", "kafka", "--yes"]) == 2
    assert "use --from database" in capsys.readouterr().err
