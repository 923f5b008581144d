"""`lfz sweep`'s --space syntax becomes the API's search space; a malformed one is a usage error naming it."""

import json

import httpx
import pytest

from cli.errors import CliError
from cli.main import main
from cli.sweeps import parse_space
from tests.unit.cli.conftest import FakeGateway

URL = ["--url", "http://gateway.test"]


def test_each_spec_form_becomes_its_space():
    assert parse_space(["learning_rate=log:1e-4:1e-2", "dropout=0:0.3", "num_blocks=int:1:4",
                        "num_heads=2,4", "activation=gelu"]) == {
        "learning_rate": {"min": 1e-4, "max": 1e-2, "scale": "log"},
        "dropout": {"min": 0.0, "max": 0.3},
        "num_blocks": {"min": 1.0, "max": 4.0, "integer": True},
        "num_heads": {"values": [2, 4]},
        "activation": {"values": ["gelu"]},
    }
    for bad in ("learning_rate", "=1,2", "lr=log:1", "lr=a:b", "lr=1:2:3:4"):
        with pytest.raises(CliError) as error:
            parse_space([bad])
        assert bad in error.value.message


def test_the_sweep_command_sends_the_body(tmp_path, capsys, fake: FakeGateway):
    data = tmp_path / "text.txt"
    data.write_text("words and more words\n" * 30)
    fake.on("POST", "/api/v1/datasets", {"id": "d1", "name": "text.txt", "characters": 630})
    fake.on("POST", "/api/v1/sweeps", lambda r: httpx.Response(202, json={"job_id": "s1", "model_id": None,
                                                                          "status": "accepted",
                                                                          "events_url": "/x"}))
    assert main(["sweep", "--data", str(data), "--name", "lr", "--preset", "tiny", "--space",
                 "learning_rate=log:1e-4:1e-2", "--trials", "6", "--early-stopping", "median", "--min-step", "50",
                 "--alias", "champion", *URL]) == 0
    sent = json.loads(fake.requests[-1].content)
    assert sent["name"] == "lr" and sent["dataset"] == {"id": "d1"} and sent["trials"] == 6
    assert sent["early_stopping"] == {"rule": "median", "min_step": 50} and sent["alias"] == "champion"
    assert sent["hyperparameters"] == {"preset": "tiny"}
    assert capsys.readouterr().out == "s1\n"
