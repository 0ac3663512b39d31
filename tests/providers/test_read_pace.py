"""Timeouts.pace: once a reply has begun, its connection is read at most once per `pace`
seconds, each read taking all that arrived meanwhile; the first token is never held."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from playground.providers import readpace
from playground.providers.client import Endpoint, TextDelta, Timeouts, stream
from tests.upstream import Behaviour, FakeUpstream

BODY = {"model": "gemma-3-27b-it", "messages": [{"role": "user", "content": "Count"}]}
FAST = Timeouts(connect=1.0, read=2.0, write=2.0, pool=2.0, retry_after_cap=1.0, backoff_base=0.01)


@pytest.fixture
def reads(monkeypatch) -> list[float]:
    """The moment each paced connection's network read returned."""
    times: list[float] = []
    real = readpace.PacedStream.read

    async def counted(self, max_bytes, timeout=None):
        try:
            return await real(self, max_bytes, timeout)
        finally:
            times.append(time.monotonic())

    monkeypatch.setattr(readpace.PacedStream, "read", counted)
    return times


async def run(upstream: FakeUpstream, pace: float) -> tuple[str, float, float]:
    """The text, the time to its first token and to its end."""
    started = time.monotonic()
    first, text = None, ""
    async for event in stream(
        Endpoint(upstream.base_url), "sk-test", BODY, timeouts=replace(FAST, pace=pace)
    ):
        if isinstance(event, TextDelta):
            first = first or time.monotonic() - started
            text += event.text
    return text, first or 0.0, time.monotonic() - started


async def test_paced_reads_gather_many_tokens_and_lose_none(
    upstream: FakeUpstream, reads: list[float]
) -> None:
    upstream.default = Behaviour(n_tokens=60, interval=0.005)  # 0.3 s of tokens
    text, _, _ = await run(upstream, 0.0)
    unpaced = len(reads)
    assert text == upstream.default.text
    reads.clear()
    text, _, _ = await run(upstream, 0.1)
    assert text == upstream.default.text
    # Read one by one, 60 tokens take about 60 reads; paced at 0.1 s, 0.3 s of them take a
    # handful (plus the head and the first token's).
    assert unpaced >= 30, unpaced
    assert len(reads) <= 10, len(reads)


async def test_paced_reads_are_at_least_the_pace_apart_after_the_first_token(
    upstream: FakeUpstream, reads: list[float]
) -> None:
    upstream.default = Behaviour(n_tokens=40, interval=0.01)
    text, _, _ = await run(upstream, 0.08)
    assert text == upstream.default.text
    # Some reads come before the first token (the head); from then on the gaps hold.
    gaps = [b - a for a, b in zip(reads, reads[1:], strict=False)]
    assert sum(gap >= 0.08 for gap in gaps) >= 3
    assert all(gap >= 0.08 for gap in gaps[-3:]), gaps


async def test_the_first_token_is_not_held(upstream: FakeUpstream, reads: list[float]) -> None:
    # The role chunk (an id, no text) comes first, the first token 0.3 s later: pacing from
    # the role chunk on would hold the token's read until 2 s after it.
    upstream.default = Behaviour(n_tokens=3, silence=0.3, silence_after=0)
    _, first, _ = await run(upstream, 2.0)
    assert 0.3 <= first < 1.0


async def test_the_next_request_on_the_pooled_connection_starts_unpaced(
    upstream: FakeUpstream, reads: list[float]
) -> None:
    upstream.default = Behaviour(n_tokens=5, interval=0.01)
    await run(upstream, 0.5)
    _, first, _ = await run(upstream, 0.0)
    assert first < 0.4  # a pace left on the reused connection would hold its head's read


async def test_a_stream_stops_promptly_while_a_read_waits_out_its_pace(
    upstream: FakeUpstream,
) -> None:
    upstream.default = Behaviour(n_tokens=200, interval=0.01)
    got: list[str] = []

    async def consume() -> None:
        async for event in stream(
            Endpoint(upstream.base_url), "sk-test", BODY, timeouts=replace(FAST, pace=5.0)
        ):
            if isinstance(event, TextDelta):
                got.append(event.text)

    task = asyncio.create_task(consume())
    while not got:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # inside the 5 s wait now
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 2.0)
