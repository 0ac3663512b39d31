"""The search tests again, on PostgreSQL: the same file with DATABASE_URL pointing at the
machine's server (pytest-django creates and drops its test database there).

In its own process because settings read DATABASE_URL once, at start-up. Under CI=true a
server that cannot be reached fails the run (tests/scaleout.py's rule); elsewhere it skips.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from bench.stack import ServiceUnavailable, _with_db
from tests.scaleout import PG_ADMIN_URL, service_unavailable

ROOT = Path(__file__).resolve().parent.parent


def _reachable(url: str) -> None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(f"PostgreSQL at {url}: {exc}") from exc


def test_search_passes_on_postgresql(tmp_path):
    try:
        _reachable(PG_ADMIN_URL)
    except ServiceUnavailable as exc:
        service_unavailable(f"PostgreSQL search tests need PostgreSQL: {exc}")
    # pytest-django makes "test_<name>" beside it and drops it at the end; the random name
    # keeps parallel runs on the shared server apart.
    database_url = _with_db(PG_ADMIN_URL, f"playground_search_{secrets.token_hex(4)}")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(DATABASE_URL=database_url, PLAYGROUND_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--create-db",
            "tests/test_search.py",
            "tests/test_history.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout


def test_a_missing_postgresql_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "PG_ADMIN_URL", "postgres://x@127.0.0.1:9/x")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="need PostgreSQL"):
        test_search_passes_on_postgresql(tmp_path)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        test_search_passes_on_postgresql(tmp_path)
