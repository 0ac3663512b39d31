"""The search tests again, on PostgreSQL: the same file with DATABASE_URL pointing at the
machine's server (pytest-django creates and drops its test database there).

In its own process because settings read DATABASE_URL once, at start-up. Under CI=true a
server that cannot be reached fails the run (tests/scaleout.py's rule); elsewhere it skips.
"""

from __future__ import annotations

import sys

import pytest

from tests.scaleout import PG_ADMIN_URL, pytest_on_postgresql


def test_search_passes_on_postgresql(tmp_path):
    output = pytest_on_postgresql(
        "search", tmp_path, ["tests/test_search.py", "tests/test_history.py"], PG_ADMIN_URL
    )
    assert " passed" in output and "skipped" not in output


def test_a_missing_postgresql_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "PG_ADMIN_URL", "postgres://x@127.0.0.1:9/x")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="need PostgreSQL"):
        test_search_passes_on_postgresql(tmp_path)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        test_search_passes_on_postgresql(tmp_path)
