"""The embedded default's channel layer: channels' in-memory layer, made cheaper per message.

The stock layer scans every channel and group for expired messages on each send and receive
(about 9% of the relay's CPU with 200 streams) and starts a task per recipient of a group
message. Expiry only needs to happen now and then, and queue puts never wait. Its send() also
builds a new queue for every message (kept only if the channel had none) and deep-copies the
message for each recipient; here a flat message (strings, numbers, None: every relay frame)
is copied as a plain dict, which is as safe (its values cannot be changed in place), and
anything else is still deep-copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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


class EmbeddedChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clean_interval = clean_interval
        self._cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at >= self.clean_interval:
            self._cleaned_at = now
            super()._clean_expired()

    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        assert "__asgi_channel__" not in message
        queue = self.channels.get(channel)
        if queue is None:
            self.require_valid_channel_name(channel)
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            queue.put_nowait((time.time() + self.expiry, _copied(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, {})):
            # A socket too slow to keep up drops the frame and catches up from a snapshot.
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)  # send() copies it per recipient
