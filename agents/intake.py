"""Where requests enter the agents: raw bytes become typed commands, or dead letters that say what was wrong.

A bad message never stops an agent. It is kept on the dead-letter topic with its error and coordinates, and when
it carried a usable job id, that job also gets a failed event so that whoever waits for it learns why.
"""

from __future__ import annotations

import logging

from faust.types import EventT

from agents.publisher import JobLog
from agents.runtime import Runtime
from events import FAILED_TYPE_FOR_KIND, Command, DecodeError, dead_letter, decode_command, id_from_position

log = logging.getLogger(__name__)


async def decode(runtime: Runtime, event: EventT, expected: tuple[type[Command], ...]) -> Command | None:
    message = event.message
    raw = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
    default_id = id_from_position(message.topic, message.partition, message.offset)
    try:
        return decode_command(raw, expected, default_id=default_id)
    except DecodeError as error:
        log.warning("dead letter from %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)
        await runtime.publisher.dead_letter(
            dead_letter(raw, error, producer=runtime.producer_name, topic=message.topic,
                        partition=message.partition, offset=message.offset, key=message.key)
        )
        failed = FAILED_TYPE_FOR_KIND.get(error.kind or "")
        if error.job_id and failed is not None:
            job = JobLog(runtime.publisher, job_id=error.job_id, kind=error.kind or "train", owner=None,
                         producer=runtime.producer_name)
            await job.emit(failed, reason=f"the request was rejected: {error.reason}", field=error.field)
        return None
