"""bench.peers' bookkeeping on fixed results: how an SSE batch (Open WebUI's or the direct
client's) is scored, the rotation of the batches and the pooled figures. No Open WebUI needed."""

from __future__ import annotations

import math

from bench import client
from bench.direct import DirectResult
from bench.peers import SYSTEMS, Batch, http_batch, rotation, summary


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


def test_rotation_puts_each_system_first_once_in_three_rounds():
    orders = [rotation(r) for r in range(3)]
    assert [o[0] for o in orders] == list(SYSTEMS)
    assert all(sorted(o) == sorted(SYSTEMS) for o in orders)
    assert rotation(3) == rotation(0)


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
