"""The benchmark's arithmetic on fixed numbers, and its direct client against the fake upstream.

The relay's headline figures are differences of percentiles and CPU shares: a helper that
silently changed (or vanished) would change the published figures without anyone noticing.
"""

from __future__ import annotations

import math

import pytest

from bench import direct
from bench.relay import added_from_send, count_delta, cpu_ms_per_token, percentile
from tests.upstream import Behaviour, FakeUpstream


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unordered
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0, 3.0, 5.0], 50) == 5.0
    assert percentile([7.0, 3.0, 5.0], 99) == 7.0
    assert percentile([4.0], 0) == 4.0
    assert math.isnan(percentile([], 50))


def test_added_from_send_subtracts_the_direct_clients_percentile():
    # Playground TTFT from send 10..109 ms, direct client 2..101 ms: 8 ms added at every rank.
    playground = [float(v) for v in range(10, 110)]
    direct_ms = [float(v) for v in range(2, 102)]
    assert added_from_send(playground, direct_ms, 50) == 59.0 - 51.0 == 8.0
    assert added_from_send(playground, direct_ms, 99) == 108.0 - 100.0
    # Percentile against percentile, not pair by pair: the order of either list is irrelevant.
    assert added_from_send(playground[::-1], direct_ms, 99) == 8.0
    # One slow direct request raises only the direct p99, so the added p99 drops.
    assert added_from_send([20.0] * 100, [5.0] * 99 + [500.0], 50) == 15.0
    assert added_from_send([20.0] * 100, [5.0] * 98 + [500.0] * 2, 99) == 20.0 - 500.0
    assert math.isnan(added_from_send([1.0], [], 50))


def test_cpu_per_token_takes_the_turns_off_first():
    # 2.5 s of Daphne CPU for 20 replies of 500 tokens, a turn costing 25 ms: 2 s for tokens.
    assert cpu_ms_per_token(2.5, 20, 25.0, 10_000) == pytest.approx(0.2)
    assert cpu_ms_per_token(2.5, 0, 25.0, 10_000) == pytest.approx(0.25)
    assert math.isnan(cpu_ms_per_token(1.0, 1, 1.0, 0))


def test_count_delta_per_statement_kind():
    before = {"SELECT": 10, "INSERT": 2, "UPDATE": 5}
    after = {"SELECT": 25, "INSERT": 2, "UPDATE": 8, "BEGIN": 1}
    assert count_delta(after, before) == {"BEGIN": 1, "SELECT": 15, "UPDATE": 3}


def test_the_direct_client_replays_the_playground_body_with_its_own_tag():
    template = {
        "model": "gemma-3-27b-it",
        "stream": True,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "benchmark stream [bench-burst-7]: say something"},
        ],
    }
    body = direct.body_for(template, "direct-burst-3")
    assert body["messages"][1]["content"] == "benchmark stream [direct-burst-3]: say something"
    assert body["messages"][0] == template["messages"][0]
    assert template["messages"][1]["content"].endswith("[bench-burst-7]: say something")
    assert direct.DirectResult("t", sent_at=100.0, first_text_at=100.25).ttft_ms == 250.0
    assert direct.DirectResult("t", sent_at=100.0).ttft_ms is None


async def test_the_direct_client_times_the_first_content_delta():
    with FakeUpstream() as upstream:
        upstream.default = Behaviour(n_tokens=5, interval=0.05)
        template = {"model": "gemma-3-27b-it", "stream": True, "messages": []}
        async with direct.new_client() as http:
            results = await direct.run_direct(
                http, upstream.base_url + "/chat/completions", template, "sk-x", 2, tag_prefix="d"
            )
    assert [r.error for r in results] == ["", ""]
    assert [r.text for r in results] == [Behaviour(n_tokens=5).text] * 2
    for r in results:
        # The first token goes out at once, the remaining four 50 ms apart.
        assert r.ttft_ms is not None and 0 < r.ttft_ms < 150
        assert r.done_at is not None and r.done_at - r.first_text_at >= 0.15


async def test_the_upstream_process_holds_the_first_token_for_the_providers_delay():
    """bench.relay's and bench.peers' second `single` block: every system, the direct client
    included, waits the same provider delay, so it cancels out of the added TTFT."""
    from bench.upstream_proc import UpstreamProcess

    upstream = UpstreamProcess(tokens=2, interval=0.0)
    template = {"model": "gemma-3-27b-it", "stream": True, "messages": []}
    try:
        async with direct.new_client() as http:

            async def ttft_ms() -> float:
                url = upstream.base_url + "/chat/completions"
                [result] = await direct.run_direct(http, url, template, "sk-x", 1, tag_prefix="d")
                assert result.error == "" and result.ttft_ms is not None
                return result.ttft_ms

            upstream.set_default(2, 0.0, first_token_delay=0.3)
            assert await ttft_ms() >= 300
            upstream.set_default(2, 0.0)
            assert await ttft_ms() < 300
    finally:
        upstream.stop()


def test_statements_by_phase_counts_each_turns_statements_before_its_request_and_token():
    from bench.client import StreamResult
    from bench.relay import statements_by_phase

    turns = [
        StreamResult("bench-turns-0", "", 1, sent_at=10.0, first_text_at=10.010),
        StreamResult("bench-turns-1", "", 2, sent_at=20.0, first_text_at=20.010),
        StreamResult("bench-turns-2", "", 3, sent_at=30.0),  # never got a token: left out
    ]
    records = [
        {"tag": "bench-turns-0", "received_wall": 10.004},
        {"tag": "bench-turns-1", "received_wall": 20.002},
        {"tag": None, "received_wall": 25.0},
    ]
    log = [
        (9.0, "UPDATE"),  # the turn before's final save
        (10.001, "SELECT"),
        (10.002, "SELECT"),
        (10.005, "BEGIN"),
        (10.006, "INSERT"),
        (10.011, "UPDATE"),  # after the first token
        (20.001, "SELECT"),
        (20.003, "SELECT"),
        (20.004, "INSERT"),
    ]
    before_upstream, before_token = statements_by_phase(turns, records, log)
    assert before_upstream == [2, 1]
    assert before_token == [4, 3]


def test_the_machine_line_carries_the_calibration_it_timed(monkeypatch):
    from bench import relay

    ticks = iter(range(0, 100, 2))  # each of the 5 runs "takes" 2 s
    monkeypatch.setattr(relay.time, "perf_counter", lambda: next(ticks))
    relay.calibration_ms.cache_clear()
    try:
        assert relay.calibration_ms() == 2000
        assert "calibration 2000 ms" in relay.machine()
    finally:
        relay.calibration_ms.cache_clear()


def test_the_provider_delay_holds_for_its_block_only_and_single_counts_both_blocks():
    import argparse

    from bench.relay import Bench, single_streams

    bench = Bench(stack=None, upstream=None, cookie="", conversations=[])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError), bench.provider_delay(100):
        assert bench.first_token_delay == 0.1
        raise RuntimeError
    assert bench.first_token_delay == 0.0
    args = argparse.Namespace(single_reps=40, single_provider_ms=100)
    assert single_streams(args) == 80
    args.single_provider_ms = 0
    assert single_streams(args) == 40


async def test_idle_measures_a_second_wave_beside_the_first(monkeypatch):
    """The first wave may fill memory an earlier scenario freed; the second wave, opened
    beside it, is what one more socket costs. Each wave is measured on its own."""
    import asyncio
    from types import SimpleNamespace

    from bench import relay
    from bench.relay import Bench

    open_now: list[object] = []
    kb_each = iter([0.0] * 50 + [10.0] * 20 + [40.0] * 20)  # the warm-up sockets, then two waves
    held = {"kb": 0.0}

    class Sock:
        def __init__(self) -> None:
            self.kb = next(kb_each)
            held["kb"] += self.kb
            open_now.append(self)

        async def close(self) -> None:
            open_now.remove(self)

    async def hold_idle(url: str, cid: int, cookie: str) -> Sock:
        return Sock()

    class Meter:
        def __init__(self, pids: list[int]) -> None:
            pass

        def rss(self) -> int:
            return int(100 * 2**20 + held["kb"] * 1024)

        def cpu_now(self) -> float:
            return 0.0

    real_sleep = asyncio.sleep
    monkeypatch.setattr(relay.client, "hold_idle", hold_idle)
    monkeypatch.setattr(relay, "ProcessMeter", Meter)
    monkeypatch.setattr(relay.asyncio, "sleep", lambda seconds: real_sleep(0))
    stack = SimpleNamespace(servers=[SimpleNamespace(url="ws://127.0.0.1:1", pid=1)])
    bench = Bench(stack=stack, upstream=None, cookie="", conversations=list(range(90)))  # type: ignore[arg-type]
    await bench.idle(20)
    assert bench.raw["idle"] == {"kb_per_socket": [10.0, 40.0]}
    assert open_now == []  # every socket closed at the end
    (row,) = [r for r in bench.rows if r[1].startswith("RSS growth")]
    assert row[2].startswith("10.0 KB (20/20 open") and "; 40.0 KB (20/20 open" in row[2]
    assert bench.conversations == []
