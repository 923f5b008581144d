"""Topic names. One prefix (`lfz.` by default) in front of every topic, so several deployments can share a cluster."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str = "lfz."

    @property
    def train_requested(self) -> str:
        return f"{self.prefix}train.requested"

    @property
    def evaluate_requested(self) -> str:
        return f"{self.prefix}evaluate.requested"

    @property
    def generate_requested(self) -> str:
        return f"{self.prefix}generate.requested"

    @property
    def export_requested(self) -> str:
        return f"{self.prefix}export.requested"

    @property
    def import_requested(self) -> str:
        return f"{self.prefix}import.requested"

    @property
    def sweep_requested(self) -> str:
        return f"{self.prefix}sweep.requested"

    @property
    def tokenize_requested(self) -> str:
        return f"{self.prefix}tokenize.requested"

    @property
    def job_control(self) -> str:
        return f"{self.prefix}job.control"

    @property
    def job_events(self) -> str:
        """Every fact about every job, keyed by job id so one job's events stay in order."""
        return f"{self.prefix}job.events"

    @property
    def system_events(self) -> str:
        """What the supervisor of `lfz up` saw and did to the system's processes (events.system), for operators."""
        return f"{self.prefix}system.events"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}dead.letter"

    @property
    def request_topics(self) -> tuple[str, ...]:
        return (self.train_requested, self.evaluate_requested, self.generate_requested, self.export_requested,
                self.import_requested, self.sweep_requested, self.tokenize_requested, self.job_control)

    def all(self) -> tuple[str, ...]:
        return (*self.request_topics, self.job_events, self.system_events, self.dead_letter)
