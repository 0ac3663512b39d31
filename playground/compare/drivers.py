"""The sweeps this process is driving (engine.py), apart so that the page's contexts can ask
whether one runs without importing the engine that renders through them."""

from __future__ import annotations

import asyncio
import time

from django.conf import settings

# The process's sweep drivers, by group id: not garbage-collected mid-run, and one per group.
running: dict[int, asyncio.Task] = {}
# Sweeps told to stop: their drivers start no further cell (the running ones are stopped
# through runs.stop, like any run).
stopping: set[int] = set()
# When Stop was last pressed on each group in this process (time.monotonic()): a compare send
# still writing its columns stops the ones it starts after it (engine.send_to_columns).
stopped_at: dict[int, float] = {}


def concurrency() -> int:
    limit = int(settings.PLAYGROUND_RUN["MAX_RUNS_PER_USER"])
    return max(1, min(settings.PLAYGROUND_COMPARE["SWEEP_CONCURRENCY"], limit))


def is_running(group_id: int) -> bool:
    task = running.get(group_id)
    return task is not None and not task.done()


def cancel_sweep(group_id: int) -> None:
    """No further cell of this sweep starts in this process; the rest stay pending. A compare
    send in flight stops the columns it has yet to start."""
    stopped_at[group_id] = time.monotonic()
    if is_running(group_id):
        stopping.add(group_id)
