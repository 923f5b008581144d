"""A typed HTTP client for the gateway (used by the `lfz` CLI and the tests): one method per route.

Errors arrive as `ApiError(status, code, message, field)`. `follow_job` reads a job's event stream to the end and
reconnects with Last-Event-ID when the connection drops, so the caller sees every event once, in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import connect_sse

from events import TERMINAL_TYPES
from gateway.errors import ApiError

__all__ = ["ApiError", "Client"]


def _model_path(model: str) -> str:
    return f"/api/v1/models/{quote(model, safe='')}"


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        error = response.json()["error"]
        raise ApiError(response.status_code, str(error.get("code", "error")), str(error.get("message", "")),
                       error.get("field") or error.get("param"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _not_the_gateway(response) from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise _not_the_gateway(response) from None


def _not_the_gateway(response: httpx.Response) -> ApiError:
    """An answer that is not the gateway's JSON: another server (a proxy's error page, an S3 server's XML)."""
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return ApiError(response.status_code, "not_the_gateway",
                    f"{response.request.url} answered HTTP {response.status_code} with {kind}, not as an "
                    "llm-from-zero gateway does: is the URL right?")


class Client:
    """`Client("http://127.0.0.1:8000", api_key=...)`; usable as a context manager."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        _raise_for(response)
        return _json(response)

    # -- system -------------------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        response = self.http.get("/health")
        if response.status_code not in (200, 503):
            _raise_for(response)
        return _json(response)

    def metrics(self) -> str:
        response = self.http.get("/metrics")
        _raise_for(response)
        return response.text

    def openapi(self) -> dict[str, Any]:
        return self._call("GET", "/openapi.json")

    # -- datasets -----------------------------------------------------------------------------------------------------

    def upload_dataset(self, text: str | None = None, *, path: str | Path | None = None,
                       name: str | None = None) -> dict[str, Any]:
        """Inline `text`, or a local file at `path` (read here, sent as a multipart upload)."""
        if path is not None:
            file = Path(path)
            files = {"file": (file.name, file.read_bytes(), "text/plain")}
            return self._call("POST", "/api/v1/datasets", files=files, data={"name": name or file.name})
        return self._call("POST", "/api/v1/datasets", json={"name": name or "dataset", "text": text or ""})

    def start_upload(self, *, name: str, size: int, fmt: str = "text", compression: str = "none",
                     text_column: str = "text") -> dict[str, Any]:
        body = {"name": name, "size": size, "format": fmt, "compression": compression, "text_column": text_column}
        return self._call("POST", "/api/v1/datasets/uploads", json=body)

    def upload_status(self, upload_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/datasets/uploads/{quote(upload_id, safe='')}")

    def put_part(self, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        return self._call("PUT", f"/api/v1/datasets/uploads/{quote(upload_id, safe='')}/parts/{number}",
                          content=data, headers={"Content-Type": "application/octet-stream"})

    def complete_upload(self, upload_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/datasets/uploads/{quote(upload_id, safe='')}/complete")

    def abort_upload(self, upload_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/v1/datasets/uploads/{quote(upload_id, safe='')}")

    def tokenize_dataset(self, dataset_id: str, tokenizer: str = "char", options: dict[str, int] | None = None,
                         sample_bytes: int | None = None) -> dict[str, Any]:
        body = {"tokenizer": tokenizer, "tokenizer_options": options or {}, "sample_bytes": sample_bytes}
        return self._call("POST", f"/api/v1/datasets/{quote(dataset_id, safe='')}/tokenize", json=body)

    def list_datasets(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        return self._call("GET", "/api/v1/datasets", params={"limit": limit, "offset": offset})

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/datasets/{quote(dataset_id, safe='')}")

    def delete_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/v1/datasets/{quote(dataset_id, safe='')}")

    def presets(self) -> dict[str, Any]:
        return self._call("GET", "/api/v1/presets")

    # -- models: each method takes a model's id or its name -----------------------------------------------------------

    def create_model(self, name: str, *, text: str | None = None, dataset_id: str | None = None,
                     description: str = "", tokenizer: str = "char", tokenizer_options: dict[str, int] | None = None,
                     hyperparameters: dict[str, Any] | None = None, processes: int = 1,
                     hosts: int = 1) -> dict[str, Any]:
        dataset = {"id": dataset_id} if dataset_id is not None else {"text": text or ""}
        body = {"name": name, "description": description, "dataset": dataset, "tokenizer": tokenizer,
                "tokenizer_options": tokenizer_options or {}, "hyperparameters": hyperparameters or {}}
        if processes != 1:
            body["processes"] = processes
        if hosts != 1:
            body["hosts"] = hosts
        return self._call("POST", "/api/v1/models", json=body)

    def list_models(self, status: str | None = None, name: str | None = None, limit: int = 50,
                    offset: int = 0) -> dict[str, Any]:
        params = {k: v for k, v in (("status", status), ("name", name)) if v is not None}
        return self._call("GET", "/api/v1/models", params={**params, "limit": limit, "offset": offset})

    def get_model(self, model: str) -> dict[str, Any]:
        return self._call("GET", _model_path(model))

    def model_versions(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"{_model_path(name)}/versions")

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return self._call("PUT", f"{_model_path(name)}/aliases/{quote(alias, safe='')}", json={"version": version})

    def remove_alias(self, name: str, alias: str) -> dict[str, Any]:
        return self._call("DELETE", f"{_model_path(name)}/aliases/{quote(alias, safe='')}")

    def choose_serving(self, model: str, checkpoint: str) -> dict[str, Any]:
        return self._call("PUT", f"{_model_path(model)}/serving", json={"checkpoint": checkpoint})

    def compare(self, runs: list[str]) -> dict[str, Any]:
        return self._call("GET", "/api/v1/compare", params={"runs": ",".join(runs)})

    def create_sweep(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/sweeps", json=body)

    def list_sweeps(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        return self._call("GET", "/api/v1/sweeps", params={"limit": limit, "offset": offset})

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/sweeps/{quote(sweep_id, safe='')}")

    def model_status(self, model: str) -> dict[str, Any]:
        return self._call("GET", f"{_model_path(model)}/status")

    def delete_model(self, model: str) -> dict[str, Any]:
        return self._call("DELETE", _model_path(model))

    def train_more(self, model: str, *, max_iters: int | None = None, dataset_id: str | None = None,
                   text: str | None = None, hyperparameters: dict[str, Any] | None = None,
                   processes: int = 1, hosts: int = 1) -> dict[str, Any]:
        body: dict[str, Any] = {"hyperparameters": dict(hyperparameters or {})}
        if processes != 1:
            body["processes"] = processes
        if hosts != 1:
            body["hosts"] = hosts
        if max_iters is not None:
            body["hyperparameters"]["max_iters"] = max_iters
        if dataset_id is not None or text is not None:
            body["dataset"] = {"id": dataset_id} if dataset_id is not None else {"text": text}
        return self._call("POST", f"{_model_path(model)}/train", json=body)

    def evaluate(self, model: str, *, prompts: list[str] | None = None, held_out_text: str | None = None,
                 dataset_id: str | None = None, max_new_tokens: int = 64, wait: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"prompts": prompts or [], "max_new_tokens": max_new_tokens}
        if held_out_text is not None:
            body["held_out"] = {"text": held_out_text}
        if dataset_id is not None:
            body["dataset_id"] = dataset_id
        params = {"wait": "true"} if wait else {}
        return self._call("POST", f"{_model_path(model)}/evaluate", json=body, params=params)

    def export(self, model: str, *, format: str = "hf", dtype: str = "float32",
               step: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"format": format, "dtype": dtype}
        if step is not None:
            body["step"] = step
        return self._call("POST", f"{_model_path(model)}/export", json=body)

    def import_model(self, folder: str | Path, name: str, description: str = "") -> dict[str, Any]:
        """Upload a transformers model directory's files (not its subfolders) to become the model `name`."""
        paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
        handles = [p.open("rb") for p in paths]
        try:
            files = [("files", (p.name, h, "application/octet-stream")) for p, h in zip(paths, handles)]
            return self._call("POST", "/api/v1/models/import", data={"name": name, "description": description},
                              files=files)
        finally:
            for h in handles:
                h.close()

    def get_export(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/exports/{job_id}")

    def download_export_file(self, job_id: str, name: str, path: str | Path) -> int:
        """Write one exported file to `path` as it arrives; returns its size in bytes."""
        written = 0
        with self.http.stream("GET", f"/api/v1/exports/{job_id}/files/{name}") as response:
            if response.is_error:
                response.read()
                _raise_for(response)
            with open(path, "wb") as out:
                for chunk in response.iter_bytes():
                    written += out.write(chunk)
        return written

    def generate(self, model: str, prompt: str = "", **sampling: Any) -> dict[str, Any]:
        """`max_tokens`, `temperature`, `top_p`, `top_k`, `repetition_penalty`, `stop`, `seed`, `num_sequences`."""
        return self._call("POST", f"{_model_path(model)}/generate", json={"prompt": prompt, **sampling})

    def generate_stream(self, model: str, prompt: str = "", **sampling: Any) -> Iterator[dict[str, Any]]:
        """Each event of the generation as it happens: TokensGenerated..., then GenerationCompleted."""
        body = {"prompt": prompt, **sampling, "stream": True}
        with connect_sse(self.http, "POST", f"{_model_path(model)}/generate", json=body) as source:
            _raise_for(source.response)
            for sse in source.iter_sse():
                if not sse.data:
                    continue  # a keep-alive comment (httpx-sse hands those on with the last event's id)
                event = json.loads(sse.data)
                if sse.event == "error":
                    error = event["error"]
                    raise ApiError(504, error.get("code", "error"), error.get("message", ""))
                yield event

    # -- jobs ---------------------------------------------------------------------------------------------------------

    def list_jobs(self, kind: str | None = None, status: str | None = None, model_id: str | None = None,
                  limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """`kind`: train, evaluate or generate, or several separated by commas."""
        params = {k: v for k, v in (("kind", kind), ("status", status), ("model_id", model_id)) if v is not None}
        return self._call("GET", "/api/v1/jobs", params={**params, "limit": limit, "offset": offset})

    def prune_jobs(self, kind: str = "generate", older_than_s: float = 0.0) -> dict[str, Any]:
        return self._call("POST", "/api/v1/jobs/prune", json={"kind": kind, "older_than_s": older_than_s})

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/jobs/{job_id}/cancel")

    def job_log(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/jobs/{job_id}/events", params={"format": "json", "last_event_id": after})

    def follow_job(self, job_id: str, after: int = 0, patience_s: float = 60.0,
                   retry_delay_s: float = 0.5) -> Iterator[dict[str, Any]]:
        """Every event after `after` until the terminal one, resuming with Last-Event-ID across disconnects. A gateway
        that restarts, cannot be reached, or answers 503 (its database is down) is tried again every `retry_delay_s`
        until `patience_s` have passed without an event; any other error answer (a 404, a 401) is raised at once."""
        last = after
        lost_since: float | None = None
        while True:
            try:
                headers = {"Last-Event-ID": str(last)} if last else {}
                with connect_sse(self.http, "GET", f"/api/v1/jobs/{job_id}/events", headers=headers,
                                 timeout=httpx.Timeout(self.http.timeout.connect, read=None)) as source:
                    _raise_for(source.response)
                    for sse in source.iter_sse():
                        if not sse.id or not sse.data:
                            continue  # keep-alive comments come through with the last event's id
                        event = json.loads(sse.data)
                        last = int(sse.id)
                        lost_since = None
                        yield event
                        if event.get("type") in TERMINAL_TYPES:
                            return
            except httpx.TransportError:
                pass
            except ApiError as error:
                if error.status != 503:
                    raise
            # The stream ended or dropped before the terminal event: resume where it stopped.
            lost_since = lost_since if lost_since is not None else time.monotonic()
            if time.monotonic() - lost_since > patience_s:
                raise ApiError(503, "stream_lost", f"lost the event stream of job {job_id} after event {last}: no "
                                                   f"answer with events for {patience_s:g}s")
            time.sleep(retry_delay_s)

    def wait_for_job(self, job_id: str, timeout_s: float = 600.0) -> dict[str, Any]:
        """Follow the job to its end, then return its final state."""
        deadline = time.monotonic() + timeout_s
        for _ in self.follow_job(job_id):
            if time.monotonic() > deadline:
                raise ApiError(504, "timeout", f"job {job_id} did not finish within {timeout_s:g}s")
        # The live stream can be a moment ahead of the database's projection: wait for the row to agree.
        job = self.get_job(job_id)
        while job["status"] not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = self.get_job(job_id)
        return job
