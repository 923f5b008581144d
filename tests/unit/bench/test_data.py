"""The data benchmark's pure parts: the corpus it builds from CPython's sources, its step times, its targets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import bench.runner as runner
from bench.corpus import alphabet_line, corpus_texts, human_size, parse_size, write_corpus
from bench.data import compare, judge, table
from bench.datajobs import step_times
from bench.targets import FAIL, MISSING, NO_TARGET, PASS


@pytest.fixture(scope="module")
def texts() -> list[bytes]:
    return corpus_texts()


def test_the_corpus_has_exactly_the_size_asked_for_from_the_standard_librarys_text(tmp_path, texts):
    head = b"# run 1234\n" + alphabet_line(texts)
    for size in (1, 1000, 2**20 + 3, 3 * 2**20):
        path = tmp_path / f"{size}.txt"
        write_corpus(path, size, texts, head)
        data = path.read_bytes()
        assert len(data) == size
        text = data.decode("utf-8")  # whole characters only, wherever the size cut
        assert "\0" not in text
        if size >= len(head) + 100:
            assert data.startswith(head + texts[0][:100])
    assert any(b"pydoc_data" in t or b"topics = " in t for t in texts)  # pydoc_data/topics.py is one of them


def test_the_texts_repeat_to_any_size_and_the_last_character_is_never_cut(tmp_path):
    path = tmp_path / "corpus.txt"
    write_corpus(path, 25, [b"\xc3\xa9t\xc3\xa9\n"])  # "été\n", six bytes
    assert path.read_bytes() == "été\n".encode() * 4 + b"\n"  # 24 bytes of text, then a newline, not half an é
    write_corpus(path, 6, [b"\xc3\xa9t\xc3\xa9\n"], head=b"ab")
    assert path.read_bytes() == b"ab" + "ét".encode() + b"\n"  # the second é would need a 6th and a 7th byte


def test_corpora_of_any_two_sizes_have_the_same_characters(tmp_path, texts):
    """Both corpora train the same model: the character vocabulary is the same whatever prefix a size takes."""
    head = alphabet_line(texts)
    chars = []
    for size in (2**20, 4 * 2**20):
        write_corpus(tmp_path / "c.txt", size, texts, head)
        chars.append(set((tmp_path / "c.txt").read_text(encoding="utf-8")))
    assert chars[0] == chars[1] and len(chars[0]) > 200


def test_sources_that_an_upload_would_refuse_are_left_out(tmp_path):
    (tmp_path / "a.py").write_bytes(b"x = 1\n")
    (tmp_path / "latin1.py").write_bytes(b"s = '\xe9'\n")
    (tmp_path / "nul.py").write_bytes(b"s = '\0'\n")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "other.py").write_bytes(b"y = 2\n")
    (tmp_path / "pydoc_data").mkdir()
    (tmp_path / "pydoc_data" / "topics.py").write_bytes(b"topics = {}\n")
    assert corpus_texts(tmp_path) == [b"x = 1\n", b"topics = {}\n"]


@pytest.mark.parametrize(("text", "size"), [("1GiB", 2**30), ("256MiB", 256 * 2**20), ("500MB", 500 * 10**6),
                                            ("1048576", 2**20), ("0.5 KiB", 512), ("64kb", 64_000)])
def test_sizes_read_with_their_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1 TB", "MiB", "-1MiB", "0"])
def test_a_size_without_a_known_unit_is_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_sizes_are_shown_in_binary_units():
    assert [human_size(n) for n in (2**30, 256 * 2**20, 1536, 100)] == ["1 GiB", "256 MiB", "1.5 KiB", "100 B"]


def test_step_times_leave_out_the_first_report_which_carries_the_start():
    # step 1 took 2 s (start-up); then 10 steps every 0.4 s, one interval slowed by a neighbour
    reports = [(1, 2.0), (10, 2.4), (20, 2.8), (30, 3.2), (40, 4.6), (50, 5.0)]
    times = step_times(reports)
    assert times["step_ms"] == pytest.approx(1000 * (5.0 - 2.4) / 40)
    assert times["step_ms_median"] == pytest.approx(40.0)
    assert step_times([(1, 2.0)]) == {"step_ms": None, "step_ms_median": None}


def _size(label: str, mb_per_s: float, gateway_mb: float, step_ms: float, peak_mb: float) -> dict[str, Any]:
    return {"label": label,
            "upload": {"mb_per_s": mb_per_s, "gateway_peak_rss_mb": gateway_mb, "worker_peak_rss_mb": 600.0},
            "tokenize": {"char": {"mb_per_s": 60.0, "tokens_per_s": 6e7, "job_peak_rss_mb": 450.0},
                         "bpe": {"mb_per_s": 4.0, "tokens_per_s": 1e6, "vocab_size": 8192, "job_peak_rss_mb": 1000.0}},
            "train": {"runs": [{"step_ms_median": step_ms}, {"step_ms_median": step_ms * 1.05}], "step_ms": step_ms,
                      "tokens_per_s": 20000.0, "peak_rss_mb": peak_mb, "peak_anon_rss_mb": 440.0}}


REPORT: dict[str, Any] = {
    "small": _size("1 MiB", 6.0, 115.0, 30.0, 560.0), "big": _size("1 GiB", 80.0, 180.0, 31.0, 700.0),
    "model_train": {"step_ms": 30.6}, "steps": 200, "train_runs": 2, "bpe_sample_bytes": 64 * 2**20,
    "load_average": {"before": [0.1, 0.2, 0.3], "after": [1.9, 1.0, 0.5]},
}


def test_the_big_corpus_is_held_to_the_baselines_training_and_to_bench_model_train():
    report = compare(copy.deepcopy(REPORT))
    big, small = report["big"]["train"], report["small"]["train"]
    assert big["rss_over_baseline_mb"] == 140.0 and big["anon_rss_over_baseline_mb"] == 0.0
    assert big["step_time_ratio"] == pytest.approx(31 / 30, abs=1e-3) and small["step_time_ratio"] == 1.0
    assert small["vs_model_train"] == pytest.approx(30.6 / 30, abs=1e-3)
    assert big["run_to_run_spread"] == pytest.approx(0.05)


def test_each_target_is_judged_on_the_sizes_it_holds_for():
    rows = {row["figure"]: row for row in judge(compare(copy.deepcopy(REPORT)))}
    assert rows["upload: MB/s"]["result"] == PASS  # 80 MB/s for 1 GiB; the 1 MiB run's 6 MB/s is not held to it
    assert rows["upload: MB/s"]["small"] == "6.0"
    assert rows["upload: gateway peak RSS MiB"]["result"] == PASS  # both sizes under 200 MiB
    assert rows["tokenize char: MB/s"]["result"] == PASS
    assert rows["tokenize BPE: MB/s"]["result"] == FAIL  # 4 < 5
    assert rows["train: peak RSS over baseline's MiB"]["result"] == FAIL  # 140 MiB more
    assert rows["train: step time / baseline's"]["result"] == PASS
    assert rows["train: speed / bench model train's"]["result"] == PASS
    assert rows["tokenize BPE: vocabulary"]["result"] == NO_TARGET

    over = copy.deepcopy(REPORT)
    over["small"]["upload"]["gateway_peak_rss_mb"] = 250.0  # "whatever the size": the small run counts too
    del over["model_train"]
    rows = {row["figure"]: row for row in judge(compare(over))}
    assert rows["upload: gateway peak RSS MiB"]["result"] == FAIL
    assert rows["train: speed / bench model train's"]["result"] == MISSING


def test_the_table_sets_the_two_sizes_side_by_side():
    text = table({**compare(copy.deepcopy(REPORT)), "servers": {"object_store": "http://127.0.0.1:9000"}})
    header = text.splitlines()[0]
    assert "1 MiB" in header and "1 GiB" in header and "target" in header
    assert "sample of 64 MiB" in text and "object store http://127.0.0.1:9000" in text
    assert "5 figures met their targets, 2 did not" in text


def test_make_bench_runs_the_data_benchmark_on_a_small_corpus():
    args = runner.parse([])
    assert "data" in runner.STEPS and "data" in runner.SERVER_STEPS
    assert runner.commands(args, "x.txt")["data"] == ["python", "-m", "bench", "data", "--json", "--size", "256MiB"]
    quick = runner.commands(runner.parse(["--quick"]), "x.txt")["data"]
    assert quick[quick.index("--size") + 1] == "8MiB"
