"""The dashboard end to end, as a person uses it: train from the form and watch the run, evaluate the result,
stream a generation, see an API error beside its field, work with an API key, and do without uPlot."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from cli.client import Client
from tests.browser.conftest import API_KEY, CORPUS, Dashboard

pytestmark = [pytest.mark.browser, pytest.mark.integration]

TRAINING_TIMEOUT_MS = 240_000

# Records, every 50 ms, what the job page shows: the test's own probe, not part of the page (which never polls).
RECORDER = """() => {
  window.__seen = [];
  window.__recorder = setInterval(() => {
    const chart = document.querySelector('#loss-chart');
    const bar = document.querySelector('#job-progress [data-progress]');
    const status = document.querySelector('#job-status [data-status]');
    if (chart) window.__seen.push({points: Number(chart.dataset.points), progress: Number(bar?.dataset.progress || 0),
                                   status: status?.dataset.status || ''});
  }, 50);
}"""


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def points(page: Page, selector: str = "#loss-chart") -> int:
    return int(page.locator(selector).get_attribute("data-points") or 0)


def wait_for_points(page: Page, at_least: int, timeout: float = 60_000) -> int:
    page.wait_for_function(f"Number(document.querySelector('#loss-chart')?.dataset.points) >= {at_least}",
                           timeout=timeout)
    return points(page)


def wait_until_drawn(page: Page) -> tuple[int, int]:
    """Wait until the log has reached the job's end and both charts hold a point per logged event; returns the
    numbers of TrainProgress and ValidationCompleted events."""
    page.wait_for_function("""() => {
      const rows = [...document.querySelectorAll('#event-log tr[data-type]')];
      const count = (type) => rows.filter(r => r.dataset.type === type).length;
      const loss = document.querySelector('#loss-chart'), rate = document.querySelector('#lr-chart');
      return rows.length && rows[rows.length - 1].dataset.type === 'TrainCompleted' && loss && rate
        && Number(loss.dataset.points) === count('TrainProgress') + count('ValidationCompleted')
        && Number(rate.dataset.points) === count('TrainProgress');
    }""")
    log = page.locator("#event-log")
    return (log.locator("tr[data-type='TrainProgress']").count(),
            log.locator("tr[data-type='ValidationCompleted']").count())


def nav(page: Page, section: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=section, exact=True).click()


def open_dashboard(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")


def fill_training_form(page: Page, name: str, max_iters: int, upload: bytes | None = None,
                       **hyperparameters: int) -> None:
    """The training form, with the corpus pasted, or `upload` chosen as the file to upload."""
    nav(page, "Train")
    page.get_by_label("Name", exact=True).fill(name)
    if upload is None:
        page.get_by_label("Training text").fill(CORPUS)
    else:
        page.get_by_label("Upload a file").check()
        page.get_by_label("Text file (UTF-8)").set_input_files(
            {"name": "corpus.txt", "mimeType": "text/plain", "buffer": upload})
    page.get_by_label("Preset").select_option("tiny")
    # Every hyperparameter's field is labelled with its name in the API, as the presets document lists them.
    page.get_by_label("max_iters", exact=True).fill(str(max_iters))
    for key, value in hyperparameters.items():
        page.get_by_label(key, exact=True).fill(str(value))


def job_id_from(page: Page) -> str:
    page.wait_for_url(re.compile(r".*#/jobs/[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


def model_row_state(page: Page, name: str) -> dict | None:
    return page.evaluate("""(name) => {
      const rows = [...document.querySelectorAll('#models-table tr[data-model-id]')];
      const row = rows.find(r => r.textContent.includes(name));
      return row ? {status: row.dataset.status, progress: Number(row.querySelector('[data-progress]').dataset.progress)}
                 : null;
    }""", name)


def test_training_from_the_form_draws_progress_and_loss_as_they_arrive(dashboard: Dashboard, gateway_url: str):
    # A second tab shows the overview from before the job exists: all it learns of the job comes from the live feed.
    watcher = dashboard.new_tab()
    open_dashboard(watcher, gateway_url)
    watcher.evaluate("""() => {
      window.__rows = [];
      setInterval(() => {
        const rows = [...document.querySelectorAll('#models-table tr[data-model-id]')];
        window.__rows.push(rows.map(r => [r.textContent, r.dataset.status,
                                          Number(r.querySelector('[data-progress]').dataset.progress)]));
      }, 50);
    }""")

    page = dashboard.page
    open_dashboard(page, gateway_url)
    name = unique_name("form")
    fill_training_form(page, name, max_iters=300)
    dashboard.shot("01-train-form")
    page.get_by_role("button", name="Start training").click()
    job_id = job_id_from(page)
    page.evaluate(RECORDER)

    first = wait_for_points(page, 2, TRAINING_TIMEOUT_MS)
    grown = wait_for_points(page, first + 3)
    assert grown > first
    dashboard.shot("02-job-training")
    watcher.wait_for_function("""(name) => [...document.querySelectorAll('#models-table tr')]
                                   .some(r => r.textContent.includes(name))""", arg=name)
    dashboard.shot("03-overview-live", watcher, full_page=False)

    expect(page.locator("#job-status [data-status]")).to_have_attribute("data-status", "completed",
                                                                        timeout=TRAINING_TIMEOUT_MS)
    seen = page.evaluate("window.__seen")
    while_running = [s["points"] for s in seen if s["status"] != "completed"]
    assert len(set(while_running)) >= 3, f"the chart did not grow while the job ran: {while_running}"
    assert while_running == sorted(while_running), "the number of plotted points went down"
    progress = [s["progress"] for s in seen]
    assert len(set(progress)) >= 3 and progress == sorted(progress)
    expect(page.locator("#job-progress [data-progress]")).to_have_attribute("data-progress", "1")
    progress_events, validations = wait_until_drawn(page)
    assert progress_events >= 10 and validations >= 1
    assert page.locator("#loss-chart canvas").count() == 1 and page.locator("#lr-chart canvas").count() == 1
    expect(page.locator("#checkpoints tbody tr").first).to_be_visible()
    dashboard.shot("04-job-completed")

    # The overview tab followed the job from its first fact to its last, without a reload.
    watcher.wait_for_function("""(name) => [...document.querySelectorAll('#models-table tr')]
                                   .some(r => r.textContent.includes(name) && r.dataset.status === 'completed')""",
                              arg=name)
    assert model_row_state(watcher, name) == {"status": "completed", "progress": 1}
    history = [row for rows in watcher.evaluate("window.__rows") for row in rows if name in row[0]]
    statuses = [status for _, status, _ in history]
    assert "training" in statuses, statuses
    shown = [fraction for _, status, fraction in history if status == "training"]
    assert len(set(shown)) >= 2 and shown == sorted(shown), shown

    # Opened again after the end, the job page redraws every point from the replayed log.
    watcher.locator("#models-table").get_by_role("link", name=name).click()
    assert job_id_from(watcher) == job_id
    assert wait_until_drawn(watcher) == (progress_events, validations)
    dashboard.assert_no_console_errors()


def test_finished_job_redraws_its_curves_and_runs_an_evaluation(dashboard: Dashboard, gateway_url: str,
                                                               trained_model: dict):
    page = dashboard.page
    open_dashboard(page, gateway_url)
    page.goto(f"{gateway_url}/#/jobs/{trained_model['job_id']}")
    expect(page.locator("#job-status [data-status]")).to_have_attribute("data-status", "completed")
    progress_events, validations = wait_until_drawn(page)
    assert progress_events >= 10 and validations >= 1

    form = page.locator("#evaluate-form")
    expect(form).to_be_visible()
    form.get_by_label("New tokens per prompt").fill("24")
    form.get_by_role("button", name="Run evaluation").click()
    report = page.locator("#latest-evaluation .report-view")
    expect(report).to_be_visible(timeout=120_000)
    perplexity = report.locator("tr[data-key='held_out.perplexity'] td")
    expect(perplexity).to_have_text(re.compile(r"^\d"))
    perplexity_text = perplexity.inner_text()
    expect(report.locator("tr[data-key='generation.prompts'] td")).to_have_text("2")
    expect(page.locator("#latest-evaluation table.samples tbody tr")).to_have_count(2)
    page.locator("#evaluation").scroll_into_view_if_needed()
    dashboard.shot("05-job-evaluation")

    # The evaluation job's own page shows the same report.
    page.locator("#evaluation-status a").click()
    expect(page.locator("#latest-evaluation tr[data-key='held_out.perplexity'] td")).to_have_text(
        perplexity_text)
    dashboard.shot("06-evaluation-job")
    dashboard.assert_no_console_errors()


def test_playground_streams_tokens_with_ttft_and_speed(dashboard: Dashboard, gateway_url: str, trained_model: dict):
    page = dashboard.page
    open_dashboard(page, gateway_url)
    nav(page, "Playground")
    page.get_by_label("Model").select_option(trained_model["model_id"])
    page.get_by_label("Prompt").fill("The cat")
    page.get_by_label("Temperature").fill("0.7")
    page.get_by_label("Top-k").fill("20")
    page.get_by_label("Top-p").fill("0.95")
    page.get_by_label("Max new tokens").fill("300")
    page.get_by_label("Seed").fill("7")
    # Record the completion's length at every change, to see the tokens arrive in several pieces.
    page.evaluate("""() => {
      window.__lengths = [];
      const completion = document.querySelector('#completion');
      new MutationObserver(() => window.__lengths.push(completion.textContent.length))
        .observe(completion, {childList: true, characterData: true, subtree: true});
    }""")
    page.get_by_role("button", name="Generate").click()
    output = page.locator("#generation-output")
    expect(output).to_have_attribute("data-state", "done", timeout=60_000)
    lengths = [n for n in page.evaluate("window.__lengths") if n > 0]
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), lengths
    assert int(page.locator("#completion").get_attribute("data-chunks")) >= 3
    expect(page.locator("#stat-ttft")).to_have_text(re.compile(r"^\d[\d,]* ms$"))
    expect(page.locator("#stat-tps")).to_have_text(re.compile(r"^\d"))
    expect(page.locator("#stat-tokens")).to_have_text("300")
    expect(page.locator("#stat-server-ttft")).to_have_text(re.compile(r" ms$"))
    assert page.locator("#completion").inner_text().strip()
    dashboard.shot("07-playground")

    # A sampling value the API refuses: the message goes beside that control, and the last completion stays.
    page.get_by_label("Temperature").fill("9")
    page.get_by_role("button", name="Generate").click()
    temperature = page.locator(".field[data-for='temperature'] .field-error")
    expect(temperature).to_contain_text("temperature")
    expect(page.get_by_label("Temperature")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#stat-tokens")).to_have_text("300")
    assert page.locator("#completion").inner_text().strip()
    dashboard.assert_no_console_errors(422)


def test_api_errors_appear_beside_the_field_they_name(dashboard: Dashboard, gateway_url: str):
    page = dashboard.page
    open_dashboard(page, gateway_url)
    fill_training_form(page, "", max_iters=100)
    page.get_by_role("button", name="Start training").click()
    name_field = page.locator(".field[data-for='name']")
    expect(name_field.locator(".field-error")).to_be_visible()
    expect(name_field.locator(".field-error")).to_contain_text("name")
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Name", exact=True).fill(unique_name("bad-shape"))
    page.get_by_label("d_model", exact=True).fill("30")
    page.get_by_label("num_heads", exact=True).fill("4")
    page.get_by_role("button", name="Start training").click()
    d_model = page.locator(".field[data-for='hyperparameters.d_model']")
    expect(d_model.locator(".field-error")).to_contain_text("not divisible by num_heads")
    expect(name_field.locator(".field-error")).to_be_hidden()  # the earlier error went away
    assert "#/train" in page.url
    dashboard.shot("08-train-form-error")

    # An upload the gateway refuses: the message goes beside the file input.
    page.get_by_label("d_model", exact=True).fill("")
    page.get_by_label("Upload a file").check()
    page.get_by_label("Text file (UTF-8)").set_input_files(
        {"name": "image.bin", "mimeType": "application/octet-stream", "buffer": b"\x89PNG\x00\x00"})
    page.get_by_role("button", name="Start training").click()
    upload = page.locator(".field[data-for='file']")
    expect(upload.locator(".field-error")).to_contain_text("not UTF-8")
    expect(d_model.locator(".field-error")).to_be_hidden()
    dashboard.shot("09-upload-error", full_page=False)
    dashboard.assert_no_console_errors(422)


def test_with_auth_on_the_key_is_asked_for_once_and_used_everywhere(dashboard: Dashboard, auth_gateway_url: str):
    page = dashboard.page
    page.goto(auth_gateway_url + "/")
    panel = page.locator("#key-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#view h1")).to_have_text("API key needed")
    dashboard.shot("10-auth-key-needed", full_page=False)
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Save key").click()
    expect(panel).to_be_hidden()
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")  # EventSource with ?api_key=
    expect(page.locator("#models-table")).to_be_visible()

    # Kept across a reload: the page starts straight away.
    page.reload()
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(panel).to_be_hidden()
    assert page.evaluate("localStorage.getItem('lfz.apiKey')") == API_KEY

    name = unique_name("keyed")
    fill_training_form(page, name, max_iters=60, upload=CORPUS.encode())  # multipart, with the key too
    page.get_by_role("button", name="Start training").click()
    job_id_from(page)
    expect(page.locator("#job-status [data-status]")).to_have_attribute("data-status", "completed",
                                                                        timeout=TRAINING_TIMEOUT_MS)
    assert wait_until_drawn(page)[0] > 0
    expect(page.locator("#loss-chart canvas")).to_have_count(1)  # the charting library needs no key either
    nav(page, "Models & jobs")
    expect(page.locator("#models-table tr", has_text=name)).to_have_attribute("data-status", "completed")
    dashboard.shot("11-auth-overview", full_page=False)
    dashboard.assert_no_console_errors(401)


def test_without_uplot_the_page_says_charts_need_npm_ci(dashboard: Dashboard, gateway_url: str, trained_model: dict):
    page = dashboard.page
    page.route("**/vendor/uplot/**", lambda route: route.fulfill(status=404, body="not installed"))
    open_dashboard(page, gateway_url)
    page.goto(f"{gateway_url}/#/jobs/{trained_model['job_id']}")
    expect(page.locator(".chart-missing")).to_contain_text("npm ci")
    expect(page.locator("#job-status [data-status]")).to_have_attribute("data-status", "completed")
    assert wait_until_drawn(page)[0] > 0  # the data is all there; only the drawing is missing
    dashboard.shot("12-job-without-uplot")
    dashboard.assert_no_console_errors(404)


def test_runs_compared_from_the_overview_and_a_sweeps_trials_live(dashboard: Dashboard, gateway_url: str,
                                                                   trained_model: dict):
    with Client(gateway_url) as client:
        more = client.train_more(trained_model["model_id"], max_iters=50,
                                 hyperparameters={"learning_rate": 0.01})
        assert client.wait_for_job(more["job_id"], timeout_s=240)["status"] == "completed"
        sweep = client.create_sweep({"name": unique_name("swept"), "dataset": {"text": CORPUS},
                                     "hyperparameters": {"preset": "tiny", "max_iters": 60},
                                     "space": {"learning_rate": {"values": [3e-3, 1e-2]}}, "method": "grid"})
    page = dashboard.page
    open_dashboard(page, gateway_url)
    for model_id in (trained_model["model_id"], more["model_id"]):
        page.locator(f'tr[data-model-id="{model_id}"] .compare-pick').check()
    page.locator("#compare-button").click()
    expect(page.locator('#compare-table tr.differs[data-key="train.learning_rate"]')).to_be_visible()
    expect(page.locator("#compare-chart")).to_have_attribute("data-series", "2")
    assert int(page.locator("#compare-chart").get_attribute("data-points") or 0) >= 2
    page.locator("#compare-x").select_option("time")
    expect(page.locator("#compare-chart .u-title, #compare-chart canvas").first).to_be_attached()
    dashboard.shot("13-compare")

    page.goto(f"{gateway_url}/#/sweeps/{sweep['job_id']}")
    rows = page.locator("#trials-table tbody tr")
    expect(rows).to_have_count(2, timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator('#trials-table tr[data-status="completed"]')).to_have_count(2, timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#sweep-chart")).to_have_attribute("data-points", "2", timeout=30_000)
    expect(page.locator("#sweep-summary")).to_contain_text("Best so far: trial")
    dashboard.shot("14-sweep")
    dashboard.assert_no_console_errors()


def test_the_datasets_page_shows_a_tokenization_as_it_runs_and_when_done(dashboard: Dashboard, gateway_url: str):
    text = f"{uuid.uuid4()}\n" + CORPUS * 40
    with Client(gateway_url) as client:
        dataset = client.upload_dataset(text, name=unique_name("corpus"))
    page = dashboard.page
    open_dashboard(page, gateway_url)
    nav(page, "Datasets")
    card = page.locator(f'[data-dataset="{dataset["id"]}"]')
    expect(card).to_contain_text("Not tokenized yet")
    expect(card).to_contain_text(f"{len(text.encode()):,}".split(",")[0])  # its size is shown
    with Client(gateway_url) as client:
        submitted = client.tokenize_dataset(dataset["id"], "bpe", {"vocab_size": 300})
        assert client.wait_for_job(submitted["job_id"], timeout_s=120)["status"] == "completed"
    row = card.locator("tr[data-tokenization]")
    expect(row).to_contain_text("bpe (vocab_size=300)")  # redrawn from the live feed, no reload
    expect(row).to_contain_text("uint16")
    expect(card).to_contain_text("1 documents")
    dashboard.shot("13-datasets")
    dashboard.assert_no_console_errors()
