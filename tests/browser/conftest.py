"""The dashboard in headless Chromium against a running system: an agents worker and two gateways (auth off, and
auth on with one key) on the real servers of `make services`, on topics of their own. All of it lives for one test
module and stops before the next module starts.

Chromium is Debian's (`make browser-deps` installs it and uPlot); Playwright drives it and never downloads one.
Each page records console errors and uncaught exceptions: a test ends by asserting there were none (apart from
the HTTP errors it provoked on purpose). Screenshots go to `test-output/screenshots/`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Page, expect, sync_playwright

from cli.client import Client
from infra.db import migrate
from infra.settings import Settings
from tests.integration.conftest import settings  # noqa: F401  (the real servers, checked to answer; never skipped)
from tests.integration.stack import Process, start_gateway, start_worker

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
API_KEY = "key-browser-0123456789"

expect.set_options(timeout=15_000)  # a busy two-core machine can take longer than the default 5 s to open a page

# A small English text made here: enough for the tiny preset to learn something visible.
CORPUS = "\n".join([
    "The model reads the text one character at a time and learns what comes next.",
    "A small network trained for a few steps already knows which letters follow a space.",
    "Validation text is held out, so the loss on it is an honest measure of what was learned.",
    "The cat sat on the mat, and the dog sat on the log, and the bird sat in the tree.",
] * 40) + "\n"


@pytest.fixture(scope="module")
def stack_env(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:  # noqa: F811
    migrate(settings.resolved_database_url, quiet=True)  # idempotent: brings the shared database to head
    env = {k: v for k, v in os.environ.items() if k != "LFZ_API_KEYS"}
    env.update(LFZ_TOPIC_PREFIX=f"lfz.test.br{uuid.uuid4().hex[:10]}.",
               LFZ_DATA_DIR=str(tmp_path_factory.mktemp("lfz")), LFZ_SUBMIT_WAIT_S="10",
               LFZ_REQUEST_TIMEOUT_S="60", LFZ_LOG_LEVEL="WARNING",
               # Progress every 5 steps (or 0.2 s), so that the loss chart visibly grows during a short run.
               LFZ_PROGRESS_EVERY_STEPS="5", LFZ_PROGRESS_EVERY_S="0.2")
    return env


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def worker(stack_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    process = start_worker("worker", stack_env, log_dir)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gateway_url(stack_env: dict[str, str], log_dir: Path, worker: Process) -> Iterator[str]:
    """A gateway without auth."""
    process, url = start_gateway("gateway", stack_env, log_dir)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def auth_gateway_url(stack_env: dict[str, str], log_dir: Path, worker: Process) -> Iterator[str]:
    """A gateway that needs `API_KEY`."""
    process, url = start_gateway("gateway-auth", {**stack_env, "LFZ_API_KEYS": API_KEY}, log_dir)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def trained_model(gateway_url: str) -> dict:
    """A model trained through the API, for the pages that need a finished one."""
    with Client(gateway_url) as client:
        created = client.create_model(f"fixture-{uuid.uuid4().hex[:8]}", text=CORPUS,
                                      hyperparameters={"preset": "tiny", "max_iters": 150})
        job = client.wait_for_job(created["job_id"], timeout_s=240)
        assert job["status"] == "completed", job
        model = client.get_model(created["model_id"])
        assert model["status"] == "completed", model
    return {**created, "name": model["name"]}


@pytest.fixture(scope="module")
def browser(stack_env: dict[str, str]) -> Iterator[Browser]:
    # Module-scoped, so that it stops before the tests that follow: while Playwright's sync API is running, its
    # event loop is the thread's, and neither `asyncio.run` (the migration) nor an async test can start another.
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (Debian's chromium package)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class Dashboard:
    """Browser tabs on the dashboard (`page` is the first), with what their consoles said, and a camera."""

    def __init__(self, context: BrowserContext):
        self.context = context
        self.errors: list[str] = []
        self.page = self.new_tab()

    def new_tab(self) -> Page:
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            self.errors.append(f"console.{message.type}: {message.text} ({message.location.get('url', '')})")

    def shot(self, name: str, page: Page | None = None, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=full_page)
        return path

    def assert_no_console_errors(self, *expected_statuses: int) -> None:
        """None, except "Failed to load resource" for the HTTP statuses this test provoked on purpose."""
        allowed = re.compile(rf"status of ({'|'.join(map(str, expected_statuses))})\b") if expected_statuses else None
        unexpected = [e for e in self.errors if not (allowed and "Failed to load resource" in e and allowed.search(e))]
        assert unexpected == [], "the page logged errors:\n" + "\n".join(unexpected)


@pytest.fixture
def dashboard(browser: Browser) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    yield Dashboard(context)
    try:
        context.close()
    except Error:
        pass
