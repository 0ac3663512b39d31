"""The embedded default's channel layer: channels' in-memory layer, made cheaper per message.

The stock layer scans every channel and group for expired messages on each send and receive
(about 9% of the relay's CPU with 200 streams) and starts a task per recipient of a group
message. Expiry only needs to happen now and then, and queue puts never wait.
"""

from __future__ import annotations

import contextlib
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer


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

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, {})):
            # A socket too slow to keep up drops the frame and catches up from a snapshot.
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)  # send() copies it per recipient
