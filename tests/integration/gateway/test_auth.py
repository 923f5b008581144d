"""Two API keys against the real servers and worker: neither sees nor touches the other's things."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from gateway.client import ApiError, Client
from tests.integration.gateway.conftest import KEYS


def test_two_keys_are_isolated(gateways: dict[str, str], worker: object):
    url = gateways["auth"]
    assert httpx.get(f"{url}/api/v1/models").status_code == 401
    assert httpx.get(f"{url}/api/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.get(f"{url}/health").status_code == 200
    with Client(url, api_key=KEYS[0]) as alice, Client(url, api_key=KEYS[1]) as bob:
        dataset = alice.upload_dataset("alice writes about cats and mats. " * 40)
        created = alice.create_model(f"alice-{uuid.uuid4().hex[:6]}", dataset_id=dataset["id"],
                                     hyperparameters={"preset": "tiny", "max_iters": 20})
        assert alice.wait_for_job(created["job_id"], timeout_s=120)["status"] == "completed"
        for call in (lambda: bob.get_dataset(dataset["id"]), lambda: bob.get_model(created["model_id"]),
                     lambda: bob.get_job(created["job_id"]), lambda: bob.job_log(created["job_id"]),
                     lambda: bob.generate(created["model_id"], "cats"),
                     lambda: bob.create_model("theft", dataset_id=dataset["id"]),
                     lambda: bob.delete_model(created["model_id"])):
            with pytest.raises(ApiError) as error:
                call()
            assert error.value.status == 404
        assert created["model_id"] not in [m["id"] for m in bob.list_models()["items"]]
        assert created["job_id"] not in [j["id"] for j in bob.list_jobs()["items"]]
        events = httpx.get(f"{url}/api/v1/jobs/{created['job_id']}/events",
                           params={"api_key": KEYS[0], "format": "json"}).json()
        assert events[-1]["type"] == "TrainCompleted"
        bob_openai = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[1])
        alice_openai = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[0])
        name = alice.get_model(created["model_id"])["name"]
        assert name not in [m.id for m in bob_openai.models.list().data]
        assert name in [m.id for m in alice_openai.models.list().data]
        with pytest.raises(openai.NotFoundError):
            bob_openai.completions.create(model=name, prompt="cats", max_tokens=3)
        assert alice_openai.completions.create(model=name, prompt="cats", max_tokens=3).choices[0].text is not None
