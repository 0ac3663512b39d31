"""Compare bench: what a 6-column send adds to each column's time to first token.

    .venv/bin/python -m bench.compare                       # 10 rounds (+1 warm-up), 6 columns
    .venv/bin/python -m bench.compare --rounds 20 --columns 6 --tokens 20 --rate 100
    .venv/bin/python -m bench.compare --profile /tmp/prof   # py-spy Daphne for the whole run

It starts the stack as bench.relay does (bench/stack.py: a fresh SQLite var dir, one Daphne
process, the fake upstream in a process of its own). `--warmup` rounds (1) run first and are
left out of the figures. Each round, in one run:

1. a compare of `--columns` columns (a fresh group each round): one WebSocket client sends
   one message; each column's TTFT is from the send to that column's first text frame;
2. a single stream (one plain conversation, its own socket): the same, one column;
3. `--columns` direct clients (bench/direct.py) at once, straight to the fake upstream with
   the body the playground sent; and one direct client alone.

Added TTFT per column = compare column TTFT − direct TTFT (with as many direct requests in
flight), p50 and p99 over every column of every round, next to a single stream's added TTFT
(single − one direct). The playground and the direct client are different requests, so the
figures are percentiles against percentiles (bench.relay.added_from_send).

Wall clock moves with the machine's load; CPU time much less. So it also prints the CPU the
Daphne process spent (every thread, /proc/<pid>/task/*/schedstat, in ns) from the send to the
moment the last column's first text arrived, divided by the number of columns, next to the
same for a single stream: what each column costs the one process before anyone reads text.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import direct
from bench.client import View, open_socket, read_until, send_payload
from bench.relay import added_from_send, command_args, machine, percentile
from bench.stack import BIN, Stack

SEED_GROUPS = """
import json
from django.contrib.auth import get_user_model
from playground.compare import setup
user = get_user_model().objects.get(username="bench")
columns = setup.plan_columns([setup.ColumnSetup("empiriolabs:gemma-4-e4b")] * {columns})
print(json.dumps([setup.create_compare(user, None, f"bench {{n}}", columns).pk
                  for n in range({rounds})]))
"""


@dataclass
class Round:
    compare_ms: list[float] = field(default_factory=list)  # one per column
    single_ms: float | None = None
    direct_many_ms: list[float] = field(default_factory=list)
    direct_one_ms: float | None = None
    # Daphne's CPU from the send to the last column's first text (None: not measured).
    compare_cpu_ms: float | None = None
    single_cpu_ms: float | None = None


def cpu_ms(pid: int | None) -> float:
    """CPU time of every thread of `pid` so far, in ms (0.0 without /proc or a pid)."""
    if pid is None:
        return 0.0
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[0])
    return total / 1e6


class FirstTexts:
    """A read_until predicate's helper: Daphne's CPU when `n` replies have shown text."""

    def __init__(self, pid: int | None, n: int) -> None:
        self.pid, self.n = pid, n
        self.start = cpu_ms(pid)
        self.cpu: float | None = None

    def check(self, view: View) -> None:
        if self.cpu is None and self.pid is not None:
            texts = [i for i in view.first_text_at if view.roles.get(i) == "assistant"]
            if len(texts) >= self.n:
                self.cpu = cpu_ms(self.pid) - self.start


def column_ttfts(view: View, sent_at: float) -> list[float]:
    """Each assistant reply's first text, in ms after the send, in column order (reply id)."""
    ids = sorted(i for i, role in view.roles.items() if role == "assistant")
    return [(view.first_text_at[i] - sent_at) * 1000 for i in ids if i in view.first_text_at]


def all_final(view: View, n: int) -> bool:
    return len([i for i in view.final if view.roles.get(i) == "assistant"]) >= n


async def compare_round(
    url: str, cookie: str, group: int, tag: str, columns: int, pid: int | None = None
) -> tuple[list[float], float | None]:
    ws_url = url.replace("http://", "ws://", 1)
    from websockets.asyncio.client import connect

    ws = await connect(
        f"{ws_url}/ws/groups/{group}/",
        origin=url,
        additional_headers={"Cookie": f"sessionid={cookie}"},
        compression=None,
        proxy=None,
        max_size=None,
    )
    view = View()
    try:
        await read_until(ws, view, lambda v: v.frames >= 1, 10)  # the page as it is
        first = FirstTexts(pid, columns)
        sent_at = time.time()
        await ws.send(json.dumps({"action": "send", "text": f"compare [{tag}]: say something"}))
        await read_until(ws, view, lambda v: first.check(v) or all_final(v, columns), 60)
    finally:
        await ws.close()
    return column_ttfts(view, sent_at), first.cpu


async def single_round(
    url: str, cookie: str, conversation: int, tag: str, pid: int | None = None
) -> tuple[float | None, float | None]:
    ws = await open_socket(url, conversation, cookie)
    view = View()
    try:
        await read_until(ws, view, lambda v: v.frames >= 1, 10)
        first = FirstTexts(pid, 1)
        sent_at = time.time()
        await ws.send(send_payload(f"single [{tag}]: say something"))
        await read_until(ws, view, lambda v: first.check(v) or all_final(v, 1), 60)
    finally:
        await ws.close()
    found = column_ttfts(view, sent_at)
    return (found[-1] if found else None), first.cpu


async def run(args, stack: Stack, upstream, cookie: str, groups, conversations) -> list[Round]:
    url = stack.servers[0].url
    http = direct.new_client()
    rounds = []
    try:
        for n, (group, conversation) in enumerate(zip(groups, conversations, strict=True)):
            result = Round()
            pid = stack.servers[0].pid
            result.compare_ms, result.compare_cpu_ms = await compare_round(
                url, cookie, group, f"bench-cmp-{n}", args.columns, pid
            )
            result.single_ms, result.single_cpu_ms = await single_round(
                url, cookie, conversation, f"bench-one-{n}", pid
            )
            template = next(r["body"] for r in upstream.records() if isinstance(r["body"], dict))
            key = "sk-bench-not-a-real-key-0000"
            chat_url = upstream.base_url + "/chat/completions"
            many = await direct.run_direct(
                http, chat_url, template, key, args.columns, tag_prefix=f"direct-many-{n}"
            )
            result.direct_many_ms = [r.ttft_ms for r in many if r.ttft_ms is not None]
            one = await direct.run_direct(http, chat_url, template, key, 1, tag_prefix=f"d1-{n}")
            result.direct_one_ms = one[0].ttft_ms
            rounds.append(result)
            label = "warm-up" if n < args.warmup else "round"
            print(
                f"{label} {n}: columns {[round(v) for v in result.compare_ms]} ms, "
                f"single {result.single_ms and round(result.single_ms)} ms, "
                f"CPU {result.compare_cpu_ms and round(result.compare_cpu_ms, 1)} / "
                f"{result.single_cpu_ms and round(result.single_cpu_ms, 1)} ms, "
                f"direct×{args.columns} {[round(v) for v in result.direct_many_ms]} ms",
                flush=True,
            )
    finally:
        await http.aclose()
    return rounds[args.warmup :]


def table(rounds: list[Round], columns: int) -> str:
    compare = [v for r in rounds for v in r.compare_ms]
    many = [v for r in rounds for v in r.direct_many_ms]
    single = [r.single_ms for r in rounds if r.single_ms is not None]
    one = [r.direct_one_ms for r in rounds if r.direct_one_ms is not None]
    lines = ["| figure | p50 | p99 |", "|---|---|---|"]
    for name, values in (
        (f"TTFT from the send, {columns}-column compare (per column)", compare),
        (f"TTFT, {columns} direct clients at once", many),
        ("TTFT from the send, a single stream", single),
        ("TTFT, one direct client", one),
    ):
        lines.append(
            f"| {name} | {percentile(values, 50):.1f} ms | {percentile(values, 99):.1f} ms |"
        )
    for name, a, b in (
        (f"**added TTFT per column ({columns}-column compare)**", compare, many),
        ("**added TTFT, a single stream**", single, one),
    ):
        p50, p99 = added_from_send(a, b, 50), added_from_send(a, b, 99)
        lines.append(f"| {name} | {p50:.1f} ms | {p99:.1f} ms |")
    per_column = [r.compare_cpu_ms / columns for r in rounds if r.compare_cpu_ms is not None]
    single_cpu = [r.single_cpu_ms for r in rounds if r.single_cpu_ms is not None]
    for name, values in (
        (f"Daphne CPU, send → every first text, per column ({columns}-column compare)", per_column),
        ("Daphne CPU, send → first text, a single stream", single_cpu),
    ):
        if values:
            p50, p99 = percentile(values, 50), percentile(values, 99)
            lines.append(f"| {name} | {p50:.1f} ms | {p99:.1f} ms |")
    return "\n".join(lines)


@contextlib.contextmanager
def profiling(pid: int, path: Path | None):
    """py-spy the Daphne process (the thread holding the GIL, as bench.relay --profile) into
    `path`, a raw file for bench.pyspy_top; nothing if None."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "500"]
    command += ["--format", "raw", "--nonblocking", "--gil", "--output", str(path)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(20)
        except subprocess.TimeoutExpired:
            spy.kill()


def main(argv: list[str] | None = None) -> int:
    from bench.upstream_proc import UpstreamProcess

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="rounds run first and left out of the figures (the process's first send loads "
        "and compiles the templates: its figures are the process's start, not a send's)",
    )
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="tokens per second")
    parser.add_argument("--profile", type=Path, help="py-spy Daphne into this directory")
    args = parser.parse_args(argv)
    upstream = UpstreamProcess(args.tokens, 1 / args.rate)
    stack = Stack(upstream.base_url)
    print(f"machine: {machine()}\nvar dir: {stack.var_dir}", flush=True)
    with stack.serving(upstream):
        seed = stack.prepare(args.rounds + args.warmup)
        code = SEED_GROUPS.format(columns=args.columns, rounds=args.rounds + args.warmup)
        groups = json.loads(stack.manage("shell", "-c", code).strip().splitlines()[-1])
        (server,) = stack.start_servers(1)
        where = args.profile / f"compare-{server.pid}.txt" if args.profile else None
        with profiling(server.pid, where):
            rounds = asyncio.run(
                run(args, stack, upstream, seed.cookie, groups, seed.conversations)
            )
        if where is not None:
            print(f"profile: {where} (python -m bench.pyspy_top {where})")
        print()
        print(f"Machine: {machine()}; SQLite + in-memory channel layer, one Daphne process;")
        print("client, upstream and Daphne on the same host.")
        print(f"Command: python -m bench.compare {command_args(argv)}")
        print()
        print(table(rounds, args.columns))
        return 0


if __name__ == "__main__":
    sys.exit(main())
