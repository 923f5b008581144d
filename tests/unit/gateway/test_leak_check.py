"""The schemathesis leak check of tests/integration/gateway/leaks.py fails on responses that leak, and only on those.

A small app that leaks on purpose (a traceback in the body, a key echoed in a header, the database URL in an error)
is called over httpx's ASGI transport; each response goes through the check exactly as schemathesis hands it over.
"""

import traceback

import httpx
import pytest
import schemathesis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from gateway.errors import exception_handlers
from tests.integration.gateway import leaks

API_KEY = "key-carol-5555555555"
S3_SECRET = "s3-secret-0123456789abcdef"
DATABASE_URL = "postgresql+asyncpg://lfz:lfz@127.0.0.1:5432/lfz"


async def naive_traceback(request: Request) -> PlainTextResponse:
    try:
        {}["missing"]
    except KeyError:
        return PlainTextResponse(traceback.format_exc(), status_code=500)
    raise AssertionError("unreachable")


async def echoes_the_key(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True}, headers={"X-Debug-Auth": request.headers.get("authorization", "")})


async def names_the_database(request: Request) -> JSONResponse:
    return JSONResponse({"error": {"message": f"cannot connect to {DATABASE_URL}"}}, status_code=503)


async def s3_error(request: Request) -> JSONResponse:
    return JSONResponse({"error": {"message": f"signature mismatch for secret {S3_SECRET}"}}, status_code=502)


async def a_bug(request: Request) -> JSONResponse:
    raise ZeroDivisionError("division by zero in gateway/models.py")


async def clean(request: Request) -> JSONResponse:
    return JSONResponse({"error": {"code": "invalid", "message": "hyperparameters.d_model: must be positive",
                                   "field": "hyperparameters.d_model"}}, status_code=422)


app = Starlette(routes=[Route("/traceback", naive_traceback), Route("/echo", echoes_the_key),
                        Route("/database", names_the_database), Route("/s3", s3_error), Route("/bug", a_bug),
                        Route("/clean", clean)],
                exception_handlers=exception_handlers())


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in leaks.secrets_env([API_KEY], S3_SECRET, DATABASE_URL).items():
        monkeypatch.setenv(name, value)


async def check(path: str) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get(path, headers={"Authorization": f"Bearer {API_KEY}"})
    leaks.no_leaked_secrets(None, schemathesis.Response.from_any(response), None)


@pytest.mark.parametrize("path, what", [
    ("/traceback", "a traceback"),
    ("/echo", "an API key"),
    ("/database", "the database URL"),
    ("/s3", "the S3 secret key"),
])
async def test_a_leaking_response_fails_the_check_naming_the_leak(path: str, what: str):
    with pytest.raises(AssertionError, match=what):
        await check(path)


async def test_the_gateways_own_error_handling_passes_even_for_a_bug():
    await check("/bug")  # a 500 answered by gateway.errors: no detail, no traceback
    await check("/clean")


def test_the_database_password_is_found_with_its_user_and_bare_only_when_long():
    needles = leaks.secret_needles([], "", "postgresql://svc:a-long-password@db/x")
    assert "svc:a-long-password@" in needles and "a-long-password" in needles
    short = leaks.secret_needles([], "", DATABASE_URL)
    assert "lfz:lfz@" in short and "lfz" not in short
    assert leaks.find_leaks("topic lfz.job.events", short) == []
    assert leaks.find_leaks('  File "/srv/app/gateway/jobs.py", line 3, in submit', short)


async def test_the_check_refuses_to_run_without_its_secrets(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(leaks.SECRETS_VARIABLE)
    with pytest.raises(RuntimeError, match=leaks.SECRETS_VARIABLE):
        await check("/clean")
