"""Redis mode: a worker process tells a Daphne process's results-page socket about each item
through the channel layer, so the progress and the cells fill in without polling."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from bench.stack import ServiceUnavailable, Stack, flush_redis
from tests.conftest import copy_database
from tests.experiment_seed import db_worker, start_run
from tests.scaleout import REDIS_URL as SCALEOUT_REDIS_URL
from tests.scaleout import service_unavailable
from tests.upstream import Behaviour, FakeUpstream

ROWS = 6
# A database number apart from the scale-out tests' (the fixture flushes it).
REDIS_URL = SCALEOUT_REDIS_URL.rsplit("/", 1)[0] + "/11"


@pytest.fixture
def redis_stack(migrated_sqlite: Path) -> Iterator[tuple[Stack, FakeUpstream]]:
    try:
        flush_redis(REDIS_URL)
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))  # a failure under CI=true, a skip elsewhere
    upstream = FakeUpstream().start()
    stack = Stack(
        upstream.base_url,
        redis_url=REDIS_URL,
        extra_env={"PLAYGROUND_EXPERIMENT_CONCURRENCY": "1"},
    )
    try:
        copy_database(migrated_sqlite, stack.var_dir / "db.sqlite3")  # the test's prepare()
        yield stack, upstream
    finally:
        stack.stop()
        upstream.stop()
        stack.cleanup()


async def test_a_worker_s_progress_reaches_the_page_s_socket(redis_stack):
    stack, upstream = redis_stack
    upstream.default = Behaviour(n_tokens=10, interval=0.05)  # half a second an item
    seed = stack.prepare(0)
    run_id = start_run(stack, rows=ROWS, name="Live", prompt="{{n}}", user_id=seed.user_id)
    (server,) = stack.start_servers(1)
    ws_url = server.url.replace("http://", "ws://") + f"/ws/experiments/runs/{run_id}/?show=all"
    frames: list[str] = []
    async with connect(
        ws_url,
        origin=server.url,
        additional_headers={"Cookie": f"sessionid={seed.cookie}"},
        proxy=None,
        open_timeout=10,
    ) as socket:
        frames.append(str(await socket.recv(decode=True)))  # the state on connect: none done
        worker = db_worker(stack)
        try:
            deadline = time.monotonic() + 60
            while f"{ROWS} done" not in frames[-1] and time.monotonic() < deadline:
                frames.append(str(await socket.recv(decode=True)))
        finally:
            worker.terminate()
            worker.wait(10)
    done = [int(m[1]) for f in frames if (m := re.search(r"(\d+) done", f))]
    assert done[0] == 0 and done[-1] == ROWS
    assert len(done) >= 3  # several redraws while it ran, not one at the end
    assert all('hx-swap-oob="true"' in f for f in frames)
    assert "tok9" in frames[-1]  # the cells filled in
