"""Search and History latency at scale, on SQLite (FTS5) and PostgreSQL.

    .venv/bin/python -m bench.search                          # both backends, 10k / 100k
    .venv/bin/python -m bench.search --backend sqlite --conversations 1000 --messages 10000

For each backend a worker process gets a fresh database (a temporary var dir, or a PostgreSQL
database created on --database-url's server and dropped at the end), migrates, seeds
conversations and messages (a third in a five-member team, the rest personal to those five
users; words drawn from a Zipf-distributed vocabulary so queries range from very common to
rare), then times requests in process through Django's test client: the server's whole time
for a request (middleware, queries, template), without a network or a browser.

- search: GET /review/?q=… for a mix of common, mid, rare and absent words, two-word
  queries and phrases, each query `--reps` times; p50 and p99 over all of them.
- history: GET /review/ (first page, no filter), with filters, and a deep page by cursor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.relay import percentile
from bench.stack import ROOT, ServiceUnavailable, create_pg_database, drop_pg_database

SEED = 13
VOCABULARY = 20_000
TEAM_SIZE = 5


def _words(rng: random.Random) -> list[str]:
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    seen: dict[str, None] = {}
    while len(seen) < VOCABULARY:
        seen["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))] = None
    return list(seen)


def seed(conversations: int, messages: int) -> dict[str, Any]:
    """Users, a team, conversations and messages; the words the queries use."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from playground.accounts.models import Membership, Team
    from playground.chat.models import Attachment, Conversation, Message

    rng = random.Random(SEED)
    vocabulary = _words(rng)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    cumulative = list(_accumulate(weights))
    users = [
        get_user_model().objects.create_user(f"bench{i}", password="bench benchmark password")
        for i in range(TEAM_SIZE)
    ]
    team = Team.objects.create(name="bench team")
    Membership.objects.bulk_create([Membership(team=team, user=u) for u in users])
    now = timezone.now()
    per_conversation = max(1, messages // conversations)

    def text(n: int) -> str:
        return " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=n))

    with transaction.atomic():
        rows = []
        for i in range(conversations):
            rows.append(
                Conversation(
                    owner=users[i % TEAM_SIZE],
                    team=team if i % 3 == 0 else None,
                    title=text(5),
                    model="empiriolabs:gemma-4-e4b" if i % 4 else "aimlapi:google/gemma-3n-e4b-it",
                    system_prompt=text(20) if i % 5 == 0 else "",
                )
            )
        made = Conversation.objects.bulk_create(rows, batch_size=2000)
        for i, c in enumerate(made):
            c.updated = c.created = now - (i * (365 * 86400 / conversations)) * _SECOND
        Conversation.objects.bulk_update(made, ["updated", "created"], batch_size=2000)
        batch: list[Message] = []
        for c in made:
            for j in range(per_conversation):
                assistant = j % 2 == 1
                batch.append(
                    Message(
                        conversation=c,
                        role="assistant" if assistant else "user",
                        text=text(rng.randint(20, 120) if assistant else rng.randint(5, 40)),
                        reasoning=text(40) if assistant and rng.random() < 0.3 else "",
                        status="error" if assistant and rng.random() < 0.02 else "complete",
                        tool_calls=[{"id": "call_1", "type": "function"}]
                        if assistant and rng.random() < 0.03
                        else [],
                        created_by=c.owner,
                    )
                )
            if len(batch) >= 5000:
                Message.objects.bulk_create(batch)
                batch = []
        if batch:
            Message.objects.bulk_create(batch)
        image = Attachment.objects.create(
            owner=users[0],
            file="attachments/bench.png",
            sha256="0" * 64,
            content_type="image/png",
            size=1,
            width=1,
            height=1,
        )
        user_messages = Message.objects.filter(role="user").values_list("pk", flat=True)
        image.messages.add(*list(user_messages[: conversations // 50]))
        label = _seed_review(rng, users, team)
    sample = Message.objects.filter(role="assistant").order_by("?").first()
    assert sample is not None
    phrase = " ".join(sample.text.split()[3:5])
    return {
        "user": users[0].pk,
        "team": team.pk,
        "label": label,
        "queries": [
            vocabulary[3],  # in most messages
            vocabulary[40],
            vocabulary[400],
            vocabulary[4000],
            vocabulary[15000],  # in a handful
            "zzzabsentword",
            f"{vocabulary[10]} {vocabulary[300]}",
            f"{vocabulary[200]} {vocabulary[2000]}",
            f'"{phrase}"',
            f'"{vocabulary[0]} {vocabulary[1]}"',
        ],
    }


_SECOND = __import__("datetime").timedelta(seconds=1)


def _seed_review(rng: random.Random, users: list, team: Any) -> int:
    """Annotations on one reply in 20 (thumbs, a score, a label for one in three) and a review
    status on one conversation in 10, so History's rating, label and status filters have
    something to find and something to skip."""
    from playground.chat.models import Conversation, Message
    from playground.review.models import Annotation, Label, ReviewStatus

    label = Label.objects.create(team=team, owner=users[0], name="bench", colour="#2563eb")
    replies = list(Message.objects.filter(role="assistant").values_list("pk", flat=True))
    chosen = [pk for pk in replies if rng.random() < 0.05]
    made = Annotation.objects.bulk_create(
        [
            Annotation(
                message_id=pk,
                author=rng.choice(users),
                thumbs=rng.choice([1, -1, None]),
                score=rng.choice([1, 2, 3, 4, 5, None]),
            )
            for pk in chosen
        ],
        batch_size=2000,
    )
    Annotation.labels.through.objects.bulk_create(
        [Annotation.labels.through(annotation_id=a.pk, label_id=label.pk) for a in made[::3]],
        batch_size=2000,
    )
    statuses = ["in_review", "approved", "flagged"]
    ids = list(Conversation.objects.values_list("pk", flat=True))
    ReviewStatus.objects.bulk_create(
        [
            ReviewStatus(conversation_id=pk, status=rng.choice(statuses), set_by=users[0])
            for pk in ids
            if rng.random() < 0.1
        ],
        batch_size=2000,
    )
    return label.pk


def _accumulate(weights: list[float]):
    total = 0.0
    for w in weights:
        total += w
        yield total


def _time(client: Any, url: str, params: dict[str, str]) -> tuple[float, Any]:
    started = time.perf_counter()
    response = client.get(url, params)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{url} {params}: {response.status_code}")
    return elapsed, response


class CpuClock:
    """CPU time of this process plus, on PostgreSQL, of the server process that serves our
    connection (read from /proc: the same machine). Less sensitive than wall time to the other
    jobs sharing the cores, though the database's share is in 10 ms ticks, so it is only
    read over a batch of requests."""

    def __init__(self) -> None:
        from django.db import connection

        self.backend_stat: Path | None = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.backend_stat = Path(f"/proc/{cursor.fetchone()[0]}/stat")
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> float:
        """Seconds of CPU so far."""
        total = time.process_time()
        if self.backend_stat is not None:
            fields = self.backend_stat.read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
        return total


def _batch(client: Any, clock: CpuClock, params: dict[str, str], reps: int):
    """Wall times of `reps` requests (ms) and their mean CPU time (ms)."""
    cpu_before = clock.read()
    times = [_time(client, "/review/", params)[0] for _ in range(reps)]
    return times, (clock.read() - cpu_before) * 1000 / reps


def measure(info: dict[str, Any], reps: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from playground.review import history

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(pk=info["user"]))
    _time(client, "/review/", {})  # warm: first template load, connection
    clock = CpuClock()
    search_ms: list[float] = []
    search_cpu: list[float] = []
    per_query: dict[str, tuple[float, float]] = {}
    for query in info["queries"]:
        times, cpu = _batch(client, clock, {"q": query}, reps)
        per_query[query] = (statistics.median(times), cpu)
        search_ms += times
        search_cpu.append(cpu)
    history_cases: dict[str, dict[str, str]] = {
        "first page": {},
        "team space": {"space": str(info["team"])},
        "status=error": {"status": "error"},
        "has images": {"images": "on"},
        "has tool calls": {"tools": "on"},
        "rating=up": {"rating": "up"},
        "label": {"label": str(info["label"])},
        "review=flagged": {"review": "flagged"},
        "review=unreviewed": {"review": "unreviewed"},
        "model + date range": {
            "model": "aimlapi:google/gemma-3n-e4b-it",
            "since": "2020-01-01",
            "until": "2100-01-01",
        },
    }
    history_ms: dict[str, tuple[float, float]] = {}
    for name, params in history_cases.items():
        times, cpu = _batch(client, clock, params, reps)
        history_ms[name] = (statistics.median(times), cpu)
    # A deep page: follow "Show more" 40 times (1,000 rows down), then time that page.
    params: dict[str, str] = {}
    for _ in range(40):
        body = _time(client, "/review/", params)[1].content.decode()
        more = re.search(r'hx-get="[^"]*after=([0-9_]+)"', body)
        if more is None:
            break
        params = {"after": more[1]}
    times, cpu = _batch(client, clock, params, reps)
    history_ms["page 41 (cursor)"] = (statistics.median(times), cpu)
    return {
        "page_size": history.PAGE_SIZE,
        "search_p50": percentile(search_ms, 50),
        "search_p99": percentile(search_ms, 99),
        "search_cpu_mean": statistics.mean(search_cpu),
        "search_by_query": per_query,
        "history": history_ms,
        "load_average": os.getloadavg(),
    }


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    info = seed(args.conversations, args.messages)
    seeded_s = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    # As `make run` serves: hashed static names from the manifest, read once.
    call_command("collectstatic", "--noinput", verbosity=0)
    result = measure(info, args.reps)
    from playground.chat.models import Conversation, Message

    result.update(
        backend=connection.vendor,
        conversations=Conversation.objects.count(),
        messages=Message.objects.count(),
        seed_seconds=round(seeded_s, 1),
    )
    print(json.dumps(result))


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    var_dir = tempfile.mkdtemp(prefix="pg-search-bench-")
    env["PLAYGROUND_VAR_DIR"] = var_dir
    database_url = None
    if backend == "postgres":
        database_url = create_pg_database(args.database_url, prefix="playground_search_bench")
        env["DATABASE_URL"] = database_url
    try:
        command = [
            sys.executable,
            "-m",
            "bench.search",
            "--worker",
            "--conversations",
            str(args.conversations),
            "--messages",
            str(args.messages),
            "--reps",
            str(args.reps),
        ]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{backend} worker failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if database_url:
            drop_pg_database(args.database_url, database_url)
        import shutil

        shutil.rmtree(var_dir, ignore_errors=True)


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | conversations / messages | search p50 / p99 (wall) | search CPU per request "
        "| History first page (wall / CPU) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        wall, cpu = r["history"]["first page"]
        lines.append(
            f"| {r['backend']} | {r['conversations']:,} / {r['messages']:,} "
            f"| {r['search_p50']:.1f} / {r['search_p99']:.1f} ms "
            f"| {r['search_cpu_mean']:.1f} ms | {wall:.1f} / {cpu:.1f} ms |"
        )
    for r in results:
        load = ", ".join(f"{x:.1f}" for x in r["load_average"])
        lines.append(f"\n{r['backend']} (load average at the end {load})")
        lines.append(f"History, {r['page_size']} rows a page: median wall / mean CPU (ms)")
        lines += [f"  {name:<22} {w:7.1f} / {c:6.1f}" for name, (w, c) in r["history"].items()]
        lines.append("search: median wall / mean CPU per query (ms)")
        lines += [
            f"  {q[:40]!r:<44} {w:7.1f} / {c:6.1f}" for q, (w, c) in r["search_by_query"].items()
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=20, help="times each request is timed")
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL maintenance database; a fresh one is created beside it and dropped",
    )
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        try:
            results.append(run_backend(backend, args))
        except ServiceUnavailable as exc:
            print(f"{backend}: skipped, {exc}", file=sys.stderr)
    print(json.dumps(results, indent=2) if args.json else report(results))


if __name__ == "__main__":
    main()
