"""`lfz demo` end to end on the embedded stack, small enough for a test: it trains, evaluates, samples, and
leaves a report and a plot behind."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.cli.conftest import embedded_env


def test_demo_runs_the_whole_pipeline(tmp_path):
    out_dir = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--preset", "tiny", "--max-iters", "50", "--samples", "2",
         "--out", str(out_dir)],
        env=embedded_env(tmp_path / "data"), capture_output=True, text=True, timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "corpus: " in out and "pydoc_data" in out
    assert "training completed at step 50" in out
    assert "sample 1 of 2" in out and "sample 2 of 2" in out
    assert "demo summary" in out and "bits per character" in out
    assert "the stack is stopped" in done.stderr

    report = json.loads((out_dir / "report.json").read_text())
    assert report["training"]["final_step"] == 50
    assert report["model"]["num_parameters"] > 0 and report["model"]["hyperparameters"]["preset"] == "tiny"
    assert report["evaluation"]["held_out"]["perplexity"] > 1
    assert len(report["samples"]) == 2 and all(s["tokens"] > 0 for s in report["samples"])
    assert report["curves"]["training"][-1][0] == 50 and report["curves"]["validation"]
    assert (out_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
