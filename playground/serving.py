"""How Daphne serves WebSockets: the message size limit, and a close frame instead of a drop.

Daphne hands autobahn a size limit (1 MiB unless a flag says otherwise) but leaves autobahn's
`failByDrop` on, so a larger message cut the TCP connection without a close frame: the page
saw a bare 1006 and could not say why. Daphne has no option for it, so the factory it builds
is swapped for one that always closes with 1009 and a reason, at the limit this project
documents (PLAYGROUND_MAX_SOCKET_MESSAGE_BYTES), whatever flags Daphne was started with.
"""

from __future__ import annotations

from typing import Any

from daphne import server
from daphne.ws_protocol import WebSocketFactory
from django.conf import settings


class PlaygroundWebSocketFactory(WebSocketFactory):
    def setProtocolOptions(self, **options: Any) -> None:  # noqa: N802 (autobahn's name)
        limit = settings.PLAYGROUND_MAX_SOCKET_MESSAGE_BYTES
        options.update(failByDrop=False, maxMessagePayloadSize=limit, maxFramePayloadSize=limit)
        super().setProtocolOptions(**options)


def install() -> None:
    """Before Daphne's Server.run() builds its factory (the ASGI app is imported first)."""
    server.WebSocketFactory = PlaygroundWebSocketFactory
