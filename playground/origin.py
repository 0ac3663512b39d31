"""The WebSocket same-origin check, port-exact.

AllowedHostsOriginValidator only compares the Origin's host name with ALLOWED_HOSTS: a page
served from another port on an allowed host (another app on 127.0.0.1:3000, say) could open a
socket with the user's cookies. A socket is accepted only when its Origin's host and port are
those of the Host header it was opened with, or the Origin is one the deployment already
trusts for CSRF (CSRF_TRUSTED_ORIGINS).

The scheme is not compared with the socket's own: behind a TLS-terminating proxy Daphne sees
ws:// for an https:// page, and a page on the same host and port is the same server anyway.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import is_same_domain


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    """The header's value when it appears exactly once; a repeated one is not trusted."""
    values = [value for key, value in scope.get("headers", []) if key.lower() == name]
    if len(values) != 1:
        return None
    try:
        return values[0].decode("latin1").strip()
    except UnicodeDecodeError:
        return None


def _trusted(origin: str, scheme: str, netloc: str) -> bool:
    """Mirrors Django's CSRF origin check: exact entries, and `https://*.example.com`."""
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        trusted = trusted.lower()
        if "*" not in trusted:
            if origin == trusted:
                return True
            continue
        pattern = urlsplit(trusted)
        if pattern.scheme == scheme and is_same_domain(netloc, pattern.netloc.lstrip("*")):
            return True
    return False


def same_origin(scope: dict[str, Any]) -> bool:
    origin, host = _header(scope, b"origin"), _header(scope, b"host")
    if not origin or not host:
        return False
    origin = origin.lower().rstrip("/")
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        return False
    # Port-exact: the Host header carries the port the browser connected to (none for 80/443,
    # as in the Origin), so `127.0.0.1:3000` is not `127.0.0.1:8000`.
    if parts.netloc == host.lower():
        return True
    return _trusted(f"{parts.scheme}://{parts.netloc}", parts.scheme, parts.netloc)
