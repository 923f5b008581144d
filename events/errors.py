"""Why a command is refused: a reason a person can act on, and the field at fault.

`Rejected` is raised wherever a command is checked (decoding, the agents' intake, a job's own checks in its child
process) and ends as a failed-job fact or a dead letter naming both; the gateway answers it as a 422. `DecodeError` is
the rejection of bytes that do not decode into a command or a fact."""

from __future__ import annotations


class Rejected(Exception):
    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


class DecodeError(Rejected):
    """`job_id` and `kind` are what the message said of itself, when it said it usably: the failed-job fact goes to
    that job."""

    def __init__(self, reason: str, field: str | None = None, job_id: str | None = None, kind: str | None = None):
        super().__init__(reason, field)
        self.job_id = job_id
        self.kind = kind
