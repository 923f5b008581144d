"""The runner behind `make bench`: which corpus it trains on, how it runs a benchmark, what it refuses."""

from __future__ import annotations

import json
import os
import sys

import pytest

import bench.runner as runner


def test_the_corpus_is_the_given_file_and_the_targets_follow_its_name(tmp_path):
    shakespeare = tmp_path / "tinyshakespeare.txt"
    shakespeare.write_text("First Citizen:\nBefore we proceed", encoding="utf-8")
    corpus = runner.corpus(str(shakespeare), tmp_path)
    assert corpus["path"] == str(shakespeare.resolve())
    assert corpus["chars"] == len("First Citizen:\nBefore we proceed")
    assert corpus["targets_apply"] is True
    other = tmp_path / "mine.txt"
    other.write_text("abc", encoding="utf-8")
    assert runner.corpus(str(other), tmp_path)["targets_apply"] is False


def test_without_tinyshakespeare_the_corpus_is_pythons_help_texts(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "DEFAULT_DATA", tmp_path / "absent.txt")
    corpus = runner.corpus(None, tmp_path)
    assert corpus["name"] == "pydoc_data.topics"
    assert corpus["targets_apply"] is False
    assert corpus["chars"] > 100_000  # the whole reference, written where the training benchmark can read it
    assert open(corpus["path"], encoding="utf-8").read().count("\n") > 1000


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), (b"\xff\xfe\x00bad", "not UTF-8")])
def test_a_corpus_that_cannot_be_read_is_named(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit, match=message) as raised:
        runner.corpus(str(path), tmp_path)
    assert str(path) in str(raised.value)


def test_a_benchmark_step_reports_its_json_its_time_and_its_memory():
    script = "import json; b = b'x' * (32 * 2**20); print('progress', file=__import__('sys').stderr); " \
             "print(json.dumps({'tokens_per_s': 1234.5}))"
    step = runner.run_step(["python", "-c", script], dict(os.environ), timeout_s=60)
    assert step["exit_code"] == 0
    assert step["result"] == {"tokens_per_s": 1234.5}
    assert step["peak_rss_mb"] >= 32  # the child's own peak, from wait4
    assert step["wall_s"] > 0 and step["cpu_s"] > 0
    assert len(step["load_before"]) == 3 and len(step["load_after"]) == 3
    assert step["command"][0] == "python"  # as the document shows it, whatever the interpreter's path


def test_a_failing_benchmark_keeps_its_last_words():
    script = "import sys; print('starting', file=sys.stderr); print('ValueError: bad', file=sys.stderr); sys.exit(3)"
    step = runner.run_step([sys.executable, "-c", script], dict(os.environ), timeout_s=60)
    assert step["exit_code"] == 3
    assert step["error"] == "ValueError: bad"
    assert step["stderr_tail"] == ["starting", "ValueError: bad"]
    assert "result" not in step


def test_a_benchmark_that_prints_no_json_is_a_failure():
    step = runner.run_step(["python", "-c", "print('figures: 12')"], dict(os.environ), timeout_s=60)
    assert step["exit_code"] is None
    assert "printed no JSON" in step["error"] and "figures: 12" in step["error"]


def test_a_benchmark_past_its_time_is_stopped():
    step = runner.run_step(["python", "-c", "import time; time.sleep(60)"], dict(os.environ), timeout_s=0.5)
    assert step["exit_code"] == -15  # stopped by SIGTERM, not left to sleep its minute
    assert step["error"].startswith("timed out after")


def test_the_full_run_measures_at_the_targets_settings(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("<!-- bench:begin -->\n<!-- bench:end -->\n", encoding="utf-8")
    args = runner.parse(["--doc", str(doc)])
    commands = runner.commands(args, "/data/tinyshakespeare.txt")
    assert list(commands) == list(runner.STEPS)
    train = commands["model_train"]
    assert train[train.index("--preset") + 1] == "cpu-baby" and train[train.index("--tokenizer") + 1] == "char"
    assert train[train.index("--max-iters") + 1] == "2000"
    generate = commands["model_generate"]
    assert generate[generate.index("--tokens") + 1] == "500"
    assert commands["agents"] == ["python", "-m", "bench", "pipeline", "--json"]
    assert commands["gateway"] == ["python", "-m", "bench", "gateway", "--json"]


def test_quick_runs_write_beside_the_docs_never_over_them():
    args = runner.parse(["--quick", "--gateway-args", "--rate 10"])
    assert args.json_out == runner.QUICK_OUT / "benchmarks.json" and args.doc == runner.QUICK_OUT / "benchmarks.md"
    assert runner.commands(args, "x.txt")["gateway"][-2:] == ["--rate", "10"]
    assert "50" in runner.commands(args, "x.txt")["model_train"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--only", "model_train,nope"], "unknown benchmark nope"),
    (["--iters", "0"], "--iters must be at least 1"),
    (["--section", "a b"], "section name"),
])
def test_bad_arguments_are_refused_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit):
        runner.parse(argv)
    assert message in capsys.readouterr().err


def test_the_docs_have_the_markers_that_make_bench_and_make_bench_embedded_write_between():
    text = (runner.ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for section in ("bench", "bench-embedded"):
        assert text.count(f"<!-- {section}:begin -->") == 1 and text.count(f"<!-- {section}:end -->") == 1


def test_a_doc_without_markers_is_refused_before_the_benchmarks_run(tmp_path, capsys):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        runner.parse(["--doc", str(doc)])
    assert "<!-- bench:begin -->" in capsys.readouterr().err


def test_render_only_rewrites_the_section_from_the_json(tmp_path):
    from tests.unit.bench.test_report import DOCUMENT

    source, doc = tmp_path / "benchmarks.json", tmp_path / "benchmarks.md"
    source.write_text(json.dumps(DOCUMENT), encoding="utf-8")
    doc.write_text("intro\n<!-- bench:begin -->\n<!-- bench:end -->\noutro\n", encoding="utf-8")
    assert runner.main(["--render-only", "--json-out", str(source), "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n<!-- bench:begin -->\n") and text.endswith("<!-- bench:end -->\noutro\n")
    assert "| 1.850 | <= 1.88 | pass |" in text


def test_a_run_in_parts_keeps_the_earlier_parts_steps_and_its_start():
    from bench.runner import merged

    earlier = {"date": "2026-12-01T10:00:00+00:00", "load_average": {"before": [0.1], "after": [1.5]}, "wall_s": 90,
               "versions": {"kafka": None}, "steps": {"model_train": {"exit_code": 0}, "agents": {"exit_code": 1}}}
    later = {"date": "2026-12-01T10:02:00+00:00", "load_average": {"before": [0.4], "after": [0.9]}, "wall_s": 300,
             "versions": {"kafka": "4.3.1"}, "steps": {"gateway": {"exit_code": 0}, "agents": {"exit_code": 0}}}
    document = merged(earlier, later)
    assert list(document["steps"]) == ["model_train", "agents", "gateway"]
    assert document["steps"]["agents"] == {"exit_code": 0}  # the part run again wins
    assert document["versions"] == {"kafka": "4.3.1"} and document["date"] == earlier["date"]
    assert document["load_average"] == {"before": [0.1], "after": [0.9]} and document["wall_s"] == 390


def test_a_model_only_part_run_after_the_servers_part_keeps_the_servers_it_did_not_use():
    """Regression: `--only model_train --merge` after the servers' part, run without the servers' settings, made the
    report say that the pipeline and gateway figures came from the embedded broker and SQLite."""
    from bench.runner import merged

    earlier = {"date": "d", "load_average": {"before": [0.1]}, "wall_s": 90, "servers": {"kafka": "real"},
               "versions": {"torch": "2.14", "kafka": "Apache Kafka 4.3.1", "database": "PostgreSQL 15.18"},
               "steps": {"agents": {"exit_code": 0}, "gateway": {"exit_code": 0}}}
    later = {"date": "e", "load_average": {"before": [0.4], "after": [0.9]}, "wall_s": 80, "servers": {"kafka": "x"},
             "versions": {"torch": "2.15", "kafka": "Tansu 0.6.0 (embedded)", "database": "SQLite 3.40.1"},
             "steps": {"model_train": {"exit_code": 0}}}
    document = merged(earlier, later)
    assert document["versions"] == {"torch": "2.15", "kafka": "Apache Kafka 4.3.1", "database": "PostgreSQL 15.18"}
    assert document["servers"] == {"kafka": "real"}
    assert list(document["steps"]) == ["model_train", "agents", "gateway"]


def test_the_fairness_benchmark_measures_each_policy(tmp_path, monkeypatch):
    import argparse
    import asyncio

    from bench import fairness

    monkeypatch.delenv("LFZ_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(flood=30, workers=2, job_s=0.05, every_s=0.02, probes=3)
    figures = asyncio.run(fairness.run(args))
    assert set(figures["wait_ms"]) == {"fair, no flood", "fair, flood", "first come first served, flood"}
    assert all(stats["n"] == 3 for stats in figures["wait_ms"].values())
    # Under the flood, first-come-first-served makes tenant B wait for A's backlog; the fair queue does not.
    assert figures["wait_ms"]["fair, flood"]["p50"] < figures["wait_ms"]["first come first served, flood"]["p50"]
