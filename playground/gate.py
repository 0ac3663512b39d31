"""The one ASGI middleware in front of every WebSocket consumer.

What a socket passes before a consumer sees it, in this order:

1. its turn to open (pacing.py: a few sockets of the process at a time);
2. the Origin checks: channels' AllowedHostsOriginValidator (the Origin's host is in
   ALLOWED_HOSTS), then origin.py's port-exact same-origin check; a socket refused here is
   closed by channels' WebsocketDenier;
3. the session cookie, its session and its user, as channels' AuthMiddlewareStack loads them
   (`channels.auth.get_user`: a session whose password hash no longer matches is flushed and
   the socket is anonymous);
4. the route (routing.py's patterns, matched as channels' URLRouter matches them).

These were seven middlewares, each an ASGI application awaiting the next, and every open
socket kept all seven suspended for as long as it was open: seven coroutine frames, six
copies of the scope, a session wrapper and two lazy objects, about 5 KB per socket of a
budget of 30 KB (bench.relay's idle sockets). Here they are one frame and one scope copy.
The checks themselves are channels' and this project's own functions, unchanged.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, cast
from urllib.parse import urlparse

from channels.auth import get_user
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import parse_cookie
from django.urls.exceptions import Resolver404

from playground import pacing
from playground.origin import same_origin


def _origin(scope: dict[str, Any]) -> Any:
    """The Origin header as channels' OriginValidator parses it (the last one wins); None,
    which is refused, for one no URL parser reads (`http://[::1`), where channels' raised."""
    parsed = None
    for name, value in scope.get("headers", []):
        if name == b"origin":
            try:
                parsed = urlparse(value.decode("latin1"))
            except ValueError:  # UnicodeDecodeError included
                return None
    return parsed


def _cookies(scope: dict[str, Any]) -> dict[str, str]:
    """As channels' CookieMiddleware: the first Cookie header, parsed as Django parses it."""
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1"))
    return {}


class SocketGate:
    def __init__(self, routes: list[Any]) -> None:
        for route in routes:
            if getattr(route.callback, "_path_routing", False):
                raise ImproperlyConfigured(f"{route}: a router inside the gate is not supported.")
        self.routes = routes
        # channels' own check of the Origin's host against ALLOWED_HOSTS (read once, as the
        # middleware it replaces read it when the application was built).
        self.allowed_hosts = AllowedHostsOriginValidator(cast(Any, None))  # its check alone
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore

    def route(self, scope: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The consumer for the socket's path and its url_route, as channels' URLRouter
        (outermost) finds them."""
        path = scope.get("path")
        if path is None:
            raise ValueError("No 'path' key in connection scope, cannot route URLs")
        root_path = scope.get("root_path", "")
        if root_path and not path.startswith(root_path):
            raise ValueError(f"No route found for path {path!r}.")
        path = path[len(root_path) :].lstrip("/")
        for route in self.routes:
            try:
                match = route.pattern.match(path)
            except Resolver404:
                continue
            if match:
                remaining, args, kwargs = match
                kwargs.update(route.default_args)
                return route.callback, {
                    "path_remaining": remaining,
                    "url_route": {"args": args, "kwargs": kwargs},
                }
        raise ValueError(f"No route found for path {path!r}.")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            raise ValueError("SocketGate only guards WebSocket connections")
        paced_send = await pacing.wait_turn(send)
        try:
            if not (self.allowed_hosts.valid_origin(_origin(scope)) and same_origin(scope)):
                denier: Any = WebsocketDenier()
                return await denier(scope, receive, paced_send)
            consumer, routed = self.route(scope)
            cookies = _cookies(scope)
            scope = {
                **scope,
                "cookies": cookies,
                "session": self.session_store(cookies.get(settings.SESSION_COOKIE_NAME)),
                **routed,
            }
            scope["user"] = await get_user(cast(Any, scope))
            return await consumer(scope, receive, paced_send)
        finally:
            paced_send.release()
