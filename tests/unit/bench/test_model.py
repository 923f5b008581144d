"""The benchmark CLI runs end to end on a tiny preset (figures are not checked: benchmarks are not tests)."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert "unknown benchmark 'nope'" in err
    assert "model, pipeline, gateway, fairness, export, distributed, sweep, data, all" in err


def test_the_export_benchmark_times_every_format_and_dtype(tmp_path, capsys):
    import sysconfig

    from bench.export import main as export_main

    text = tmp_path / "text.txt"
    text.write_text((Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text())
    assert export_main(["--data", str(text), "--presets", "tiny", "--vocab-size", "300", "--runs", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [(r["format"], r["dtype"]) for r in results] == [("hf", "float32"), ("hf", "float16"),
                                                            ("gguf", "float32"), ("gguf", "float16")]
    assert all(len(r["seconds"]) == 2 and r["bytes"] > 0 for r in results)
    assert results[1]["bytes"] < results[0]["bytes"] and results[3]["bytes"] < results[2]["bytes"]
