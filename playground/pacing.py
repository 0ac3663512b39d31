"""Handshake pacing: a connect storm must not starve the replies already streaming.

Opening a socket costs the session and user lookups, the access check, the transcript query
and its rendering: a few milliseconds of CPU, most of it in threads. A thousand sockets
opening at once queued all of that at the same moment, and the threads' turns on the GIL
left the event loop (which relays every running reply) waiting: streams stalled for up to
3 s. Here at most PLAYGROUND_OPENING_SOCKETS sockets of the process are between their
handshake and their first frame at any time; the rest wait their turn (first come, first
served), which costs nothing while they wait. Daphne's WebSocket connect timeout (30 s in
`make run`) bounds the wait.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from django.conf import settings

# One semaphore per event loop: the tests run each on a loop of its own.
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(settings.PLAYGROUND_OPENING_SOCKETS)
    return gate


class PacedSend:
    """A socket's `send` while it holds its turn to open: the turn passes on once its first
    frame (or its close) is out, or when release() is called (the socket is over)."""

    __slots__ = ("gate", "send")

    def __init__(self, send: Any, gate: asyncio.Semaphore) -> None:
        self.send: Any = send
        self.gate: asyncio.Semaphore | None = gate

    async def __call__(self, message: dict[str, Any]) -> None:
        try:
            await self.send(message)
        finally:
            # Open (its first frame is out) or refused: the next socket may start.
            if message["type"] in ("websocket.send", "websocket.close"):
                self.release()

    def release(self) -> None:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            gate.release()


async def wait_turn(send: Any) -> PacedSend:
    """Wait until this socket may open; release() the PacedSend when the socket is over."""
    gate = _gate()
    await gate.acquire()
    return PacedSend(send, gate)
