"""Stopping a Daphne process without losing a reply or locking a conversation.

Daphne (Twisted) stops the reactor at once on SIGTERM or SIGINT: every socket drops with a bare
1006, the text streamed since the last checkpoint is lost, and the replies stay "streaming"
until the stale sweep finds them. Instead, on the first signal this process

1. takes no new turns (sockets that ask are told the server is restarting),
2. gives the running replies PLAYGROUND_SHUTDOWN_GRACE seconds to finish, and the turns
   already taken (their rows being written, their runs not started yet) the same to start,
3. interrupts the rest: each is saved with the text its watchers were shown, status
   "interrupted" and a plain message, and every watcher is sent the finished reply,
4. closes every socket with 4012, which the page shows ("restarting") before it reconnects,
5. stops the reactor, so Daphne exits as it always did.

A second signal skips what is left of the grace period. A deployment's stop timeout (Docker's
`stop_grace_period`, systemd's `TimeoutStopSec`) must exceed the grace by a few seconds, or the
process is killed first and the stale sweep has to find its replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, cast

from django.conf import settings

log = logging.getLogger(__name__)

# Read by the consumer before it starts a turn.
draining = False
RESTARTING = "The server is restarting: send again in a moment."
# Sent to each socket as a close code; 1012 ("service restart") is not one Daphne may send.
RESTART_CLOSE = 4012
# Seconds for interrupted replies' final saves, and for sockets to take their close frames.
SAVE_WAIT = 5.0
CLOSE_WAIT = 2.0

_signals = 0
# Called at step 4 to close the sockets (the consumer registers it: it imports this module).
_closers: list[Callable[[], Awaitable[None]]] = []
_hurry: asyncio.Event | None = None
_task: asyncio.Task | None = None
# Turns taken before draining began that may still start runs: a task writing a turn's rows,
# say. Each must be added in the same step of the loop as its check of `draining` (no await
# between), so that drain() either sees it or it sees `draining`.
_turns: set[object] = set()
# How often drain() looks again whether the replies and turns are done.
POLL = 0.05


def turn_task(task: asyncio.Task) -> asyncio.Task:
    """Count `task` as a turn under way until it ends (see _turns)."""
    _turns.add(task)
    task.add_done_callback(_turns.discard)
    return task


@contextlib.contextmanager
def turn_under_way() -> Iterator[None]:
    """Count the enclosed code as a turn under way (see _turns)."""
    token = object()
    _turns.add(token)
    try:
        yield
    finally:
        _turns.discard(token)


def when_draining(close: Callable[[], Awaitable[None]]) -> None:
    _closers.append(close)


def install() -> None:
    """Take over SIGTERM and SIGINT once Daphne's reactor runs. Elsewhere (tests, management
    commands) the reactor never runs, so nothing changes."""
    # After Twisted installed its own handlers at startup, which these replace.
    _reactor().callWhenRunning(_take_signals)


def _reactor() -> Any:
    """Twisted's global reactor: Daphne's AsyncioSelectorReactor on this event loop. (Its
    module attribute is typed as the module, so typing sees none of its methods.)"""
    from twisted.internet import reactor

    return cast(Any, reactor)


def _take_signals() -> None:
    loop = asyncio.get_event_loop()  # the reactor's loop

    def handler(number: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(on_signal, number)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def on_signal(number: int) -> None:
    global _signals, _hurry, _task
    _signals += 1
    if _signals > 1:
        log.warning("signal %s again: interrupting the running replies now", number)
        if _hurry is not None:
            _hurry.set()
        return
    _hurry = asyncio.Event()
    _task = asyncio.get_event_loop().create_task(_shut_down(_hurry), name="shutdown")


async def _shut_down(hurry: asyncio.Event) -> None:
    try:
        await drain(hurry)
    except Exception:
        log.exception("graceful shutdown failed; stopping anyway")
    finally:
        reactor = _reactor()
        if reactor.running:
            reactor.stop()


async def drain(hurry: asyncio.Event | None = None) -> None:
    """Steps 1-4 above; the caller stops the server."""
    global draining
    from playground.chat import runs

    draining = True
    grace = settings.PLAYGROUND_SHUTDOWN_GRACE
    busy = _busy(runs)
    log.warning(
        "shutting down: %d replies streaming, %d turns starting, %.0f s to finish",
        len(_streaming(runs)),
        len(_turns),
        grace if busy else 0,
    )
    # Polled: a turn under way starts its run later, which then has what is left of the grace.
    deadline = time.monotonic() + grace
    while _busy(runs) and time.monotonic() < deadline and not (hurry and hurry.is_set()):
        await asyncio.sleep(POLL)
    await _interrupt_all(runs)
    for close in _closers:
        await close()


def _streaming(runs) -> list[asyncio.Task]:
    return [t for t in runs._active.values() if not t.done()]


def _busy(runs) -> bool:
    return bool(_turns) or bool(_streaming(runs))


async def _interrupt_all(runs) -> None:
    """Interrupt every run still going and wait for its final save. A run started a moment
    ago may not have its stream yet, and a turn under way starts its run once its rows are
    written, so this asks again until all are done."""
    deadline = time.monotonic() + SAVE_WAIT
    while time.monotonic() < deadline:
        if not _busy(runs):
            return
        for run in list(runs._running.values()):
            run.interrupt()
        await asyncio.sleep(POLL)
    log.error(
        "shutdown: %d replies did not save in time, %d turns did not start",
        len(_streaming(runs)),
        len(_turns),
    )
