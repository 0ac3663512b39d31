"""Redis mode under faults: Redis stops for a few seconds mid-reply (the reply is saved whole,
watchers catch up); a process is killed mid-reply (its reply is marked interrupted within
seconds, with a message that says so, and the conversation takes new messages).

Runs its own redis-server on a free port (the machine's shared Redis is never touched), a
Daphne process over SQLite that uses it as its channel layer, and the fake upstream.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import client
from bench.client import View
from bench.stack import Seed, Stack, free_port
from tests.conftest import copy_database
from tests.scaleout import service_unavailable
from tests.upstream import Behaviour, FakeUpstream

REDIS_SERVER = shutil.which("redis-server")


class OwnRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_stack(migrated_sqlite: Path) -> Iterator[tuple[Stack, FakeUpstream, Seed, OwnRedis]]:
    if REDIS_SERVER is None:
        service_unavailable("needs redis-server (Debian's redis-server package)")
    redis = OwnRedis()
    redis.start()
    upstream = FakeUpstream().start()
    stack = Stack(upstream.base_url, redis_url=redis.url, extra_env={"PLAYGROUND_ALIVE_TTL": "3"})
    try:
        copy_database(migrated_sqlite, stack.var_dir / "db.sqlite3")
        seed = stack.prepare(3)
        stack.start_servers(1)
        yield stack, upstream, seed, redis
    finally:
        stack.stop()
        upstream.stop()
        stack.cleanup()
        redis.cleanup()


def reply_of(view: View) -> int | None:
    return view.streaming_reply()


def shown(view: View) -> int:
    reply = reply_of(view)
    return len(view.texts.get(reply, "")) if reply is not None else 0


async def test_a_redis_restart_mid_reply_loses_nothing(redis_stack):
    stack, upstream, seed, redis = redis_stack
    upstream.default = Behaviour(n_tokens=300, interval=0.02)  # ~6 s
    server = stack.servers[0]
    ws = await client.open_socket(server.url, seed.conversations[0], seed.cookie)
    view = View()
    try:
        await client.read_until(ws, view, lambda v: v.frames >= 1, 10)
        await ws.send(client.send_payload("Count for me"))
        await client.read_until(ws, view, lambda v: shown(v) > 20, 10)
        redis.stop()
        await asyncio.sleep(2.0)  # the run streams on; its frames fail
        redis.start()
        reply = reply_of(view)
        assert reply is not None
        await client.read_until(ws, view, lambda v: v.finished(reply), 30)
    finally:
        await ws.close()
    expected = Behaviour(n_tokens=300).text
    assert stack.saved_messages([reply])[reply] == ("complete", expected)
    assert view.statuses[reply] == "complete"
    # What the socket showed while streaming: re-synced from a snapshot after the outage.
    assert view.texts[reply] == expected, stack.log_tails()


async def test_a_killed_process_s_reply_is_marked_interrupted_once_its_liveness_key_expires(
    redis_stack,
):
    stack, upstream, seed, redis = redis_stack
    upstream.default = Behaviour(n_tokens=1000, interval=0.02)
    server = stack.servers[0]
    conversation = seed.conversations[0]
    ws = await client.open_socket(server.url, conversation, seed.cookie)
    view = View()
    try:
        await client.read_until(ws, view, lambda v: v.frames >= 1, 10)
        await ws.send(client.send_payload("Count for me"))
        await client.read_until(ws, view, lambda v: shown(v) > 20, 10)
        await asyncio.sleep(2.5)  # past a checkpoint (every 2 s), and SINCE is set
        server.process.kill()
        killed_at = time.monotonic()
    finally:
        await ws.close()
    reply = reply_of(view)
    assert reply is not None

    (other,) = stack.start_servers(1)
    upstream.default = Behaviour(n_tokens=3)
    while True:  # the sweep runs as the socket opens: the key is gone after ALIVE_TTL (3 s)
        ws = await client.open_socket(other.url, conversation, seed.cookie)
        view = View()
        await client.read_until(ws, view, lambda v: v.frames >= 1, 10)
        if view.statuses.get(reply) == "interrupted":
            break
        await ws.close()
        assert time.monotonic() - killed_at < 20, "not found before STALE_AFTER (60 s)"
        await asyncio.sleep(0.5)
    try:
        status, text = stack.saved_messages([reply])[reply]
        assert status == "interrupted" and len(text) > 0  # the last checkpoint is kept
        with sqlite3.connect(stack.sqlite_path) as db:
            (saved_error,) = db.execute(
                "SELECT error FROM chat_message WHERE id = ?", (reply,)
            ).fetchone()
        assert "The server process writing this reply stopped" in saved_error
        await ws.send(client.send_payload("Again"))
        await client.read_until(
            ws, view, lambda v: v.streaming_reply() not in (None, reply) and v.final - {reply}, 10
        )
    finally:
        await ws.close()
