"""The NUL-character, lone-surrogate and column-length tests of tests/test_faults.py again, on
PostgreSQL: it refuses NUL in text, \\u0000 and a lone \\ud800 in jsonb and a string longer than
its varchar, all of which SQLite stores as they come (neither takes a lone surrogate in text), so
only there does a missed one fail the save.

In its own process because settings read DATABASE_URL once, at start-up; the same rules as
tests/test_search_postgres.py (under CI=true an unreachable server fails, elsewhere skips)."""

from __future__ import annotations

from tests.scaleout import pytest_on_postgresql


def test_nul_characters_are_saved_on_postgresql(tmp_path):
    output = pytest_on_postgresql(
        "faults",
        tmp_path,
        ["tests/test_faults.py", "-k", "nul_character or surrogate or finish_reason_longer"],
    )
    assert "\n7 passed" in output and "skipped" not in output
