"""Percentiles, the fairness index and the process monitor that the benchmarks report with."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys

import pytest

from bench.measure import ProcessMonitor, jain_index, local_broker_pid, percentile, percentiles


def test_percentiles_interpolate_between_ranks_like_the_standard_library():
    sample = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(sample, 50) == pytest.approx(50.5)
    assert percentile(sample, 99) == pytest.approx(99.01)
    assert percentile(sample, 0) == 1.0 and percentile(sample, 100) == 100.0
    # statistics' "inclusive" method is the same rule (numpy's default, "linear")
    cuts = statistics.quantiles(sample, n=100, method="inclusive")
    assert percentile(sample, 95) == pytest.approx(cuts[94])


def test_percentiles_do_not_depend_on_the_order_of_the_sample():
    assert percentile([30.0, 10.0, 20.0], 50) == 20.0
    assert percentile([5.0], 99) == 5.0


def test_percentiles_summary_has_the_usual_quantiles_mean_and_count():
    summary = percentiles([1.0, 2.0, 3.0, 4.0])
    assert summary == {"p50": 2.5, "p95": pytest.approx(3.85), "p99": pytest.approx(3.97), "mean": 2.5, "n": 4}
    assert percentiles([]) == {"n": 0}


@pytest.mark.parametrize(("values", "q", "message"), [
    ([1.0], 101, "between 0 and 100"),
    ([1.0], -1, "between 0 and 100"),
    ([], 50, "empty sample"),
    ([1.0, math.nan], 50, "NaN"),
])
def test_percentile_refuses_what_it_cannot_answer(values, q, message):
    with pytest.raises(ValueError, match=message):
        percentile(values, q)


def test_jain_index_is_one_for_an_even_split_and_one_over_n_for_a_monopoly():
    assert jain_index([2, 2]) == 1.0
    assert jain_index([4, 0]) == 0.5
    assert jain_index([3, 1]) == pytest.approx(0.8)
    assert jain_index([0, 0]) == 1.0
    with pytest.raises(ValueError, match="no participants"):
        jain_index([])
    with pytest.raises(ValueError, match="negative"):
        jain_index([1, -1])


def test_a_remote_broker_has_no_local_process():
    assert local_broker_pid("kafka.example.com:9092") is None
    assert local_broker_pid("127.0.0.1:notaport") is None


def test_the_monitor_reports_a_process_and_the_memory_of_its_children():
    # A child that writes 64 MiB (so the pages are resident), says so, and holds them until its stdin closes.
    child = subprocess.Popen([sys.executable, "-c", "import sys; b = b'x' * (64 * 2**20); print('ready', flush=True); "
                              "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        monitor = ProcessMonitor({"me": os.getpid(), "gone": 2**22 + 12345}, interval_s=60).start()
        assert child.stdout.readline() == b"ready\n"
        monitor.sample()
    finally:
        child.communicate(b"")
    monitor.stop()  # one more sample: the child is gone, its peak stays
    report = monitor.report()
    assert "gone" not in report  # above Linux's pid limit (2**22): left out, not reported as zero
    me = report["me"]
    assert me["pid"] == os.getpid()
    assert me["peak_rss_mb"] >= me["rss_mb"] > 0
    assert me["children_peak_rss_mb"] >= 64
    assert me["cpu_s"] >= 0
