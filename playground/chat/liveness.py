"""Which runs are still alive, across processes: a key per run with a short TTL in Redis.

Without it the only sign of a dead run is its checkpoint going stale, which takes
PLAYGROUND_STALE_AFTER (60 s) because a live run facing a silent upstream checkpoints only
every HEARTBEAT_INTERVAL. With Redis (the shared cache), every process renews a key for each
run it holds every ALIVE_TTL / 3 seconds; a streaming reply whose key has expired belongs to a
process that is gone (SIGKILL, out of memory, a lost machine), and the sweep can say so after
ALIVE_TTL instead of a minute.

In the embedded default there is one process and no shared cache: only the checkpoint counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

log = logging.getLogger(__name__)

# Set once by the first process that beats, never expiring: a Redis that restarted without
# its data has lost every run's key too, and until the processes have beaten again (within
# ALIVE_TTL of this key's time) a missing key proves nothing.
SINCE = "run-alive-since"

_tracked: set[int] = set()
_wake: asyncio.Event | None = None
_beat: asyncio.Task | None = None


def enabled() -> bool:
    return bool(settings.PLAYGROUND_SHARED_CACHE)


def ttl() -> float:
    return settings.PLAYGROUND_RUN["ALIVE_TTL"]


def key(message_id: int) -> str:
    return f"run-alive:{message_id}"


def track(message_id: int) -> None:
    """This process runs `message_id` now: keep its key alive until untrack()."""
    global _wake, _beat
    if not enabled():
        return
    _tracked.add(message_id)
    if _beat is None or _beat.done():
        _wake = asyncio.Event()
        _beat = asyncio.create_task(_beat_forever(_wake), name="run-liveness")
    if _wake is not None:
        _wake.set()  # write the new key now, not at the next beat


def untrack(message_id: int) -> None:
    _tracked.discard(message_id)


async def _beat_forever(wake: asyncio.Event) -> None:
    while True:
        wake.clear()
        if _tracked:
            keys = {key(i): 1 for i in _tracked}
            try:
                await _renew(keys)
            except Exception as exc:
                # Redis is away: other processes cannot read the keys either, and their
                # sweep then falls back to the checkpoint alone.
                log.warning("run liveness keys not renewed: %r", exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ttl() / 3):
                await wake.wait()


@sync_to_async(thread_sensitive=False)  # not on the one thread the database calls share
def _renew(keys: dict[str, int]) -> None:
    cache.set_many(keys, timeout=max(1, round(ttl())))
    cache.add(SINCE, time.time(), timeout=None)


def gone(message_ids: list[int]) -> list[int]:
    """Of these streaming replies, those no process has renewed within ALIVE_TTL; [] when
    that cannot be known (no shared cache, or Redis unreachable)."""
    if not enabled() or not message_ids:
        return []
    try:
        alive = cache.get_many([SINCE, *(key(i) for i in message_ids)])
    except Exception as exc:
        log.warning("run liveness keys not read: %r", exc)
        return []
    since = alive.get(SINCE)
    if not isinstance(since, float) or time.time() - since < ttl():
        return []
    return [i for i in message_ids if key(i) not in alive]
