"""The scaled-out playground for tests: PostgreSQL + Redis + two Daphne processes.

A fresh PostgreSQL database (dropped afterwards) and a dedicated, flushed Redis database; the
fake upstream runs in the test process (a thread), so tests script it and see its disconnects.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.stack import (
    Daphne,
    Seed,
    ServiceUnavailable,
    Stack,
    _with_db,
    create_pg_database,
    drop_pg_database,
    flush_redis,
)
from tests.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "PLAYGROUND_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
# A Redis database number of its own: the fixture flushes it.
REDIS_URL = os.environ.get("PLAYGROUND_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@dataclass
class ScaledOut:
    stack: Stack
    upstream: FakeUpstream
    seed: Seed
    a: Daphne
    b: Daphne
    _next: int = 0

    def conversation(self) -> int:
        """A fresh, empty conversation of the seeded user."""
        conversation_id = self.seed.conversations[self._next]
        self._next += 1
        return conversation_id


def service_unavailable(reason: str) -> None:
    """CI must run these tests: a missing service fails there and skips elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _reachable(url: str) -> None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(f"PostgreSQL at {url}: {exc}") from exc


def pytest_on_postgresql(
    what: str, tmp_path, args: list[str], admin_url: str = PG_ADMIN_URL
) -> str:
    """Run `pytest args` in a process of its own with DATABASE_URL on the machine's PostgreSQL
    (settings read it once, at start-up), a fresh randomly named database so that parallel
    runs on the shared server stay apart; its output, once it has passed. A server that
    cannot be reached fails under CI=true and skips elsewhere (service_unavailable)."""
    try:
        _reachable(admin_url)
    except ServiceUnavailable as exc:
        service_unavailable(f"PostgreSQL {what} tests need PostgreSQL: {exc}")
    # pytest-django makes "test_<name>" beside it and drops it at the end.
    database_url = _with_db(admin_url, f"playground_{what}_{secrets.token_hex(4)}")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(DATABASE_URL=database_url, PLAYGROUND_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--create-db", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result.stdout


def scaled_out(conversations: int = 30) -> Iterator[ScaledOut]:
    try:
        database_url = create_pg_database(PG_ADMIN_URL, prefix="playground_test")
        flush_redis(REDIS_URL)
    except ServiceUnavailable as exc:
        service_unavailable(f"scale-out tests need PostgreSQL and Redis: {exc}")
        return
    upstream = FakeUpstream().start()
    stack = Stack(upstream.base_url, database_url, REDIS_URL)
    try:
        seed = stack.prepare(conversations)
        a, b = stack.start_servers(2)
        yield ScaledOut(stack, upstream, seed, a, b)
    except RuntimeError as exc:  # migrate, seeding or a server that would not start
        pytest.fail(str(exc), pytrace=False)
    finally:
        stack.stop()
        upstream.stop()
        stack.cleanup()
        drop_pg_database(PG_ADMIN_URL, database_url)
        flush_redis(REDIS_URL)
