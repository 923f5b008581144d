"""Error mapping (one place, JSON, never a traceback) and API-key auth, on a small app over httpx's ASGI transport."""

import httpx
from aiokafka.errors import KafkaConnectionError
import pytest
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

import logging

from events.proof import owner_of
from gateway.auth import AuthMiddleware, RedactKeys, redact_keys
from gateway.errors import ApiError, component_of, exception_handlers
from gateway.inputs import BodyLimitMiddleware
from infra.kafka import KafkaUnavailable


def _raise(exc: BaseException):
    async def endpoint(request):
        raise exc

    return endpoint


async def whoami(request):
    return JSONResponse({"owner": request.state.owner})


async def echo(request):
    return JSONResponse({"bytes": len(await request.body())})


async def operator(request):
    return JSONResponse({"operator": request.state.operator})


def make_app(keys=(), operator_keys=()):
    routes = [
        Route("/metrics", operator),
        Route("/api/v1/conflict", _raise(ApiError(409, "conflict", "busy", "name"))),
        Route("/api/v1/db", _raise(OperationalError("SELECT 1", {}, ConnectionRefusedError("refused")))),
        Route("/api/v1/kafka", _raise(KafkaUnavailable("no broker"))),
        Route("/api/v1/bug", _raise(ZeroDivisionError("secret detail"))),
        Route("/api/v1/whoami", whoami),
        Route("/api/v1/jobs/j1/events", whoami),
        Route("/api/v1/echo", echo, methods=["POST"]),
        Route("/health", whoami),
    ]
    middleware = [Middleware(AuthMiddleware, keys=list(keys), operator_keys=list(operator_keys)),
                  Middleware(BodyLimitMiddleware, default_limit=100, limits={})]
    return Starlette(routes=routes, middleware=middleware, exception_handlers=exception_handlers())


def client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t")


async def test_api_error_is_json_with_code_message_and_field():
    async with client(make_app()) as http:
        response = await http.get("/api/v1/conflict")
    assert response.status_code == 409
    assert response.json() == {"error": {"code": "conflict", "message": "busy", "field": "name"}}


@pytest.mark.parametrize("path, component", [("/api/v1/db", "database"), ("/api/v1/kafka", "kafka")])
async def test_outages_are_503_naming_the_service(path, component):
    async with client(make_app()) as http:
        response = await http.get(path)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response.json()["error"]["message"].startswith(f"{component} is unavailable")
    assert "refused" not in response.text and "no broker" not in response.text  # the exception stays in the log


async def test_a_bug_is_500_json_without_traceback():
    async with client(make_app()) as http:
        response = await http.get("/api/v1/bug")
    assert response.status_code == 500
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.json()["error"]["code"] == "internal"


async def test_unknown_route_and_method_are_json():
    async with client(make_app()) as http:
        missing = await http.get("/nope")
        wrong = await http.delete("/api/v1/whoami")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_body_over_the_limit_is_413():
    async with client(make_app()) as http:
        ok = await http.post("/api/v1/echo", content=b"x" * 100)
        big = await http.post("/api/v1/echo", content=b"x" * 101)

        async def chunks():
            for _ in range(5):
                yield b"x" * 30

        streamed = await http.post("/api/v1/echo", content=chunks())
    assert ok.json() == {"bytes": 100}
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    assert streamed.status_code == 413


def test_component_of_looks_through_causes():
    try:
        try:
            raise KafkaConnectionError("down")
        except KafkaConnectionError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        assert component_of(exc) == "kafka"


async def test_auth_off_everyone_is_owner_none():
    async with client(make_app()) as http:
        assert (await http.get("/api/v1/whoami")).json() == {"owner": None}


async def test_auth_on_401_without_key_403_with_wrong_key_owner_from_key():
    async with client(make_app(keys=["k1", "k2"])) as http:
        missing = await http.get("/api/v1/whoami")
        wrong = await http.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"})
        right = await http.get("/api/v1/whoami", headers={"Authorization": "Bearer k2"})
        public = await http.get("/health")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert right.json() == {"owner": owner_of("k2")} and owner_of("k2") != owner_of("k1")
    assert len(owner_of("k2")) == 16 and "k2" not in owner_of("k2")
    assert public.status_code == 200


async def test_query_key_only_on_event_streams():
    async with client(make_app(keys=["k1"])) as http:
        stream = await http.get("/api/v1/jobs/j1/events?api_key=k1")
        other = await http.get("/api/v1/whoami?api_key=k1")
    assert stream.status_code == 200 and stream.json() == {"owner": owner_of("k1")}
    assert other.status_code == 401


async def test_metrics_are_for_operators_once_keys_are_configured():
    async with client(make_app(keys=["tenant"], operator_keys=["ops"])) as http:
        anonymous = await http.get("/metrics")
        tenant = await http.get("/metrics", headers={"Authorization": "Bearer tenant"})
        ops = await http.get("/metrics", headers={"Authorization": "Bearer ops"})
        ops_elsewhere = await http.get("/api/v1/whoami", headers={"Authorization": "Bearer ops"})
    assert anonymous.status_code == 401 and tenant.status_code == 403
    assert "LFZ_OPERATOR_KEYS" in tenant.json()["error"]["message"]
    assert ops.status_code == 200 and ops.json() == {"operator": True}
    assert ops_elsewhere.status_code == 403  # an operator's key is not a tenant's
    async with client(make_app()) as http:  # one user, no keys: that user is the operator
        assert (await http.get("/metrics")).json() == {"operator": True}


def test_keys_in_query_strings_are_redacted_from_access_log_lines():
    assert redact_keys("/api/v1/events?api_key=s3cret&x=1") == "/api/v1/events?api_key=[redacted]&x=1"
    assert redact_keys("/e?x=1&API_KEY=s3cret") == "/e?x=1&API_KEY=[redacted]"
    assert redact_keys("/e?my_api_key=keep") == "/e?my_api_key=keep"
    # uvicorn's access logger passes the path with its query as an argument of the record
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/v1/jobs/j/events?api_key=s3cret", "1.1", 200), None)
    assert RedactKeys().filter(record) and "s3cret" not in record.getMessage()
    assert "api_key=[redacted]" in record.getMessage()
