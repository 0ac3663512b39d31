"""Failed sign-ins (and first-run / sign-up submissions) counted per username and per client
address in the cache; past a limit, that name or address is locked out for a while.

A few lines over Django's cache rather than django-axes: axes watches authentication only,
and the first-run and sign-up forms need the same limits; it would also add a table written on
every failed attempt. The cache is shared by every process in Redis mode (settings.CACHES) and
is process memory in the embedded default, which runs one process. Counting is a fixed window:
the first failure opens a window of LOCKOUT seconds, reaching the limit within it locks the
name or address for LOCKOUT seconds from then.

The client address is REMOTE_ADDR. Behind a reverse proxy, start Daphne with --proxy-headers
(docs/deploy.md) so it is the browser's address, not the proxy's.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

log = logging.getLogger(__name__)

LOGIN = "login"
SIGNUP = "signup"  # the first-run form and the sign-up form


def _address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def _keys(scope: str, request: HttpRequest, username: str | None) -> list[tuple[str, int]]:
    """(cache key, limit) for each thing counted."""
    limits = settings.PLAYGROUND_THROTTLE
    keys = [(f"throttle:{scope}:addr:{_address(request)}", limits["PER_ADDRESS"])]
    if username:
        # Hashed: usernames may hold anything, and cache keys must be short and plain.
        digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        keys.append((f"throttle:{scope}:user:{digest}", limits["PER_USERNAME"]))
    return keys


def locked_for(scope: str, request: HttpRequest, username: str | None = None) -> int:
    """Seconds until this username and address may try again; 0 when they may now.

    With Redis away, signing in still works (unlimited until it is back) rather than failing
    for everyone: the passwords are still checked."""
    try:
        locks = cache.get_many([f"{key}:locked" for key, _ in _keys(scope, request, username)])
    except Exception as exc:
        log.warning("sign-in limits not checked, the cache is unreachable: %r", exc)
        return 0
    until = max(locks.values(), default=0.0)
    return max(0, math.ceil(until - time.time()))


def failed(scope: str, request: HttpRequest, username: str | None = None) -> None:
    try:
        _count(scope, request, username)
    except Exception as exc:
        log.warning("a failed sign-in was not counted, the cache is unreachable: %r", exc)


def _count(scope: str, request: HttpRequest, username: str | None) -> None:
    lockout = settings.PLAYGROUND_THROTTLE["LOCKOUT"]
    for key, limit in _keys(scope, request, username):
        cache.add(key, 0, timeout=lockout)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr: a new window
            cache.set(key, count := 1, timeout=lockout)
        if count >= limit:
            cache.set(f"{key}:locked", time.time() + lockout, timeout=lockout)


def succeeded(scope: str, request: HttpRequest, username: str) -> None:
    """A right password clears that name's count (not the address's: one address trying
    many names is what the address limit is for)."""
    key, _ = _keys(scope, request, username)[-1]
    try:
        cache.delete(key)
    except Exception as exc:
        log.warning("a sign-in count was not cleared, the cache is unreachable: %r", exc)


def message(seconds: int) -> str:
    wait = f"{seconds} seconds" if seconds < 90 else f"{math.ceil(seconds / 60)} minutes"
    return f"Too many failed attempts. Try again in {wait}."
