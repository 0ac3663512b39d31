"""Usage page and budget check timings with 100k saved replies, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.usage                                   # SQLite (a fresh file)
    .venv/bin/python -m bench.usage --database-url postgres://postgres@127.0.0.1:5432/postgres

With --database-url, a fresh database is created on that server and dropped at the end (the
URL names the maintenance database). The bench seeds one team of 20 members with `--replies`
saved replies over 90 days (4 models), then times, in this process through Django's test
client (so: the server's time, no network), the Usage page for an admin over 30 and 90 days,
for a member over 90 days, the CSV of the member table, and the budget check a run starts
with. It prints the median, min and max wall time of `--repeat` runs and the median CPU time
of this process (on PostgreSQL the database's own CPU is in its server, not in that figure).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = [
    "empiriolabs:gemma-4-e4b",
    "empiriolabs:gemma-3-27b-it",
    "aimlapi:google/gemma-3-27b-it",
    "aimlapi:google/gemma-3n-e4b-it",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL maintenance DB URL; default SQLite")
    parser.add_argument("--replies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.replies, args.repeat)
        return
    from bench.stack import create_pg_database, drop_pg_database

    with tempfile.TemporaryDirectory(prefix="usage-bench-") as var_dir:
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.update(
            DJANGO_SETTINGS_MODULE="playground.settings",
            PLAYGROUND_VAR_DIR=var_dir,
            PLAYGROUND_SECRET_KEY=secrets.token_urlsafe(50),
            PLAYGROUND_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
        )
        database_url = None
        if args.database_url:
            database_url = create_pg_database(args.database_url, prefix="playground_usage")
            env["DATABASE_URL"] = database_url
        try:
            command = [sys.executable, "-m", "bench.usage", "--child"]
            command += ["--replies", str(args.replies), "--repeat", str(args.repeat)]
            subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=1800)
        finally:
            if database_url and args.database_url:
                drop_pg_database(args.database_url, database_url)


def child(replies: int, repeat: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings

    call_command("migrate", verbosity=0)
    team, admin, member = seed(replies)
    plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    from django.conf import settings

    storages = {"default": settings.STORAGES["default"], "staticfiles": plain}
    results = {"backend": connection.vendor, "replies": replies}
    with override_settings(ALLOWED_HOSTS=["testserver"], STORAGES=storages, STATIC_ROOT=None):
        admin_client, member_client = Client(), Client()
        admin_client.force_login(admin)
        member_client.force_login(member)
        team_url = f"/teams/{team.pk}/usage/"
        results["admin, 30 days"] = timed(admin_client, team_url, repeat)
        results["admin, 90 days"] = timed(admin_client, team_url + "?start=" + start(89), repeat)
        results["member, 90 days"] = timed(member_client, team_url + "?start=" + start(89), repeat)
        csv_url = f"{team_url}member.csv?start={start(89)}"
        results["admin CSV, 90 days"] = timed(admin_client, csv_url, repeat)
    results["budget check"] = timed_check(team, member, repeat)
    print(json.dumps(results, indent=2))


def start(days_back: int) -> str:
    from datetime import timedelta

    from django.utils import timezone

    return (timezone.localdate() - timedelta(days=days_back)).isoformat()


def seed(replies: int):
    """A team of 20 with `replies` replies spread evenly over the last 90 days."""
    import random
    from datetime import timedelta
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from playground.accounts.models import Budget, Membership, Team
    from playground.chat.models import Conversation, Message

    users = [get_user_model().objects.create_user(f"member{i}") for i in range(20)]
    team = Team.create(name="Bench", owner=users[0])
    for user in users[1:]:
        team.add_member(user, Membership.Role.MEMBER)
    conversations = [
        Conversation.objects.create(owner=users[i % 20], team=team, model=MODELS[0])
        for i in range(200)
    ]
    Budget.set(team=team, user=None, monthly_cost=Decimal(10**6), daily_messages=10**6, by=users[0])
    Budget.set(team=team, user=users[1], monthly_cost=Decimal(10**5), daily_messages=10**5,
               by=users[0])  # fmt: skip
    created = Message._meta.get_field("created")
    created.auto_now_add = False  # type: ignore[attr-defined]  # the bench sets the dates
    rng = random.Random(12)
    now = timezone.now()
    span = timedelta(days=90).total_seconds()
    batch = []
    try:
        for n in range(replies):
            conversation = conversations[n % 200]
            batch.append(
                Message(
                    conversation=conversation,
                    team=team,
                    role=Message.Role.ASSISTANT,
                    model=MODELS[n % 4],
                    created_by_id=users[rng.randrange(20)].pk,
                    input_tokens=rng.randrange(20, 2000),
                    output_tokens=rng.randrange(10, 1000),
                    usage={"prompt_tokens": 100, "completion_tokens": 50},
                    cost=Decimal("0.03"),
                    ttft_ms=round(rng.uniform(80, 900), 1),
                    total_ms=2000.0,
                    text="tok " * 40,
                    created=now - timedelta(seconds=span * n / replies),
                )
            )
            if len(batch) == 5000:
                Message.objects.bulk_create(batch)
                batch = []
        Message.objects.bulk_create(batch)
    finally:
        created.auto_now_add = True  # type: ignore[attr-defined]
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            # Autovacuum runs after this many inserts (PostgreSQL 13+): it marks the pages
            # all-visible, so the Usage query can read the covering index alone.
            cursor.execute("VACUUM ANALYZE chat_message")
        cursor.execute("ANALYZE")  # fresh statistics, as autovacuum would have by now
    return team, users[0], users[1]


def timed(client, url: str, repeat: int) -> dict[str, float]:
    client.get(url)  # warm the caches (templates, catalog, connection)
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
        assert response.status_code == 200, response.status_code
    return summary(walls, cpus)


def timed_check(team, user, repeat: int) -> dict[str, float]:
    from decimal import Decimal

    from playground.chat import budgets

    budgets.check(user, team.pk, Decimal("0.03"))
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        budgets.check(user, team.pk, Decimal("0.03"))
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return summary(walls, cpus)


def summary(walls: list[float], cpus: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(walls), 1),
        "min_ms": round(min(walls), 1),
        "max_ms": round(max(walls), 1),
        "cpu_median_ms": round(statistics.median(cpus), 1),
    }


if __name__ == "__main__":
    main()
