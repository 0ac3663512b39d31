"""Bench-only ASGI entry point: the playground's application plus an exact SQL statement count.

    daphne bench.asgi:application        (bench.relay starts Daphne this way; production never)

Every database connection the process opens (one per thread: Channels runs ORM calls in a
thread pool) gets an execute wrapper (`connection.execute_wrappers`, the list Django's
`connection.execute_wrapper()` context manager pushes onto) that counts each statement sent
through a Django cursor, keyed by its first SQL word (SELECT, INSERT, UPDATE, SAVEPOINT, …).
That is every ORM query and every savepoint; not counted are what the driver issues by itself
(SQLite's implicit BEGIN, COMMIT through `connection.commit()`) and the PRAGMAs run once when
a connection opens.

`GET /__bench__/queries` answers the counts so far as JSON; `GET /__bench__/statements` the
wall-clock time (time.time()) and kind of the last STATEMENT_LOG statements, which the bench
lines up with each turn's send and its upstream request. Every other request goes to
`playground.asgi.application` untouched. Nothing under playground/ imports this module.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created

from playground.asgi import application as playground_application  # sets Django up

QUERIES_PATH = "/__bench__/queries"
STATEMENTS_PATH = "/__bench__/statements"
STATEMENT_LOG = 20_000

_counts: Counter[str] = Counter()
_log: deque[tuple[float, str]] = deque(maxlen=STATEMENT_LOG)
_lock = threading.Lock()


def statement_kind(sql: str) -> str:
    """The first SQL word, upper-case ("SELECT", "INSERT", …); "?" for an empty statement."""
    words = sql.lstrip(" \t\r\n(").split(None, 1)
    return words[0].upper() if words else "?"


def _count(execute, sql, params, many, context):
    kind = statement_kind(str(sql))
    with _lock:
        _counts[kind] += 1
        _log.append((time.time(), kind))
    return execute(sql, params, many, context)


def _install(connection: Any) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    _install(connection)


connection_created.connect(_on_connection_created)
for _connection in connections.all(initialized_only=True):
    _install(_connection)


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def statements() -> list[tuple[float, str]]:
    with _lock:
        return list(_log)


async def application(scope: dict, receive: Any, send: Any) -> None:
    path = scope.get("path") if scope["type"] == "http" else None
    if path in (QUERIES_PATH, STATEMENTS_PATH):
        body = json.dumps(snapshot() if path == QUERIES_PATH else statements()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await playground_application(scope, receive, send)
