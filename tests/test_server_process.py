"""A real Daphne process: SIGTERM mid-reply loses nothing shown and locks nobody out; an
oversized socket message gets a close frame with a reason."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from bench import client
from bench.client import View
from bench.stack import Seed, Stack
from tests.conftest import copy_database
from tests.upstream import Behaviour, FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
GRACE = 1.5
RESTARTED = "The server restarted while this reply was being written."


@pytest.fixture
def stack(migrated_sqlite: Path) -> Iterator[tuple[Stack, FakeUpstream, Seed]]:
    """One Daphne process over SQLite and the in-memory layer, as `make run` serves."""
    upstream = FakeUpstream().start()
    stack = Stack(upstream.base_url, extra_env={"PLAYGROUND_SHUTDOWN_GRACE": str(GRACE)})
    try:
        copy_database(migrated_sqlite, stack.var_dir / "db.sqlite3")
        seed = stack.prepare(3)
        stack.start_servers(1)
        yield stack, upstream, seed
    finally:
        stack.stop()
        upstream.stop()
        stack.cleanup()


def shown(view: View) -> int:
    reply = view.streaming_reply()
    return len(view.texts.get(reply, "")) if reply is not None else 0


def reply_id(view: View) -> int:
    reply = view.streaming_reply()
    assert reply is not None
    return reply


async def read_to_close(ws, view: View, timeout: float) -> list[str]:
    frames = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                frame = await ws.recv()
                frames.append(frame)
                view.feed(frame)
        except ConnectionClosed:
            return frames


async def test_sigterm_mid_reply_saves_what_was_shown_tells_the_page_and_frees_the_conversation(
    stack,
):
    stack, upstream, seed = stack
    upstream.default = Behaviour(n_tokens=1000, interval=0.02)  # ~20 s: outlives the grace
    server = stack.servers[0]
    watched, other = seed.conversations[0], seed.conversations[1]
    ws = await client.open_socket(server.url, watched, seed.cookie)
    late = await client.open_socket(server.url, other, seed.cookie)
    view = View()
    await client.read_until(ws, view, lambda v: v.frames >= 1, 10)
    await ws.send(client.send_payload("Count for me"))
    await client.read_until(ws, view, lambda v: shown(v) > 30, 10)

    server.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    # Draining: a new turn is refused with a reason, the running reply goes on.
    await late.send(client.send_payload("Anyone there?"))
    refused = await asyncio.wait_for(late.recv(), 5)
    while "restarting" not in refused:
        refused = await asyncio.wait_for(late.recv(), 5)
    assert "The server is restarting" in refused

    frames = await read_to_close(ws, view, GRACE + 8)
    reply = reply_id(view)
    assert view.statuses[reply] == "interrupted" and reply in view.final
    assert any(RESTARTED in f for f in frames)  # the page shows why
    assert ws.close_code == 4012
    assert await asyncio.to_thread(server.process.wait, 10) == 0

    status, text = stack.saved_messages([reply])[reply]
    assert status == "interrupted"
    assert text == view.texts[reply] and len(text) > 30  # exactly what the page showed
    assert stack.saved_messages([reply + 1]) == {}  # the refused turn created nothing

    # The next process takes a new message in that conversation at once.
    upstream.default = Behaviour(n_tokens=3)
    (again,) = stack.start_servers(1)
    ws = await client.open_socket(again.url, watched, seed.cookie)
    view = View()
    try:
        await client.read_until(ws, view, lambda v: v.frames >= 1, 10)
        await ws.send(client.send_payload("Again"))
        await client.read_until(
            ws, view, lambda v: v.streaming_reply() not in (None, reply) and v.final - {reply}, 10
        )
        assert view.statuses[reply_id(view)] == "complete"
    finally:
        await ws.close()


async def test_a_reply_that_finishes_within_the_grace_period_is_saved_complete(stack):
    stack, upstream, seed = stack
    upstream.default = Behaviour(n_tokens=30, interval=0.02)  # ~0.6 s, inside the grace
    server = stack.servers[0]
    ws = await client.open_socket(server.url, seed.conversations[0], seed.cookie)
    view = View()
    await client.read_until(ws, view, lambda v: v.frames >= 1, 10)
    await ws.send(client.send_payload("Count for me"))
    await client.read_until(ws, view, lambda v: shown(v) > 5, 10)
    server.process.send_signal(signal.SIGTERM)
    await read_to_close(ws, view, GRACE + 8)
    reply = reply_id(view)
    assert view.statuses[reply] == "complete"
    assert ws.close_code == 4012
    assert await asyncio.to_thread(server.process.wait, 10) == 0
    assert stack.saved_messages([reply])[reply] == ("complete", Behaviour(n_tokens=30).text)


async def test_a_message_over_the_size_limit_closes_the_socket_with_1009_and_a_reason(stack):
    stack, upstream, seed = stack
    server = stack.servers[0]
    ws = await client.open_socket(server.url, seed.conversations[0], seed.cookie)
    await client.read_until(ws, View(), lambda v: v.frames >= 1, 10)
    await ws.send("x" * (2 * 1024 * 1024))  # one frame of 2 MiB, over the 1 MiB limit
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1009  # not a dropped connection (1006)
    assert "exceeds payload limit of 1048576" in ws.close_reason
    # The process goes on serving.
    again = await client.open_socket(server.url, seed.conversations[0], seed.cookie)
    await client.read_until(again, View(), lambda v: v.frames >= 1, 10)
    await again.close()


def _after_importing_asgi(code: str, var_dir) -> str:
    """What `code` prints in a fresh interpreter that has imported playground.asgi, as
    Daphne does at start-up (the embedded default: no DATABASE_URL or REDIS_URL)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environ.update(PLAYGROUND_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="playground.settings")
    result = subprocess.run(
        [sys.executable, "-c", f"import playground.asgi; {code}"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_asgi_module_builds_the_upstream_ssl_context_at_start_up(tmp_path):
    # Built on the first send instead, it cost that send 25-50 ms of CPU after every start.
    code = (
        "from playground.providers import client; print(client._ssl_context.cache_info().currsize)"
    )
    assert _after_importing_asgi(code, tmp_path).split() == ["1"]


def test_the_asgi_module_leaves_what_it_loaded_out_of_garbage_collection(tmp_path):
    # A full collection otherwise scans every module, class and compiled template each time:
    # a pause of the whole server (see the end of playground/asgi.py).
    code = "import gc; print(gc.get_freeze_count(), len(gc.get_objects(generation=2)))"
    frozen, oldest = map(int, _after_importing_asgi(code, tmp_path).split())
    assert frozen > 50_000
    assert oldest < frozen / 10
