"""The training job as its child process runs it, on a local object store: starts, resumes and ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.jobs.child import RUN, JobContext
from agents.train.job import TrainSpec, run_training
from events import CheckpointSaved, JobEvent, TrainCompleted, TrainStarted
from infra.objectstore import artifacts
from infra.objectstore.local import LocalObjectStore
from infra.settings import Settings

TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 40


class Facts:
    """Stands in for the child's JobContext: keeps the facts instead of sending them to the parent."""

    mode = RUN
    orphaned = False
    stored = JobContext.stored  # the real retrying of object store calls

    def __init__(self, settings: Settings, store: LocalObjectStore, attempt: int) -> None:
        self.settings, self.store, self.attempt, self.worker = settings, store, attempt, "w"
        self.emitted: list[tuple[type[JobEvent], dict[str, Any]]] = []

    def emit(self, fact: type[JobEvent], **fields: Any) -> None:
        self.emitted.append((fact, fields))

    def should_stop(self) -> bool:
        return False

    def suspended(self) -> None:
        raise AssertionError("nothing suspends these runs")

    def last(self) -> tuple[type[JobEvent], dict[str, Any]]:
        return self.emitted[-1]


SPEC = TrainSpec(job_id="job-1", model_id="m1", model_name="m1", owner=None, dataset_key="datasets/d1",
                 tokenizer="char", tokenizer_options={}, preset="tiny", base_checkpoint=None, base_step=0,
                 hyperparameters={"preset": "tiny", "max_iters": 20})


def test_a_run_taken_over_after_its_last_step_completes_with_the_checkpoint_it_left(tmp_path: Path):
    """Regression: when a job's run ended training but could not end the job (the database was down, or its worker
    died), the run that took it over resumed at the last step, trained nothing, wrote no checkpoint, and failed the
    job with "training ended without writing a checkpoint"."""
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("datasets/d1", TEXT.encode())
    settings = Settings(data_dir=tmp_path)
    first, second = Facts(settings, store, 1), Facts(settings, store, 2)
    run_training(SPEC, first)
    assert first.last()[0] is TrainCompleted

    run_training(SPEC, second)
    kind, fields = second.last()
    assert kind is TrainCompleted, second.emitted
    started = next(f for k, f in second.emitted if k is TrainStarted)
    assert started["resumed_from_step"] == 20 and fields["final_step"] == 20
    assert fields["checkpoint_key"] == artifacts.checkpoint_key("m1", 20) == first.last()[1]["checkpoint_key"]
    assert fields["train_loss"] == first.last()[1]["train_loss"] and fields["val_loss"] == first.last()[1]["val_loss"]
    assert not any(k is CheckpointSaved for k, _ in second.emitted), "nothing new was trained or written"
