"""How much Python memory waiting tasks hold, for tests of per-socket costs."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable
from typing import Any


async def bytes_held(start: Callable[[int], asyncio.Task[Any]], n: int = 200) -> float:
    """Bytes of Python allocations per task while `n` tasks, each made by start(i), wait:
    everything they hold, the tasks themselves included (tracemalloc). They are cancelled
    after."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        tasks = [start(i) for i in range(n)]
        await asyncio.sleep(0.01)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / n
