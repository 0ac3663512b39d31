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
from collections.abc import Awaitable, Callable
from copy import deepcopy
from typing import Any, Generic, TypeVar

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

T = TypeVar("T")

_FLAT = (str, int, float, bool, type(None))


def _copied(message: dict[str, Any]) -> dict[str, Any]:
    """A copy no sender or recipient can change under the other."""
    for value in message.values():
        if type(value) not in _FLAT:
            return deepcopy(message)
    return dict(message)


class Mailbox(Generic[T]):
    """An unbounded first-in first-out queue for one event loop: put_nowait() and get(), what
    asyncio.Queue offers for this use, at a fraction of its memory.

    Every open socket waits on two of them for as long as it is open (its channel here, and
    Daphne's queue of its incoming frames: serving.py), and an asyncio.Queue is four deques,
    about 3 KB, before it holds anything. An empty Mailbox is this object and, while someone
    waits, one future; its deque exists only while items wait. No __len__: Daphne tests a
    queue for truth to mean "there is one"."""

    __slots__ = ("items", "waiters")

    def __init__(self) -> None:
        self.items: deque[T] | None = None
        self.waiters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self.items) if self.items else 0

    def empty(self) -> bool:
        return not self.items

    def put_nowait(self, item: T) -> None:
        if self.items is None:
            self.items = deque()
        self.items.append(item)
        self._wake()

    def add_waiter(self, waiter: asyncio.Future[None]) -> None:
        """`waiter` gets a result when an item arrives (it may wait on other mailboxes too)."""
        if self.items:
            if not waiter.done():
                waiter.set_result(None)
            return
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(waiter)

    def remove_waiter(self, waiter: asyncio.Future[None]) -> None:
        if self.waiters:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)
            if not self.waiters:
                self.waiters = None
        if self.items and self.waiters:
            self._wake()  # in case `waiter` took a wake-up meant for a receiver still waiting

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def get_nowait(self) -> T:
        if not self.items:
            raise asyncio.QueueEmpty
        item = self.items.popleft()
        if not self.items:
            self.items = None
        return item

    def peek(self) -> T:
        assert self.items
        return self.items[0]

    async def get(self) -> T:
        while not self.items:
            waiter = asyncio.get_running_loop().create_future()
            self.add_waiter(waiter)
            try:
                await waiter
            finally:
                # Woken and then cancelled, or woken after another getter took the item: the
                # wake-up passes to the next getter still waiting, if any.
                self.remove_waiter(waiter)
        return self.get_nowait()

    @property
    def idle(self) -> bool:
        """Nothing waits in it and nobody waits on it: it can be forgotten."""
        return not self.items and not self.waiters


class EmbeddedChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channels: dict[str, Mailbox[tuple[float, dict[str, Any]]]] = {}  # type: ignore[assignment]
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
            while not box.empty() and box.peek()[0] < wall:
                box.get_nowait()
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
        box = self.mailbox(channel)
        if box.qsize() >= self.get_capacity(channel):
            raise ChannelFull(channel)
        box.put_nowait((time.time() + self.expiry, _copied(message)))

    def receive_nowait(self, channel: str) -> dict | None:
        """The channel's next message, or None: receive() without the wait."""
        self._clean_expired()
        box = self.channels.get(channel)
        if box is None or box.empty():
            return None
        _, message = box.get_nowait()
        self.forget_if_idle(channel, box)
        return message

    def mailbox(self, channel: str) -> Mailbox[tuple[float, dict[str, Any]]]:
        """The channel's mailbox, made if need be: wait on it, then forget_if_idle()."""
        box = self.channels.get(channel)
        if box is None:
            self.require_valid_channel_name(channel)
            box = self.channels[channel] = Mailbox()
        return box

    def forget_if_idle(self, channel: str, box: Mailbox[Any]) -> None:
        if box.idle and self.channels.get(channel) is box:
            del self.channels[channel]

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        box = self.mailbox(channel)
        try:
            _, message = await box.get()
        finally:
            self.forget_if_idle(channel, box)
        return message

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, {})):
            # A socket too slow to keep up drops the frame and catches up from a snapshot.
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)  # send() copies it per recipient


async def dispatch_both(
    inbox: Mailbox[dict[str, Any]],
    layer: EmbeddedChannelLayer,
    channel: str,
    dispatch: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Pass what arrives on a socket (Daphne's Mailbox: serving.py) and on its channel to
    `dispatch`, one at a time, until dispatch raises: channels' await_many_dispatch for these
    two, with one future per wait instead of a task per source and asyncio.wait's machinery
    (about 3 KB per open socket, for as long as it is open). When both have messages, they
    take turns, so neither can hold the other up."""
    loop = asyncio.get_running_loop()
    while True:
        dispatched = False
        if not inbox.empty():
            await dispatch(inbox.get_nowait())
            dispatched = True
        message = layer.receive_nowait(channel)
        if message is not None:
            await dispatch(message)
            dispatched = True
        if dispatched:
            continue
        box = layer.mailbox(channel)
        waiter = loop.create_future()
        inbox.add_waiter(waiter)
        box.add_waiter(waiter)
        try:
            await waiter
        finally:
            inbox.remove_waiter(waiter)
            box.remove_waiter(waiter)
            layer.forget_if_idle(channel, box)
