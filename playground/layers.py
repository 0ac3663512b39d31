"""The embedded default's channel layer: channels' in-memory layer, made cheaper per message.

The stock layer scans every channel and group for expired messages on each send and receive
(about 9% of the relay's CPU with 200 streams) and starts a task per recipient of a group
message. Expiry only needs to happen now and then, and queue puts never wait. Its send() also
builds a new queue for every message (kept only if the channel had none) and deep-copies the
message for each recipient; here a flat message (strings, numbers, None: every relay frame)
is copied as a plain dict, which is as safe (its values cannot be changed in place), and
anything else is still deep-copied. Each channel is a small mailbox rather than an
asyncio.Queue: every open socket waits on its own channel, so this is paid per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

_FLAT = (str, int, float, bool, type(None))


def _copied(message: dict[str, Any]) -> dict[str, Any]:
    """A copy no sender or recipient can change under the other."""
    for value in message.values():
        if type(value) not in _FLAT:
            return deepcopy(message)
    return dict(message)


class _Mailbox:
    """One channel's pending messages and the receivers waiting on it.

    What asyncio.Queue did here, at a fortieth of its memory: every open socket has a channel
    and waits on it for as long as it is open, and a Queue is four deques (about 3 KB) before
    it holds anything. Here an idle channel is this object and one future; the deque exists
    only while messages wait."""

    __slots__ = ("items", "waiters")

    def __init__(self) -> None:
        self.items: deque[tuple[float, dict[str, Any]]] | None = None
        self.waiters: list[asyncio.Future[None]] | None = None

    def __len__(self) -> int:
        return len(self.items) if self.items else 0

    def put(self, item: tuple[float, dict[str, Any]]) -> None:
        if self.items is None:
            self.items = deque()
        self.items.append(item)
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def pop(self) -> tuple[float, dict[str, Any]]:
        assert self.items
        item = self.items.popleft()
        if not self.items:
            self.items = None
        return item

    async def get(self) -> tuple[float, dict[str, Any]]:
        while not self.items:
            waiter = asyncio.get_running_loop().create_future()
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
                if self.items and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: the message is the next one's
                raise
            finally:
                if not self.waiters:
                    self.waiters = None
        return self.pop()

    @property
    def idle(self) -> bool:
        """Nothing waits in it and nobody waits on it: it can be forgotten."""
        return not self.items and not self.waiters


class EmbeddedChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channels: dict[str, _Mailbox] = {}  # type: ignore[assignment]
        self.clean_interval = clean_interval
        self._cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < self.clean_interval:
            return
        self._cleaned_at = now
        # As channels' own: a channel with an expired message leaves every group (its socket
        # has stopped reading), and a membership older than group_expiry ends.
        wall = time.time()
        for channel, box in list(self.channels.items()):
            while box.items and box.items[0][0] < wall:
                box.pop()
                for members in self.groups.values():
                    members.pop(channel, None)
            if box.idle:
                self.channels.pop(channel, None)
        timeout = int(wall) - self.group_expiry
        for members in self.groups.values():
            for name, joined in list(members.items()):
                if joined and joined < timeout:
                    members.pop(name, None)

    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        assert "__asgi_channel__" not in message
        box = self.channels.get(channel)
        if box is None:
            self.require_valid_channel_name(channel)
            box = self.channels[channel] = _Mailbox()
        if len(box) >= self.get_capacity(channel):
            raise ChannelFull(channel)
        box.put((time.time() + self.expiry, _copied(message)))

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        box = self.channels.get(channel)
        if box is None:
            box = self.channels[channel] = _Mailbox()
        try:
            _, message = await box.get()
        finally:
            if box.idle and self.channels.get(channel) is box:
                del self.channels[channel]
        return message

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, {})):
            # A socket too slow to keep up drops the frame and catches up from a snapshot.
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)  # send() copies it per recipient
