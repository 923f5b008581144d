"""The benchmark runner's document: each figure next to its target, and the Markdown section rendered from it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench.render import render, replace_section
from bench.targets import FAIL, MISSING, NO_TARGET, NOT_RUN, PASS, Target, rows


def _latency(p50: float, p95: float, p99: float) -> dict[str, float]:
    return {"p50": p50, "p95": p95, "p99": p99, "mean": p50, "n": 100}


DOCUMENT: dict[str, Any] = {
    "schema": 1, "date": "2026-12-01T21:50:00+00:00", "quick": False, "wall_s": 725.0,
    "reproduce": "make bench",
    "machine": {"cpu": "AMD EPYC", "cores_logical": 2, "cores_physical": 2, "usable_cores": 2, "ram_gib": 23.5,
                "platform": "Linux-6.18"},
    "load_average": {"before": [0.19, 0.62, 0.67], "after": [1.5, 1.2, 0.9]},
    "versions": {"python": "3.11.7", "torch": "2.15.0", "faust-streaming": "0.15.3", "aiokafka": "0.14.0",
                 "kafka": "Apache Kafka 4.3.1", "database": "PostgreSQL 15.18"},
    "servers": {"kafka": "kafka://127.0.0.1:9092", "database": "postgresql+asyncpg://127.0.0.1:5432/lfz",
                "object_store": "http://127.0.0.1:9000"},
    "corpus": {"path": "/data/tinyshakespeare.txt", "name": "tinyshakespeare.txt", "chars": 1115394,
               "targets_apply": True},
    "steps": {
        "model_train": {"command": ["python", "-m", "bench", "model", "train"], "exit_code": 0, "wall_s": 66.0,
                        "peak_rss_mb": 512.0, "cpu_s": 120.0, "load_before": [0.2, 0.6, 0.7],
                        "load_after": [1.9, 1.0, 0.8],
                        "result": {"preset": "cpu-baby", "tokenizer": "char", "iters": 2000, "val_loss": 1.85,
                                   "wall_s": 65.2, "tokens_per_s": 22000.0}},
        "model_generate": {"command": ["python", "-m", "bench", "model", "generate"], "exit_code": 0, "wall_s": 5.0,
                           "result": {"preset": "cpu-baby", "tokens": 500, "batch": 1, "tokens_per_s": 2600.0,
                                      "ttft_ms": 1.2}},
        "agents": {"command": ["python", "-m", "bench", "pipeline"], "exit_code": 0, "wall_s": 300.0, "result": {
            "generate": {"sequential": {"requests": 30, "first_token_ms": _latency(40, 60, 70),
                                        "completed_ms": _latency(90, 120, 130)},
                         "concurrent": {"requests": 100, "first_token_ms": _latency(300, 600, 700),
                                        "completed_ms": _latency(900, 1500, 1700), "tokens_per_s": 800.0}},
            "projection": {"facts_per_s": 977.0},
            "training": {"jobs": 4, "workers": 2, "jobs_per_min": 3.5, "tokens_per_s": 9000.0, "jain_index": 1.0,
                         "accepted_to_started_s": _latency(5, 40, 41), "accepted_to_completed_s": _latency(50, 80, 81)},
            "processes": {"worker-1": {"pid": 1, "rss_mb": 700.0, "peak_rss_mb": 720.0, "children_peak_rss_mb": 850.0,
                                       "cpu_s": 5.0, "children_cpu_s": 60.0}}}},
        "gateway": {"command": ["python", "-m", "bench", "gateway"], "exit_code": 0, "wall_s": 120.0, "result": {
            "fanout": {"path": "/api/v1/events", "target_p99_ms": 100.0, "max_clients_tried": 1000,
                       "max_clients_within_target": 1000, "gateway_idle_rss_mb": 82.0,
                       "followers_ran_on": "this machine",
                       "largest_round": {"clients": 1000, "p50_ms": 20.0, "p99_ms": 90.0},
                       "rounds": [{"clients": 1000, "events": 50, "rate_per_s": 20.0, "delivered": 50000,
                                   "expected": 50000, "p50_ms": 20.0, "p95_ms": 60.0, "p99_ms": 90.0,
                                   "max_ms": 120.0, "gateway_rss_mb": 126.0, "gateway_cpu_s": 3.0,
                                   "gateway_cpu_us_per_delivery": 60.0, "followers_cpu_s": 1.5}]},
            "generation": {"new_tokens": 32, "latency_ms": _latency(150, 200, 210), "ttft_ms": _latency(60, 90, 95),
                           "processes": {"gateway": {"pid": 2, "rss_mb": 85.0, "peak_rss_mb": 86.0,
                                                     "children_peak_rss_mb": 0.0, "cpu_s": 2.0,
                                                     "children_cpu_s": 0.0}}}}},
    },
}


def _document(**changes: Any) -> dict[str, Any]:
    """A copy of DOCUMENT with `a.b.c=value` changes (None deletes the key)."""
    document = copy.deepcopy(DOCUMENT)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = document
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return document


def _row(document: dict[str, Any], starts: str):
    matches = [row for row in rows(document) if row.label.startswith(starts)]
    assert len(matches) == 1, [row.label for row in rows(document)]
    return matches[0]


def test_every_figure_of_a_complete_run_is_measured():
    assert all(row.result in (PASS, NO_TARGET) for row in rows(DOCUMENT)), rows(DOCUMENT)


def test_the_model_targets_pass_and_fail_on_their_bounds():
    row = _row(DOCUMENT, "train cpu-baby, char, 2000 iterations: validation loss")
    assert (row.measured, row.target, row.result) == ("1.850", "<= 1.88", PASS)
    assert _row(_document(steps__model_train__result__val_loss=1.88), "train cpu-baby").result == PASS
    assert _row(_document(steps__model_train__result__val_loss=1.881), "train cpu-baby").result == FAIL
    assert _row(_document(steps__model_train__result__wall_s=70.5), "train: wall").result == FAIL
    assert _row(_document(steps__model_generate__result__tokens_per_s=1999.0), "generate cpu-baby").result == FAIL
    assert _row(DOCUMENT, "generate cpu-baby, 500 tokens").measured == "2,600"


def test_the_model_targets_do_not_apply_to_another_corpus_or_setting():
    other = _document(corpus__name="pydoc_data.topics", corpus__targets_apply=False)
    row = _row(other, "train cpu-baby")
    assert row.result.startswith("n/a") and "tinyshakespeare" in row.result and "pydoc_data.topics" in row.result
    short = _row(_document(steps__model_train__result__iters=50), "train cpu-baby, char, 50 iterations")
    assert short.result.startswith("n/a") and "2000 iterations" in short.result
    assert _row(_document(steps__model_generate__result__tokens=50), "generate cpu-baby").result.startswith("n/a")


def test_the_fanout_figures_are_how_many_followers_held_and_what_a_thousand_see():
    held = _row(DOCUMENT, "SSE followers")
    assert "within p99 100 ms" in held.label and (held.measured, held.result) == ("1,000", NO_TARGET)
    assert _row(DOCUMENT, "SSE, 1000 followers of one process: delivery p99").measured == "90.0 ms"
    fewer = _document(steps__gateway__result__fanout__max_clients_within_target=250)
    assert _row(fewer, "SSE followers").measured == "250"


def test_labels_name_the_setting_that_ran():
    labels = [row.label for row in rows(DOCUMENT)]
    assert "generate, 100 at once: to first token p99" in labels
    assert "training, 4 jobs on 2 workers: jobs per minute" in labels


def test_a_benchmark_not_run_and_one_that_failed_are_told_apart():
    skipped = _document(steps__gateway=None)
    assert _row(skipped, "SSE followers").result == NOT_RUN
    failed = _document(steps__agents__result=None, steps__agents__exit_code=1, steps__agents__error="boom")
    assert _row(failed, "projection").result == MISSING
    assert _row(failed, "projection").measured == "-"


def test_a_target_compares_only_with_le_or_ge():
    assert Target("<=", 1.0).met(1.0) and not Target("<=", 1.0).met(1.1)
    assert Target(">=", 2000).met(2000) and not Target(">=", 2000).met(1999.9)
    with pytest.raises(ValueError, match="'<=' or '>='"):
        Target("<", 1.0)


def test_the_rendered_section_shows_the_run_machine_versions_and_figures():
    text = render(DOCUMENT)
    assert "| model | train cpu-baby, char, 2000 iterations: validation loss | 1.850 | <= 1.88 | pass |" in text
    assert "AMD EPYC, 2 cores usable" in text and "23.5 GiB RAM" in text
    assert "0.19/0.62/0.67 before, 1.50/1.20/0.90 after" in text
    assert "Python 3.11.7" in text and "torch 2.15.0" in text and "Apache Kafka 4.3.1" in text
    assert "PostgreSQL 15.18" in text
    assert "tinyshakespeare.txt (1,115,394 characters): the model's targets apply." in text
    assert "Reproduce: `make bench`" in text and "12m05s in all" in text
    assert "| 1000 | 50000 / 50000 | 20.0 | 60.0 | 90.0 | 120.0 | 126 | 3.00 | 60 | 1.50 |" in text
    assert "| bench pipeline | worker-1 | 720 | 700 | 850 | 5.0 | 60.0 |" in text
    assert "Quick run" not in text


def test_a_failure_is_bold_and_a_quick_run_says_its_figures_do_not_count():
    text = render(_document(steps__model_train__result__val_loss=2.5, quick=True))
    assert "| 2.500 | <= 1.88 | **FAIL** |" in text
    assert "Quick run" in text and "not comparable with the targets" in text


def test_a_failed_benchmark_is_listed_with_its_error():
    text = render(_document(steps__agents__result=None, steps__agents__exit_code=1,
                            steps__agents__error="TimeoutError: job did not end"))
    assert "failed (exit 1): TimeoutError: job did not end" in text


def test_only_the_text_between_the_markers_is_replaced():
    page = ("# Benchmarks\n\nhand-written intro\n\n<!-- bench:begin -->\nold figures\n<!-- bench:end -->\n\n"
            "## Demo\nkept\n")
    once = replace_section(page, render(DOCUMENT))
    assert once.startswith("# Benchmarks\n\nhand-written intro\n\n<!-- bench:begin -->\n")
    assert once.endswith("<!-- bench:end -->\n\n## Demo\nkept\n")
    assert "old figures" not in once
    assert replace_section(once, render(DOCUMENT)) == once  # rendering again changes nothing
    other = replace_section(page.replace("bench:", "bench-embedded:"), "x", section="bench-embedded")
    assert "<!-- bench-embedded:begin -->\nx\n<!-- bench-embedded:end -->" in other


@pytest.mark.parametrize("page", [
    "no markers at all",
    "<!-- bench:end --> before <!-- bench:begin -->",
    "<!-- bench:begin --> <!-- bench:begin --> <!-- bench:end -->",
])
def test_missing_or_misplaced_markers_are_named(page):
    with pytest.raises(ValueError, match="<!-- bench:begin -->"):
        replace_section(page, "body")


def test_a_section_name_that_cannot_be_a_marker_is_refused():
    with pytest.raises(ValueError, match="section name"):
        replace_section("<!-- a b:begin --><!-- a b:end -->", "body", section="a b")
