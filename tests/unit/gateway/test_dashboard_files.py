"""The dashboard's files: the page, its modules and the charting library are served without an API key, the API
behind them still needs one, and a missing `npm ci` leaves the page working."""

from pathlib import Path

import httpx
import pytest

from gateway import system
from gateway.app import create_app
from infra.settings import Settings


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture
def uplot_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "uplot" / "dist"
    folder.mkdir(parents=True)
    (folder / "uPlot.esm.js").write_text("export default function uPlot() {}\n")
    monkeypatch.setattr(system, "UPLOT_DIR", folder)
    return folder


async def test_page_modules_and_uplot_are_public_while_the_api_needs_a_key(uplot_dir: Path):
    async with client(create_app(Settings(api_keys=["k1"]))) as http:
        page = await http.get("/")
        assert page.status_code == 200 and '<script type="module" src="/static/js/app.js">' in page.text
        module = await http.get("/static/js/app.js")
        assert module.status_code == 200
        assert module.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
        assert (await http.get("/static/style.css")).status_code == 200
        library = await http.get("/vendor/uplot/uPlot.esm.js")
        assert library.status_code == 200 and "uPlot" in library.text
        assert (await http.get("/api/v1/models")).status_code == 401


async def test_without_npm_ci_the_library_is_a_json_404_not_a_401(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(system, "UPLOT_DIR", tmp_path / "missing")
    async with client(create_app(Settings(api_keys=["k1"]))) as http:
        assert (await http.get("/")).status_code == 200
        missing = await http.get("/vendor/uplot/uPlot.esm.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
