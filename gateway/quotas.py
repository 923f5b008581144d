"""What one API key may hold at once, and the 429 that says which limit it reached.

Per gateway process: open event streams and generations in flight (streamed or not, and evaluations the caller
waits for). Across the system, read from the projection: jobs queued or running, and datasets (their number and
their bytes). Every limit is a setting; the 429 names it, and `Retry-After` says when to try again. The job queue
adds fairness on top (see agents/jobs/queue.py): a key with a backlog never holds back another key's jobs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from gateway.errors import ApiError
from infra.db import queries
from infra.settings import Settings


def quota_exceeded(message: str, setting: str, retry_after_s: int, code: str = "quota_exceeded") -> ApiError:
    return ApiError(429, code, f"{message} ({setting})", headers={"Retry-After": str(retry_after_s)})


class PerKeyLimit:
    """A count per API key (per process) with a ceiling: `acquire` past it is a 429 naming the setting."""

    def __init__(self, limit: int, what: str, setting: str, code: str, gauge: Any = None, retry_after_s: int = 1):
        self.limit = limit
        self.code = code
        self.what = what
        self.setting = setting
        self.gauge = gauge
        self.retry_after_s = retry_after_s
        self.open: Counter[str | None] = Counter()

    def acquire(self, owner: str | None) -> Callable[[], None]:
        """Count one more for `owner`; returns its release, safe to call twice."""
        if self.open[owner] >= self.limit:
            raise quota_exceeded(f"this key has {self.open[owner]} {self.what}; the limit is {self.limit}",
                                 self.setting, self.retry_after_s, self.code)
        self.open[owner] += 1
        if self.gauge is not None:
            self.gauge.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open[owner] -= 1
                if self.open[owner] <= 0:
                    del self.open[owner]
                if self.gauge is not None:
                    self.gauge.dec()

        return release


async def check_active_jobs(session: Any, settings: Settings, owner: str | None, adding: int = 1) -> None:
    """429 when `adding` more jobs (a sweep's trials count each) would pass the key's limit of training and
    evaluation jobs queued or running."""
    count = await queries.active_jobs(session, owner)
    if count + adding > settings.max_active_jobs_per_key:
        more = f" and this request adds {adding}" if adding > 1 else ""
        raise quota_exceeded(f"this key has {count} jobs queued or running{more}; the limit is "
                             f"{settings.max_active_jobs_per_key}: wait for one to end, or cancel one",
                             "LFZ_MAX_ACTIVE_JOBS_PER_KEY", 30)


async def check_datasets(session: Any, settings: Settings, owner: str | None, new_bytes: int) -> None:
    """429 when one more dataset of `new_bytes` would pass the key's limit on datasets or on their bytes."""
    count, stored = await queries.datasets_held(session, owner)
    if count >= settings.max_datasets_per_key:
        raise quota_exceeded(f"this key has {count} datasets; the limit is {settings.max_datasets_per_key}: "
                             f"delete one first (lfz datasets delete)", "LFZ_MAX_DATASETS_PER_KEY", 60)
    if stored + new_bytes > settings.max_dataset_bytes_per_key:
        raise quota_exceeded(f"this key's datasets hold {stored:,} bytes and this one has {new_bytes:,}; the limit "
                             f"is {settings.max_dataset_bytes_per_key:,}: delete one first",
                             "LFZ_MAX_DATASET_BYTES_PER_KEY", 60)
