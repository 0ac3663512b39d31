"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Sockets pass the origin checks (a page on another site, or on another port of this host,
cannot open one with the user's cookies) and the session authentication before
any consumer sees them.

The objects loaded by import time are frozen (gc.freeze) at the end: see there.
"""

from __future__ import annotations

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.template.loader import get_template  # noqa: E402

from playground import serving  # noqa: E402
from playground.chat import shutdown  # noqa: E402
from playground.gate import SocketGate  # noqa: E402
from playground.providers import client  # noqa: E402
from playground.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Static files are served by WhiteNoise's middleware inside Django (settings.py).
        "http": django_asgi_app,
        # A few sockets open at a time (pacing.py); ALLOWED_HOSTS first, then the Origin
        # must be this very host and port; then the session's user and the route (gate.py).
        "websocket": SocketGate(websocket_urlpatterns),
    }
)

# Under Daphne: a clear close for oversized messages (1009 with a reason) instead of a drop.
serving.install()
# Under Daphne: finish or interrupt running replies on SIGTERM/SIGINT instead of dropping them.
shutdown.install()

# The first send after a start does not wait for the upstream client's SSL context.
client.warm()

# Everything loaded by now lives as long as the process: modules, classes, settings, URL
# patterns, the SSL context, and the playground's template, compiled here once. That is some
# 110k objects, which every full (oldest-generation) collection scanned: a pause of 70-110 ms
# for every socket, every few hundred turns, measured in Daphne. Frozen, they are left out of
# every collection; a full one then scans what requests made (about 22 ms, same measure).
get_template("chat/playground.html")
gc.freeze()
