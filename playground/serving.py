"""How Daphne serves WebSockets: the message size limit, a close frame instead of a drop, and
a lighter queue per connection.

Daphne hands autobahn a size limit (1 MiB unless a flag says otherwise) but leaves autobahn's
`failByDrop` on, so a larger message cut the TCP connection without a close frame: the page
saw a bare 1006 and could not say why. Daphne has no option for it, so the factory it builds
is swapped for one that always closes with 1009 and a reason, at the limit this project
documents (PLAYGROUND_MAX_SOCKET_MESSAGE_BYTES), whatever flags Daphne was started with.

Daphne gives every connection an asyncio.Queue for what arrives on it (four deques, about
3 KB, held for as long as a socket is open). Its create_application is swapped for the same
code with a layers.Mailbox, which Daphne uses the same way (put_nowait, and get as the
application's receive): bench.relay's idle sockets measure the difference.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from daphne import server
from daphne.ws_protocol import WebSocketFactory
from django.conf import settings

from playground.layers import Mailbox


class PlaygroundWebSocketFactory(WebSocketFactory):
    def setProtocolOptions(self, **options: Any) -> None:  # noqa: N802 (autobahn's name)
        limit = settings.PLAYGROUND_MAX_SOCKET_MESSAGE_BYTES
        options.update(failByDrop=False, maxMessagePayloadSize=limit, maxFramePayloadSize=limit)
        super().setProtocolOptions(**options)


def create_application(self: server.Server, protocol: Any, scope: dict[str, Any]) -> Any:
    """Daphne 4.2's Server.create_application, with a Mailbox as the input queue."""
    assert "application_instance" not in self.connections[protocol]
    input_queue: Mailbox[dict[str, Any]] = Mailbox()
    scope.setdefault("asgi", {"version": "3.0"})
    application_instance = self.application(
        scope=scope,
        receive=input_queue.get,
        send=partial(self.handle_reply, protocol),
    )
    if protocol not in self.connections:
        return None
    self.connections[protocol]["application_instance"] = asyncio.ensure_future(
        application_instance, loop=asyncio.get_event_loop()
    )
    return input_queue


DAPHNES_CREATE_APPLICATION = server.Server.create_application  # what the copy above follows


def install() -> None:
    """Before Daphne's Server.run() builds its factory (the ASGI app is imported first)."""
    server.WebSocketFactory = PlaygroundWebSocketFactory
    server.Server.create_application = create_application
