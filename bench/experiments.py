"""Experiment throughput: N rows × V variants on `manage.py db_worker` processes against the
fake upstream at a fixed token rate, with a per-endpoint concurrency.

    .venv/bin/python -m bench.experiments --rows 1000 --variants 2 --tokens 50 --rate 50 \
        --concurrency 8 --workers 1
    .venv/bin/python -m bench.experiments --workers 2 \
        --database-url postgres://postgres@127.0.0.1:5432/postgres

Prints the wall time against the concurrency-bound ideal (ceil(items / concurrency) ×
tokens / rate), the workers' CPU per item, and whether any item was lost or run twice (every
item done with exactly one complete reply, and one upstream request per item).
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import subprocess
import time
from datetime import datetime
from typing import Any

from bench.stack import (
    Stack,
    cpu_seconds,
    create_pg_database,
    drop_pg_database,
)
from tests.experiment_seed import MODEL, db_worker, start_run
from tests.upstream import Behaviour, FakeUpstream


class Db:
    """Read-only queries against the bench's database, SQLite or PostgreSQL."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def rows(self, sql: str) -> list[tuple]:
        if self.stack.database_url:
            import psycopg

            with psycopg.connect(self.stack.database_url) as db:
                return list(db.execute(sql).fetchall())
        assert self.stack.sqlite_path is not None
        with sqlite3.connect(self.stack.sqlite_path, timeout=30) as db:
            return db.execute(sql).fetchall()


def run(args: argparse.Namespace) -> dict[str, Any]:
    upstream = FakeUpstream().start()
    # A steady rate, as a provider streams: the fake upstream's sleeps run late on a busy
    # machine and, one after the other, would add ~5-10 % to every item on their own.
    upstream.default = Behaviour(n_tokens=args.tokens, interval=1 / args.rate, steady=True)
    database_url = create_pg_database(args.database_url) if args.database_url else None
    stack = Stack(
        upstream.base_url,
        database_url=database_url,
        extra_env={
            "PLAYGROUND_EXPERIMENT_CONCURRENCY": str(args.concurrency),
            "PLAYGROUND_EXPERIMENT_TASKS_PER_RUN": str(args.workers),
            "PLAYGROUND_READ_TIMEOUT": "120",
        },
    )
    workers: list[subprocess.Popen] = []
    try:
        stack.manage("migrate", "--noinput")
        variants = [
            {"model": MODEL, "params": {"temperature": round(0.1 * v, 1)}}
            for v in range(args.variants)
        ]
        run_id = start_run(
            stack,
            rows=args.rows,
            name="Bench",
            prompt="Row {{n}}",
            username="bench-experiments",
            api_key="sk-bench",
            variants=variants,
        )
        db = Db(stack)
        started = time.monotonic()
        workers.extend(db_worker(stack) for _ in range(args.workers))
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            status = db.rows(f"SELECT status FROM experiments_experimentrun WHERE id={run_id}")
            if status and status[0][0] == "done":
                break
            time.sleep(0.2)
        wall = time.monotonic() - started
        cpu = sum(cpu_seconds(w.pid) for w in workers)
        items = args.rows * args.variants
        statuses = dict(
            db.rows(
                f"SELECT status, COUNT(*) FROM experiments_item WHERE run_id={run_id}"
                " GROUP BY status"
            )
        )
        replies = db.rows(
            "SELECT i.id, COUNT(m.id) FROM experiments_item i LEFT JOIN chat_message m"
            " ON m.conversation_id = i.conversation_id AND m.role = 'assistant'"
            f" AND m.status = 'complete' WHERE i.run_id = {run_id} GROUP BY i.id"
        )
        times = [
            (_time(a), _time(b))
            for a, b in db.rows(
                f"SELECT started, finished FROM experiments_item WHERE run_id={run_id}"
                " AND finished IS NOT NULL"
            )
        ]
        spans = [(b - a).total_seconds() for a, b in times]
        # The upstream's own time per item (the reply's total_ms): the rest of an item's span
        # is the worker's overhead inside the item; the slots' idle time is between items.
        streams = [
            float(ms) / 1000
            for (ms,) in db.rows(
                "SELECT m.total_ms FROM experiments_item i JOIN chat_message m"
                f" ON m.id = i.message_id WHERE i.run_id = {run_id} AND m.total_ms IS NOT NULL"
            )
        ]
        # From the first claim to the last item's end: the run itself, without worker boot.
        run_s = (max(b for _, b in times) - min(a for a, _ in times)).total_seconds()
        chats = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
        requests = len(chats)
        # The upstream's own time per request, from its arrival to the last byte written: the
        # fake upstream's sleeps overshoot (a busy machine wakes it late), so the ideal is
        # also given with the measured time in place of tokens / rate.
        served = [r.completed_at - r.received_at for r in chats if r.completed_at is not None]
        served_mean = sum(served) / len(served) if served else None
        per_item = args.tokens / args.rate
        ideal = math.ceil(items / args.concurrency) * per_item
        return {
            "items": items,
            "workers": args.workers,
            "database": "postgresql" if database_url else "sqlite",
            "concurrency": args.concurrency,
            "wall_s_with_worker_boot": round(wall, 2),
            "ideal_s": round(ideal, 2),
            "run_s": round(run_s, 2),
            "run_over_ideal_pct": round(100 * (run_s - ideal) / ideal, 1),
            "upstream_s_mean": round(served_mean, 3) if served_mean else None,
            "run_over_upstream_bound_pct": (
                round(100 * (run_s / (math.ceil(items / args.concurrency) * served_mean) - 1), 1)
                if served_mean
                else None
            ),
            "wall_over_ideal_pct": round(100 * (wall - ideal) / ideal, 1),
            "item_s_mean": round(sum(spans) / len(spans), 3) if spans else None,
            "item_s_max": round(max(spans), 3) if spans else None,
            "stream_s_mean": round(sum(streams) / len(streams), 3) if streams else None,
            # Slot-seconds not inside any item, per item: the wait between an item's end and
            # the next claim on a slot (claims, polls, the database thread's queue).
            "idle_s_per_item": round((run_s * args.concurrency - sum(spans)) / items, 3),
            "worker_cpu_ms_per_item": round(1000 * cpu / items, 1),
            "statuses": statuses,
            "items_without_exactly_one_reply": sum(1 for _, n in replies if n != 1),
            "upstream_requests": requests,
        }
    finally:
        for w in workers:
            w.terminate()
            w.wait(10)
        upstream.stop()
        if database_url:
            drop_pg_database(args.database_url, database_url)
        stack.cleanup()


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url", help="PostgreSQL maintenance URL (default: SQLite)")
    parser.add_argument("--timeout", type=float, default=1800)
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
