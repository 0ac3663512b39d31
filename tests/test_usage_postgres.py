"""The Usage page and budget tests again, on PostgreSQL (the page's grouped query is read
through the cursor and, there, runs with more work_mem: the figures must not change).

In its own process because settings read DATABASE_URL once, at start-up; the same rules as
tests/test_search_postgres.py (under CI=true an unreachable server fails, elsewhere skips)."""

from __future__ import annotations

from tests.scaleout import pytest_on_postgresql


def test_usage_and_budgets_pass_on_postgresql(tmp_path):
    output = pytest_on_postgresql(
        "usage",
        tmp_path,
        ["tests/test_usage.py", "tests/test_budgets.py", "-k", "not on_sqlite"],
    )
    assert " passed" in output and "skipped" not in output
