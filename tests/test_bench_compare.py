"""bench.compare's bookkeeping on fixed frames: which reply is which column, when each one's
first text arrived, when a send is over. Behaviour only: the figures are the bench's to print."""

from __future__ import annotations

from bench.client import View
from bench.compare import Round, all_final, column_ttfts, table

STREAMING = '<article id="msg-{id}" class="message assistant streaming">'
DONE = '<article id="msg-{id}" class="message assistant complete" hx-swap-oob="true">'


def test_each_columns_ttft_is_from_the_send_to_its_own_first_text():
    view = View()
    view.feed(STREAMING.format(id=11) + STREAMING.format(id=12), now=100.0)
    view.feed("+t12:tok0", now=100.050)
    view.feed("+t11:tok0", now=100.080)
    view.feed("+t11: tok1", now=100.200)
    assert [round(v) for v in column_ttfts(view, sent_at=100.0)] == [80, 50]
    assert not all_final(view, 2)
    view.feed(DONE.format(id=11) + DONE.format(id=12), now=100.3)
    assert all_final(view, 2)


def test_the_table_subtracts_direct_from_compare_percentile_against_percentile():
    rounds = [
        Round(
            compare_ms=[30.0, 40.0], single_ms=12.0, direct_many_ms=[10.0, 20.0], direct_one_ms=5.0
        )
    ]
    printed = table(rounds, 2)
    assert "| **added TTFT per column (2-column compare)** | 20.0 ms | 20.0 ms |" in printed
    assert "| **added TTFT, a single stream** | 7.0 ms | 7.0 ms |" in printed


def test_the_cpu_figure_is_read_when_every_column_has_shown_text_and_not_after():
    import os

    from bench.compare import FirstTexts, cpu_ms

    assert cpu_ms(os.getpid()) > 0
    first = FirstTexts(os.getpid(), 2)
    view = View()
    view.feed(STREAMING.format(id=11) + STREAMING.format(id=12), now=100.0)
    view.feed("+t12:tok0", now=100.050)
    first.check(view)
    assert first.cpu is None  # one column of two
    view.feed("+t11:tok0", now=100.080)
    first.check(view)
    assert first.cpu is not None and first.cpu >= 0
    seen = first.cpu
    sum(range(200_000))
    view.feed("+t11: tok1", now=100.200)
    first.check(view)
    assert first.cpu == seen
    assert FirstTexts(None, 1).cpu is None


def test_the_table_prints_the_cpu_per_column_next_to_a_single_streams():
    rounds = [
        Round(
            compare_ms=[30.0, 40.0],
            single_ms=12.0,
            direct_many_ms=[10.0, 20.0],
            direct_one_ms=5.0,
            compare_cpu_ms=16.0,
            single_cpu_ms=6.0,
        )
    ]
    printed = table(rounds, 2)
    assert "per column (2-column compare) | 8.0 ms | 8.0 ms |" in printed
    assert "first text, a single stream | 6.0 ms | 6.0 ms |" in printed
