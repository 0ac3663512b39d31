"""The NUL-character and column-length tests of tests/test_faults.py again, on PostgreSQL: it
refuses NUL in text, \\u0000 in jsonb and a string longer than its varchar, all of which SQLite
stores as they come, so only there does a missed one fail the save.

In its own process because settings read DATABASE_URL once, at start-up; the same rules as
tests/test_search_postgres.py (under CI=true an unreachable server fails, elsewhere skips)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from bench.stack import ServiceUnavailable, _with_db
from tests.scaleout import PG_ADMIN_URL, service_unavailable
from tests.test_search_postgres import _reachable

ROOT = Path(__file__).resolve().parent.parent


def test_nul_characters_are_saved_on_postgresql(tmp_path):
    try:
        _reachable(PG_ADMIN_URL)
    except ServiceUnavailable as exc:
        service_unavailable(f"PostgreSQL fault tests need PostgreSQL: {exc}")
    database_url = _with_db(PG_ADMIN_URL, f"playground_faults_{secrets.token_hex(4)}")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(DATABASE_URL=database_url, PLAYGROUND_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--create-db"]
        + ["tests/test_faults.py", "-k", "nul_character or finish_reason_longer"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "\n5 passed" in result.stdout and "skipped" not in result.stdout
