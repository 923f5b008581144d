"""The demo's outputs: a JSON report with the curves in it, and a loss plot that is a real PNG."""

from __future__ import annotations

import json
import struct

from cli.report import curves, plot_losses, write_outputs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a valid PNG has first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def events() -> list[dict]:
    log = [{"type": "TrainStarted", "max_iters": 40}]
    for step in range(10, 41, 10):
        log.append({"type": "TrainProgress", "step": step, "loss": 4.0 / step ** 0.5})
        if step % 20 == 0:
            log.append({"type": "ValidationCompleted", "step": step, "val_loss": 4.2 / step ** 0.5})
    log.append({"type": "TrainProgress", "step": 20, "loss": 0.5})  # a resumed run reports step 20 again
    return log


def test_curves_come_from_the_log_in_step_order_with_the_last_value_per_step():
    train, validation = curves(events())
    assert [step for step, _ in train] == [10, 20, 30, 40]
    assert dict(train)[20] == 0.5
    assert [step for step, _ in validation] == [20, 40]


def test_report_and_plot_are_written(tmp_path):
    train, validation = curves(events())
    report_path, plot_path = write_outputs(tmp_path / "out", {"model": {"name": "m"}, "wall_s": 1.5}, train,
                                           validation, title="m (tiny)")
    assert report_path == tmp_path / "out" / "report.json" and plot_path == tmp_path / "out" / "loss.png"
    report = json.loads(report_path.read_text())
    assert report["model"] == {"name": "m"} and report["wall_s"] == 1.5
    assert report["curves"]["training"][0] == [10, train[0][1]]
    assert len(report["curves"]["validation"]) == 2
    width, height = png_size(plot_path.read_bytes())
    assert (width, height) == (960, 540)  # 8 x 4.5 inches at 120 dpi
    assert plot_path.read_bytes().endswith(b"IEND\xaeB`\x82")
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_an_empty_curve_still_makes_a_valid_plot(tmp_path):
    path = plot_losses(tmp_path / "empty.png", [], [])
    assert png_size(path.read_bytes()) == (960, 540)


def test_the_plot_does_not_touch_pyplot_state(tmp_path):
    import sys

    plot_losses(tmp_path / "p.png", [(1, 2.0)], [(1, 2.1)])
    assert "matplotlib.pyplot" not in sys.modules or sys.modules["matplotlib.pyplot"].get_fignums() == []
