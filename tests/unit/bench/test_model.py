"""The benchmark CLI runs end to end on a tiny preset (figures are not checked: benchmarks are not tests)."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main as bench_main
from bench.model import main


def test_train_prints_one_json_object(tmp_path, corpus, capsys):
    data = tmp_path / "corpus.txt"
    data.write_text(corpus, encoding="utf-8")
    assert main(["train", "--data", str(data), "--preset", "tiny", "--tokenizer", "char", "--json",
                 "--max-iters", "10", "--set", "LEARNING_RATE=0.002", "--set", "positions=learned",
                 "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["iters"] == 10
    assert {"val_loss", "wall_s", "tokens_per_s", "ms_per_iter"} <= set(report)
    assert report["hyperparameters"]["learning_rate"] == 0.002


def test_generate_prints_one_json_object(capsys):
    assert bench_main(["model", "generate", "--preset", "tiny", "--tokens", "20", "--json", "--repeats", "1",
                 "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens"] == 20
    assert report["weights"].startswith("random")
    assert {"tokens_per_s", "ms_per_token", "ttft_ms"} <= set(report)


def test_steps_times_each_variant(capsys):
    assert main(["steps", "--preset", "tiny", "--variant", "base:", "--variant", "sdpa:attention=sdpa",
                 "--variant", "readable:fast=off", "--variant", "wide:mlp_ratio=2", "--steps", "3", "--warmup", "1",
                 "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["variants"]) == {"base", "sdpa", "readable", "wide"}
    for timing in report["variants"].values():
        assert 0 < timing["ms_min"] <= timing["ms_p50"]
    with pytest.raises(SystemExit):
        main(["steps", "--preset", "tiny", "--variant", "bad:d_model=-1"])


def test_bad_override_is_a_usage_error(tmp_path, corpus):
    data = tmp_path / "corpus.txt"
    data.write_text(corpus, encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--preset", "tiny", "--set", "NUM_HEADS=3"])


def test_the_entry_point_names_the_benchmarks_it_knows(capsys):
    assert bench_main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nope'" in err and "model, pipeline, gateway, fairness, all" in err
