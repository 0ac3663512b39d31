"""Start a real playground to measure: migrate, seed, the fake upstream, N Daphne processes.

Shared by `bench.relay` and `tests/test_scale_out.py`. Everything listens on 127.0.0.1 only.

Database writes are counted by triggers the stack adds after `migrate` (SQLite and PostgreSQL
alike): every row inserted, updated or deleted in any playground table adds a row to
`bench_writes` in the same transaction, so the count is exact and attributable per message.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ASGI_APP = "playground.asgi:application"


class ServiceUnavailable(Exception):
    """PostgreSQL or Redis cannot be reached."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- PostgreSQL and Redis -----------------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_pg_database(admin_url: str, prefix: str = "playground_bench") -> str:
    """Create a fresh database on the server of `admin_url`; return its URL."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(f"PostgreSQL at {admin_url}: {exc}") from exc
    return _with_db(admin_url, name)


def drop_pg_database(admin_url: str, database_url: str) -> None:
    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_redis(url: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Redis at {url}: {exc}") from exc


# -- write counting -----------------------------------------------------------------------------

_PG_TRIGGER_FUNCTION = """
CREATE TABLE bench_writes (
    id bigserial PRIMARY KEY, tbl text, op text, row_id text,
    at timestamptz DEFAULT clock_timestamp()
);
CREATE FUNCTION bench_count_write() RETURNS trigger AS $$
BEGIN
    INSERT INTO bench_writes (tbl, op, row_id) VALUES (
        TG_TABLE_NAME, left(TG_OP, 1),
        CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD)->>'id' ELSE to_jsonb(NEW)->>'id' END);
    RETURN NULL;
END $$ LANGUAGE plpgsql;
"""


def install_write_counters(database_url: str | None, sqlite_path: Path | None) -> None:
    if database_url:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(_PG_TRIGGER_FUNCTION)
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'bench_writes'"
                )
            ]
            for table in tables:
                conn.execute(
                    f'CREATE TRIGGER bench_count AFTER INSERT OR UPDATE OR DELETE ON "{table}" '
                    "FOR EACH ROW EXECUTE FUNCTION bench_count_write()"
                )
        return
    assert sqlite_path is not None
    conn = sqlite3.connect(sqlite_path)
    try:
        conn.execute(
            "CREATE TABLE bench_writes (id INTEGER PRIMARY KEY, tbl TEXT, op TEXT, row_id TEXT, "
            "at REAL)"
        )
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND name <> 'bench_writes'"
        ).fetchall()
        # The search index's FTS5 tables take no triggers, and their shadow tables
        # (<name>_data, <name>_idx, ...) are written by FTS5 itself: neither is a row write of
        # the playground's.
        virtual = [name for name, sql in rows if sql.upper().startswith("CREATE VIRTUAL")]
        tables = [
            name
            for name, _ in rows
            if name not in virtual and not any(name.startswith(f"{v}_") for v in virtual)
        ]
        for table in tables:
            for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
                conn.execute(
                    f'CREATE TRIGGER "bench_{table}_{op}" AFTER {op} ON "{table}" BEGIN '
                    f"INSERT INTO bench_writes (tbl, op, row_id, at) VALUES "
                    f"('{table}', '{op[0]}', {row}.rowid, julianday('now')); END"
                )
        conn.commit()
    finally:
        conn.close()


# -- the stack ----------------------------------------------------------------------------------


@dataclass
class Daphne:
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 400) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Seed:
    user_id: int
    cookie: str  # the session id
    conversations: list[int]


@dataclass
class Stack:
    """A playground under test. `database_url`/`redis_url` None → the embedded default."""

    upstream_base_url: str
    database_url: str | None = None
    redis_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    var_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pg-bench-")))
    servers: list[Daphne] = field(default_factory=list)
    daphne_command: list[str] = field(default_factory=lambda: [str(BIN / "daphne")])
    # bench.relay serves "bench.asgi:application": the same app plus a SQL statement counter.
    asgi_app: str = ASGI_APP
    # Daphne's listen backlog and WebSocket connect timeout (None: Daphne's own, 50 and 5 s).
    backlog: int | None = None
    websocket_connect_timeout: int | None = None

    def __post_init__(self) -> None:
        self.env = self._env()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("DATABASE_URL", "REDIS_URL"):
            env.pop(name, None)
        env.update(
            DJANGO_SETTINGS_MODULE="playground.settings",
            PLAYGROUND_VAR_DIR=str(self.var_dir),
            # Every process must share these (sessions, encrypted keys).
            PLAYGROUND_SECRET_KEY=secrets.token_urlsafe(50),
            PLAYGROUND_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
            PLAYGROUND_PROVIDER_BASE_URLS=(
                f"empiriolabs={self.upstream_base_url},aimlapi={self.upstream_base_url}"
            ),
            PLAYGROUND_CONNECT_TIMEOUT="5",
            PLAYGROUND_READ_TIMEOUT="60",
            PLAYGROUND_MAX_RETRIES="0",
            # One bench user drives every stream: lift the per-user cap on streaming replies.
            PLAYGROUND_MAX_RUNS_PER_USER="100000",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
            # Publish/subscribe channels are server-wide: keep this run's apart.
            env["PLAYGROUND_REDIS_PREFIX"] = f"bench-{secrets.token_hex(4)}"
        env.update(self.extra_env)
        return env

    @property
    def sqlite_path(self) -> Path | None:
        return None if self.database_url else self.var_dir / "db.sqlite3"

    def manage(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [str(BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def prepare(self, conversations: int) -> Seed:
        """Migrate, collect the static files WhiteNoise serves (its manifest storage answers
        500 without them), add the write counters, create a user with a key and its
        conversations."""
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput", "--verbosity", "0")
        install_write_counters(self.database_url, self.sqlite_path)
        done = subprocess.run(
            [str(BIN / "python"), "-m", "bench.seed", str(conversations)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{done.stdout}\n{done.stderr}")
        data = json.loads(done.stdout.strip().splitlines()[-1])
        return Seed(data["user_id"], data["cookie"], data["conversations"])

    def start_servers(self, n: int, timeout: float = 30.0) -> list[Daphne]:
        for _ in range(n):
            port = free_port()
            log_path = self.var_dir / f"daphne-{port}.log"
            with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe stalls Daphne
                process = subprocess.Popen(
                    [*self.daphne_command, *self.daphne_options(port), self.asgi_app],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.servers.append(Daphne(port, process, log_path))
        for server in self.servers[-n:]:
            _wait_until_serving(server, timeout)
        return self.servers[-n:]

    def daphne_options(self, port: int) -> list[str]:
        """Where Daphne listens and its handshake limits: `make run`'s flags, when set."""
        if self.backlog is None:
            options = ["-b", "127.0.0.1", "-p", str(port)]
        else:
            options = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={self.backlog}"]
        if self.websocket_connect_timeout is not None:
            options += ["--websocket_connect_timeout", str(self.websocket_connect_timeout)]
        return options

    def stop(self) -> None:
        for server in self.servers:
            if server.process.poll() is None:
                server.process.terminate()
        for server in self.servers:
            try:
                server.process.wait(10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(5)

    def cleanup(self) -> None:
        shutil.rmtree(self.var_dir, ignore_errors=True)

    def log_tails(self) -> str:
        return "\n".join(f"--- daphne :{s.port} ---\n{s.log_tail()}" for s in self.servers)

    @contextlib.contextmanager
    def serving(self, upstream: Any, *, keep: bool = False) -> Iterator[None]:
        """One bench run on this stack: a failure prints Daphne's log tails to stderr; at the
        end the servers and `upstream` (anything with stop()) stop and, unless `keep`, the
        var dir goes."""
        try:
            yield
        except Exception:
            print(self.log_tails(), file=sys.stderr)
            raise
        finally:
            self.stop()
            upstream.stop()
            if not keep:
                self.cleanup()

    # -- measurements ---------------------------------------------------------------------------

    def writes(self) -> list[tuple[str, str, str]]:
        """Every counted write so far: (table, op I/U/D, row id)."""
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url) as conn:
                return [
                    tuple(r)
                    for r in conn.execute("SELECT tbl, op, row_id FROM bench_writes ORDER BY id")
                ]
        conn = sqlite3.connect(self.sqlite_path, timeout=30)
        try:
            return [
                (t, o, str(r))
                for t, o, r in conn.execute("SELECT tbl, op, row_id FROM bench_writes ORDER BY id")
            ]
        finally:
            conn.close()

    def queries(self) -> dict[str, int]:
        """SQL statements executed so far, by first word, summed over the Daphne processes
        (needs asgi_app="bench.asgi:application")."""
        total: dict[str, int] = {}
        for server in self.servers:
            with urllib.request.urlopen(server.url + "/__bench__/queries", timeout=10) as r:
                for kind, n in json.load(r).items():
                    total[kind] = total.get(kind, 0) + n
        return total

    def statements(self) -> list[tuple[float, str]]:
        """(time.time(), first word) of the latest SQL statements, all Daphne processes."""
        out: list[tuple[float, str]] = []
        for server in self.servers:
            with urllib.request.urlopen(server.url + "/__bench__/statements", timeout=10) as r:
                out += [(t, kind) for t, kind in json.load(r)]
        return sorted(out)

    def saved_messages(self, ids: list[int]) -> dict[int, tuple[str, str]]:
        """{message id: (status, text)} straight from the database."""
        if not ids:
            return {}
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url) as conn:
                rows = conn.execute(
                    "SELECT id, status, text FROM chat_message WHERE id = ANY(%s)", (ids,)
                ).fetchall()
        else:
            conn = sqlite3.connect(self.sqlite_path, timeout=30)
            try:
                marks = ",".join("?" * len(ids))
                rows = conn.execute(
                    f"SELECT id, status, text FROM chat_message WHERE id IN ({marks})", ids
                ).fetchall()
            finally:
                conn.close()
        return {int(i): (s, t) for i, s, t in rows}


def _wait_until_serving(server: Daphne, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"daphne :{server.port} exited with {server.process.returncode}:\n"
                + server.log_tail()
            )
        try:
            urllib.request.urlopen(server.url + "/login/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(
        f"daphne :{server.port} did not answer in {timeout:.0f}s:\n{server.log_tail()}"
    )


# -- /proc --------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK
