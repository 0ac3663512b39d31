"""bench.peers' bookkeeping on fixed results: how an SSE batch (a peer's or the direct
client's) is scored, the rotation of the batches, the pooled figures and the one-stream table.
Neither Open WebUI nor LiteLLM needed."""

from __future__ import annotations

import math

from bench import client
from bench.direct import DirectResult
from bench.peers import (
    SYSTEMS,
    Batch,
    added_ratio,
    http_batch,
    rotation,
    single_table,
    summary,
    systems_for,
)


def result(tag: str, sent: float, first: float | None, done: float | None, text: str, error=""):
    return DirectResult(
        tag, sent_at=sent, first_text_at=first, done_at=done, text=text, error=error
    )


def test_http_batch_scores_tokens_makespan_ttft_and_the_return_leg():
    full = client.expected_text(4)  # "tok0 tok1 tok2 tok3"
    results = [
        result("bench-a-0", 100.0, 100.010, 101.0, full),
        result("bench-a-1", 100.5, 100.520, 102.5, "tok0 tok1 tok3"),  # tok2 lost
        result("bench-a-2", 100.2, None, None, "", error="ReadTimeout()"),  # nothing at all
    ]
    records = [
        {"tag": "bench-a-0", "first_token_sent_wall": 100.004},
        {"tag": "bench-a-1", "first_token_sent_wall": None},  # no token written: no leg
    ]
    b = http_batch(results, 4, records)
    assert (b.streams, b.ok, b.lost, b.duplicated) == (3, 1, 1 + 4, 0)
    assert b.tokens == 4 + 3 + 0
    # From the first send of a finished reply to the last reply done, as relay.analyse does.
    assert b.makespan_s == 102.5 - 100.0
    assert b.tokens_per_s == 7 / 2.5
    assert [round(t, 3) for t in b.ttft_ms] == [10.0, 20.0]
    assert [round(t, 3) for t in b.return_leg_ms] == [6.0]


def test_http_batch_counts_a_token_shown_twice_and_no_reply_done():
    b = http_batch([result("x", 1.0, 1.1, 2.0, "tok0 tok1 tok1")], 2)
    assert (b.ok, b.lost, b.duplicated, b.tokens) == (0, 0, 1, 2)
    nothing = http_batch([result("x", 1.0, None, None, "", error="boom")], 2)
    assert math.isnan(nothing.makespan_s) and math.isnan(nothing.tokens_per_s)


def test_rotation_puts_each_system_in_each_place_once_per_cycle():
    for systems in (SYSTEMS, systems_for(["openwebui"]), systems_for(["litellm"])):
        orders = [rotation(r, systems) for r in range(len(systems))]
        for place in range(len(systems)):
            assert sorted(o[place] for o in orders) == sorted(systems)
        assert rotation(len(systems), systems) == rotation(0, systems)


def test_systems_for_keeps_the_playground_first_and_direct_last_whatever_the_order_given():
    assert systems_for(["litellm", "openwebui"]) == SYSTEMS
    assert SYSTEMS == ("playground", "openwebui", "litellm", "direct")
    assert systems_for(["litellm"]) == ("playground", "litellm", "direct")


def test_added_ratio_is_peer_over_playground_per_percentile_and_nan_when_nothing_added():
    assert added_ratio((20.0, 90.0), (4.0, 10.0)) == (5.0, 9.0)
    p50, p99 = added_ratio((20.0, math.nan), (0.0, 10.0))
    assert math.isnan(p50) and math.isnan(p99)  # the playground added 0: no ratio
    assert math.isnan(added_ratio((20.0, 30.0), (-1.0, 3.0))[0])


def test_summary_pools_ttft_over_rounds_and_takes_the_median_rate():
    def batch(tokens: int, makespan: float, ttft: list[float], cpu: float = math.nan) -> Batch:
        return Batch(len(ttft), len(ttft), 0, 0, tokens, makespan, ttft, [], cpu)

    rounds = [batch(100, 1.0, [10.0, 30.0], 0.2), batch(100, 2.0, [20.0, 40.0], 0.3)]
    rounds.append(batch(100, 4.0, [50.0, 60.0], 0.5))
    direct = [batch(100, 1.0, [1.0, 2.0]), batch(100, 1.0, [3.0, 4.0])]
    f = summary(rounds, direct)
    assert f["tokens_per_s"] == 50.0 and f["tokens_per_s_range"] == (25.0, 100.0)
    assert f["makespan_s"] == 2.0
    assert f["ttft"] == (30.0, 60.0)  # nearest rank over all six streams
    assert f["added"] == (30.0 - 2.0, 60.0 - 4.0)  # against the direct client's pooled ranks
    assert f["cpu_per_1000"] == 1.0 / 300 * 1000
    assert (f["streams"], f["ok"], f["lost"]) == (6, 6, 0)


def test_single_table_shows_added_ttft_and_each_peers_ratio_to_the_playground():
    def batch(ttft: list[float]) -> Batch:
        return Batch(len(ttft), len(ttft), 0, 0, 10 * len(ttft), 1.0, ttft)

    direct = [batch([1.0, 2.0])]
    figures = {
        "playground": summary([batch([4.0, 7.0])], direct),
        "litellm": summary([batch([16.0, 52.0])], direct),
        "direct": summary(direct, direct),
    }
    systems = systems_for(["litellm"])
    text = single_table("1 stream", figures, {"playground": 80.0, "litellm": 30.5}, systems)
    lines = text.splitlines()
    assert lines[2] == "| figure | playground | LiteLLM proxy | direct client |"
    assert "| 80.0 ms | 30.5 ms | — |" in text  # no warm-up figure for direct: a dash
    assert "| TTFT from send p50 / p99 | 4.0 / 7.0 ms | 16.0 / 52.0 ms | 1.0 / 2.0 ms |" in text
    assert "| added TTFT from send p50 / p99 | 3.0 / 5.0 ms | 15.0 / 50.0 ms | — |" in text
    assert lines[-1].startswith("LiteLLM proxy added ÷ playground added, p50 / p99: 5.0 / 10.0×")
