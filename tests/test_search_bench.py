"""bench/search.py at toy size: it seeds, measures both pages and prints its table, so the
README's figures can be re-made."""

from __future__ import annotations

from bench import search as bench_search


def test_the_search_bench_runs_end_to_end_on_sqlite(capsys):
    bench_search.main(
        ["--backend", "sqlite", "--conversations", "30", "--messages", "120", "--reps", "1"]
    )
    out = capsys.readouterr().out
    assert "| sqlite | 30 / 120 |" in out
    assert "first page" in out and "page 41 (cursor)" in out
    assert "'zzzabsentword'" in out


def test_cpu_clock_counts_this_process(db):
    clock = bench_search.CpuClock()
    before = clock.read()
    sum(i * i for i in range(200_000))
    assert clock.read() > before
