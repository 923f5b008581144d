"""Facts about the system's own processes, for operators: what the supervisor of `lfz up` saw and did.

They travel on the system-events topic (`lfz.system.events`), keyed by the process's name, so one process's history
stays in order. They name no job and no owner: tenants read their own facts over SSE, never this topic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from events.fields import Message, new_id, utc_now


class ProcessEvent(Message):
    event_id: str = Field(default_factory=new_id)
    time: AwareDatetime = Field(default_factory=utc_now)
    host: str = Field(description="The machine the supervisor runs on.")
    supervisor_pid: int = Field(description="The process id of `lfz up` itself.")
    process: str = Field(description="The supervised process's name: `worker`, `worker-2`, `gateway`.")


class ProcessExited(ProcessEvent):
    """A supervised process ended on its own (a crash, kill -9, the OOM killer): not a stop the supervisor asked for."""

    type: Literal["ProcessExited"] = "ProcessExited"
    pid: int
    exit_code: int = Field(description="Negative: killed by that signal number.")
    exits_in_window: int = Field(description="Its exits within the crash-loop window, this one included.")
    restart_in_s: float | None = Field(description="When it starts again; null when this exit is a crash loop.")


class ProcessRestarted(ProcessEvent):
    type: Literal["ProcessRestarted"] = "ProcessRestarted"
    pid: int
    previous_pid: int


class StackHalted(ProcessEvent):
    """A crash loop: the supervisor stopped every process rather than restart this one again."""

    type: Literal["StackHalted"] = "StackHalted"
    reason: str


SYSTEM_EVENTS: dict[str, type[ProcessEvent]] = {
    cls.model_fields["type"].default: cls for cls in (ProcessExited, ProcessRestarted, StackHalted)
}
