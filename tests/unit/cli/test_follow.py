"""Following a job: throttled plain progress, the outcome, and Ctrl-C that stops following but not the job."""

from __future__ import annotations

import io
import json

import pytest

from cli.errors import JobFailed, Stopped
from cli.follow import Follower, check_outcome, describe, follow_job
from cli.main import main
from cli.render import Output
from tests.unit.cli.conftest import sse


def training_log(steps: int = 30, every: int = 1) -> list[dict]:
    log = [{"type": "JobAccepted", "kind": "train", "model_name": "m"},
           {"type": "TrainStarted", "device": "cpu", "num_parameters": 25696, "max_iters": steps, "attempt": 1}]
    for step in range(every, steps + 1, every):
        log.append({"type": "TrainProgress", "step": step, "max_iters": steps, "loss": 3.0 - step / 100,
                    "tokens_per_s": 1000.0, "eta_s": float(steps - step)})
    log.append({"type": "ValidationCompleted", "step": steps, "val_loss": 2.6, "best_val_loss": 2.6})
    log.append({"type": "TrainCompleted", "final_step": steps, "val_loss": 2.6, "perplexity": 13.46, "wall_s": 30})
    return [{**event, "seq": i + 1} for i, event in enumerate(log)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # one second per progress event
        return self.now


def test_plain_progress_is_a_line_every_few_seconds_and_at_the_end():
    stdout = io.StringIO()
    follower = Follower(Output(rich=False, stdout=stdout, stderr=io.StringIO()), "j1", clock=Clock())
    with follower:
        for event in training_log():
            follower.handle(event)
    lines = stdout.getvalue().splitlines()
    progress = [line for line in lines if line.startswith("step ") and "/30" in line]
    assert [line.split()[1] for line in progress] == ["1/30", "6/30", "11/30", "16/30", "21/30", "26/30", "30/30"]
    assert lines[0] == "accepted: train job for model m"
    assert "25,696 parameters, 30 steps" in lines[1]
    assert "step 30: validation loss 2.6000 (best 2.6000)" in lines
    assert lines[-1] == "training completed at step 30 in 30s: validation loss 2.6, perplexity 13.46"
    assert follower.final is not None and follower.final["type"] == "TrainCompleted"
    assert len(follower.losses) == 30 and follower.val_losses == [(30, 2.6)]


def test_a_rich_follower_ends_with_the_outcome():
    stdout = io.StringIO()
    follower = Follower(Output(rich=True, stdout=stdout, stderr=io.StringIO()), "j1")
    with follower:
        for event in training_log(every=10):
            follower.handle(event)
    text = stdout.getvalue()
    assert "training" in text and "training completed at step 30" in text


def test_outcomes():
    assert check_outcome({"type": "TrainCompleted"}, "j")["type"] == "TrainCompleted"
    with pytest.raises(JobFailed, match="job j failed: dataset: the dataset is empty"):
        check_outcome({"type": "TrainFailed", "reason": "dataset: the dataset is empty"}, "j")
    with pytest.raises(JobFailed, match="job j was cancelled: cancelled by request"):
        check_outcome({"type": "JobCancelled", "reason": "cancelled by request"}, "j")
    with pytest.raises(JobFailed, match="ended before the job did"):
        check_outcome(None, "j")


def test_every_event_type_has_a_description():
    from events import FACTS

    for name in FACTS:
        assert describe({"type": name, "seq": 1, "step": 1, "max_iters": 2, "loss": 1.0, "val_loss": 1.0,
                         "best_val_loss": 1.0, "final_step": 1, "reason": "r"})


class Interrupting:
    """A client whose event stream is interrupted by Ctrl-C after the first event."""

    def follow_job(self, job_id: str, after: int = 0):
        yield training_log()[0]
        raise KeyboardInterrupt


def test_ctrl_c_stops_following_and_says_the_job_goes_on():
    with pytest.raises(Stopped) as stopped:
        follow_job(Interrupting(), Output(rich=False, stdout=io.StringIO(), stderr=io.StringIO()), "j42")
    assert stopped.value.exit_code == 130
    assert stopped.value.message == "stopped following; the job goes on - `lfz jobs cancel j42` stops it"


def test_events_follow_exits_non_zero_for_a_failed_job(capsys, fake):
    log = training_log(steps=2)[:3] + [{"type": "TrainFailed", "seq": 4, "reason": "training diverged"}]
    fake.on("GET", "/api/v1/jobs/j7/events", sse(log))
    assert main(["events", "j7", "--follow", "--url", "http://gw.test"]) == 1
    captured = capsys.readouterr()
    assert "failed: training diverged" in captured.out
    assert captured.err == "error: job j7 failed: training diverged\n"


def test_events_json_lines_while_following(capsys, fake):
    fake.on("GET", "/api/v1/jobs/j8/events", sse(training_log(steps=3)))
    assert main(["events", "j8", "--follow", "--json", "--url", "http://gw.test"]) == 0
    types = [json.loads(line)["type"] for line in capsys.readouterr().out.splitlines()]
    assert types[0] == "JobAccepted" and types[-1] == "TrainCompleted" and len(types) == 7


def test_a_run_of_several_processes_says_its_ranks():
    line = describe({"type": "TrainStarted", "device": "cpu", "num_parameters": 1000, "max_iters": 50,
                     "world_size": 2, "ranks": ["box/cpu", "box/cpu"]})
    assert line.startswith("training started on 2 processes (box/cpu, box/cpu): 1,000 parameters")
    assert describe({"type": "TrainStarted", "device": "cuda", "num_parameters": 1, "max_iters": 5}).startswith(
        "training started on cuda:")
