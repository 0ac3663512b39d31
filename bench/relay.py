"""Relay benchmark: N WebSocket conversations against a real Daphne fed by the fake upstream.

    .venv/bin/python -m bench.relay                       # everything, embedded default
    .venv/bin/python -m bench.relay --streams 200 --tokens 100 --rate 50
    .venv/bin/python -m bench.relay --processes 2 \\
        --database-url postgres://postgres@127.0.0.1:5432/postgres --redis-url redis://127.0.0.1:6379/14

It starts everything itself (fresh var dir or fresh PostgreSQL database, migrate, a user with a
key, the fake upstream in its own process, Daphne), runs the scenarios and prints one table.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import functools
import json
import math
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import client, direct
from bench.client import StreamResult
from bench.direct import DirectResult
from bench.seed import API_KEY
from bench.stack import (
    BIN,
    Stack,
    cpu_seconds,
    create_pg_database,
    drop_pg_database,
    flush_redis,
    rss_bytes,
)

CHECKPOINT_INTERVAL = 2.0  # the target: at most one write per 2 s per stream, plus the final


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def added_from_send(from_send_ms: list[float], direct_ms: list[float], p: float) -> float:
    """Added TTFT from the send at percentile p: the playground client's TTFT from its send
    minus a direct client's TTFT to the same upstream, percentile against percentile (the two
    sets are different requests, so there is no pairing to subtract within)."""
    return percentile(from_send_ms, p) - percentile(direct_ms, p)


def cpu_ms_per_token(cpu_s: float, turns: int, cpu_ms_per_turn: float, tokens: int) -> float:
    """Daphne CPU over a scenario of long replies, minus what its turns cost (turns × the CPU
    of a 1-token turn), per token delivered."""
    if tokens <= 0:
        return math.nan
    return (cpu_s * 1000 - turns * cpu_ms_per_turn) / tokens


def statements_by_phase(
    results: list[StreamResult], records: list[dict[str, Any]], log: list[tuple[float, str]]
) -> tuple[list[int], list[int]]:
    """For each turn that reached the upstream: the SQL statements Daphne ran from its send to
    the upstream's receipt of its request, and from its send to its first text on the client
    (all wall-clock times). Only meaningful for turns that do not overlap (the turns scenario
    spaces them out)."""
    received = {r["tag"]: r["received_wall"] for r in records if r.get("tag")}
    times = sorted(t for t, _ in log)
    before_upstream: list[int] = []
    before_token: list[int] = []
    for r in results:
        if r.tag not in received or r.first_text_at is None:
            continue
        start = bisect.bisect_left(times, r.sent_at)
        before_upstream.append(bisect.bisect_left(times, received[r.tag]) - start)
        before_token.append(bisect.bisect_left(times, r.first_text_at) - start)
    return before_upstream, before_token


def count_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """after − before, per key, leaving out zeros."""
    keys = sorted(set(after) | set(before))
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in diff.items() if v}


def gaps_in(arrivals: list[list[float]], start: float, end: float) -> list[float]:
    """Seconds between consecutive frames of each stream, for the frames that arrived in
    [start, end) (the gap is counted where it ends, so a stall the window ends is in it)."""
    gaps = []
    for times in arrivals:
        gaps += [b - a for a, b in zip(times, times[1:], strict=False) if start <= b < end]
    return gaps


@dataclass
class ProcessMeter:
    """CPU seconds and peak RSS of some processes over a stretch of time."""

    pids: list[int]
    cpu0: float = 0.0
    cpu: float = 0.0
    rss0: int = 0
    rss_peak: int = 0
    _task: asyncio.Task | None = None

    def rss(self) -> int:
        return sum(rss_bytes(p) for p in self.pids)

    def cpu_now(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    async def __aenter__(self) -> ProcessMeter:
        self.cpu0, self.rss0 = self.cpu_now(), self.rss()
        self.rss_peak = self.rss0
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            self.rss_peak = max(self.rss_peak, self.rss())
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.rss_peak = max(self.rss_peak, self.rss())
        self.cpu = self.cpu_now() - self.cpu0


# -- running streams ----------------------------------------------------------------------------


async def run_streams(
    targets: list[tuple[str, int]],
    cookie: str,
    *,
    tag_prefix: str,
    ramp: float = 0.0,
    timeout: float = 120.0,
    before_send: Callable[[], Awaitable[None]] | None = None,
) -> list[StreamResult]:
    """One stream per (server URL, conversation id): connect them all, then send the prompts
    spread evenly over `ramp` seconds, and read every reply to its end. `before_send` runs once
    every socket has its transcript, just before the first prompt goes out."""
    gate = asyncio.Event()
    all_ready = asyncio.Event()
    waiting = len(targets)

    def ready() -> None:
        nonlocal waiting
        waiting -= 1
        if waiting == 0:
            all_ready.set()

    async def open_gate() -> None:
        await all_ready.wait()
        if before_send is not None:
            await before_send()
        gate.set()

    opener = asyncio.create_task(open_gate())

    n = len(targets)
    tasks = [
        asyncio.create_task(
            client.run_stream(
                url,
                conversation_id,
                cookie,
                f"{tag_prefix}-{i}",
                gate=gate,
                delay=ramp * i / n if n > 1 else 0.0,
                on_ready=ready,
                timeout=timeout,
            )
        )
        for i, (url, conversation_id) in enumerate(targets)
    ]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        opener.cancel()


@dataclass
class StreamStats:
    """Figures for one batch of streams; see bench/README.md."""

    streams: int
    ok: int
    lost: int
    duplicated: int
    wrong_text: int
    added_ttft_ms: list[float]  # the return leg: upstream first chunk → socket
    client_ttft_ms: list[float]
    tokens: int
    makespan_s: float
    frames_per_reply: list[int]
    delta_frames_per_reply: list[int]
    delta_fps: list[float]
    delta_wire_ratio: float
    all_wire_ratio: float
    message_updates: list[int]
    writes_over_budget: int
    row_writes_per_turn: float
    writes_by_table: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def analyse(
    results: list[StreamResult],
    records: list[dict[str, Any]],
    n_tokens: int,
    writes: list[tuple[str, str, str]] | None = None,
) -> StreamStats:
    by_tag = {r["tag"]: r for r in records if r.get("tag")}
    expected = client.expected_text(n_tokens)
    lost = duplicated = wrong = 0
    added, from_send, fps = [], [], []
    for r in results:
        lost_r, dup_r = client.check_tokens(r.text, n_tokens)
        lost, duplicated = lost + lost_r, duplicated + dup_r
        wrong += r.text != expected
        rec = by_tag.get(r.tag)
        if r.first_text_at and rec and rec.get("first_token_sent_wall"):
            added.append((r.first_text_at - rec["first_token_sent_wall"]) * 1000)
        if r.first_text_at:
            from_send.append((r.first_text_at - r.sent_at) * 1000)
        if r.first_text_at and r.last_text_at and r.last_text_at > r.first_text_at:
            fps.append((r.delta_frames - 1) / (r.last_text_at - r.first_text_at))
    done = [r for r in results if r.done_at]
    makespan = (max(r.done_at for r in done) - min(r.sent_at for r in done)) if done else math.nan
    content = sum(r.content_bytes for r in results) or 1

    updates: list[int] = []
    over = 0
    by_table: Counter[str] = Counter()
    row_writes = 0.0
    if writes is not None:
        message_updates = Counter(
            row for tbl, op, row in writes if tbl == "chat_message" and op == "U"
        )
        for r in results:
            if r.reply_id is None:
                continue
            count = message_updates.get(str(r.reply_id), 0)
            updates.append(count)
            duration = (r.done_at or r.sent_at) - r.sent_at
            if count > math.floor(duration / CHECKPOINT_INTERVAL) + 1:
                over += 1
        by_table = Counter(f"{tbl}:{op}" for tbl, op, _ in writes)
        row_writes = len(writes) / max(1, len(results))
    return StreamStats(
        streams=len(results),
        ok=sum(1 for r in results if r.status == "complete" and not r.error),
        lost=lost,
        duplicated=duplicated,
        wrong_text=wrong,
        added_ttft_ms=added,
        client_ttft_ms=from_send,
        tokens=sum(n_tokens - client.check_tokens(r.text, n_tokens)[0] for r in results),
        makespan_s=makespan,
        frames_per_reply=[r.frames for r in results],
        delta_frames_per_reply=[r.delta_frames for r in results],
        delta_fps=fps,
        delta_wire_ratio=sum(r.delta_wire_bytes for r in results) / content,
        all_wire_ratio=sum(r.wire_bytes for r in results) / content,
        message_updates=updates,
        writes_over_budget=over,
        row_writes_per_turn=row_writes,
        writes_by_table=dict(by_table),
        errors=[f"{r.tag}: {r.error}" for r in results if r.error][:5],
    )


# -- scenarios ----------------------------------------------------------------------------------


@dataclass
class Window:
    """Daphne CPU seconds and SQL statements from the first prompt sent to the replies done
    (plus a short settle for the last writes): socket connects are outside it."""

    cpu0: float = 0.0
    cpu_s: float = 0.0
    queries0: dict[str, int] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)

    @property
    def statements(self) -> int:
        return sum(self.queries.values())


@dataclass
class Bench:
    stack: Stack
    upstream: Any  # UpstreamProcess (or anything with records/set_default/reset/pid)
    cookie: str
    conversations: list[int]
    profile_dir: Path | None = None
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    template: dict[str, Any] | None = None  # a body the playground sent upstream
    # The last streams() batch: its client results and the upstream's records.
    last: tuple[list[StreamResult], list[dict[str, Any]]] = ([], [])
    http: httpx.AsyncClient | None = None  # the direct client's
    cpu_ms_per_turn: float | None = None  # from the `turns` scenario
    # s the upstream waits before each answer (a real provider's own time to first token)
    first_token_delay: float = 0.0

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.stack.servers]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.stack.servers]

    def take(self, n: int) -> list[tuple[str, int]]:
        """n fresh conversations, spread round-robin over the Daphne processes."""
        ids, self.conversations = self.conversations[:n], self.conversations[n:]
        if len(ids) < n:
            raise RuntimeError("not enough seeded conversations")
        return [(self.urls[i % len(self.urls)], cid) for i, cid in enumerate(ids)]

    def row(self, scenario: str, figure: str, value: str, target: str = "") -> None:
        self.rows.append((scenario, figure, value, target))
        print(f"  {figure}: {value}" + (f"   (target {target})" if target else ""), flush=True)

    @contextlib.contextmanager
    def provider_delay(self, ms: float):
        """Within the block, every upstream answer (the playground's, a peer's, the direct
        client's) waits `ms` before its first token: the upstream is set from
        first_token_delay before each batch."""
        self.first_token_delay = ms / 1000
        try:
            yield
        finally:
            self.first_token_delay = 0.0

    @contextlib.contextmanager
    def profiling(self, name: str):
        if self.profile_dir is None:
            yield
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        spies = [
            subprocess.Popen(
                [
                    str(BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    # Only the thread holding the GIL: where Daphne's CPU goes, not threads
                    # waiting on a queue or the GIL (which otherwise fill a third of it).
                    "--gil",
                    "--output",
                    str(self.profile_dir / f"{name}-{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in self.pids
        ]
        time.sleep(0.5)
        try:
            yield
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                try:
                    spy.wait(20)
                except subprocess.TimeoutExpired:
                    spy.kill()

    async def streams(
        self, name: str, n: int, tokens: int, interval: float, ramp: float
    ) -> tuple[StreamStats, ProcessMeter, Window]:
        self.upstream.set_default(tokens, interval, self.first_token_delay)
        self.upstream.reset()
        writes_before = len(self.stack.writes())
        targets = self.take(n)
        window = Window()
        meter = ProcessMeter(self.pids)

        profile = contextlib.ExitStack()

        async def at_send() -> None:
            # The profile covers the CPU window: the sends, not the sockets' connects.
            profile.enter_context(self.profiling(name))
            window.queries0 = await asyncio.to_thread(self.stack.queries)
            window.cpu0 = meter.cpu_now()

        with profile:
            async with meter:
                results = await run_streams(
                    targets,
                    self.cookie,
                    tag_prefix=f"bench-{name}",
                    ramp=ramp,
                    before_send=at_send,
                )
                await asyncio.sleep(0.3)  # let the final writes land
                window.cpu_s = meter.cpu_now() - window.cpu0
        window.queries = count_delta(await asyncio.to_thread(self.stack.queries), window.queries0)
        writes = self.stack.writes()[writes_before:]
        records = self.upstream.records()
        if self.template is None:
            self.template = next((r["body"] for r in records if isinstance(r["body"], dict)), None)
        stats = analyse(results, records, tokens, writes)
        self.last = (results, records)
        self.raw[name] = {
            "stats": stats.__dict__,
            "cpu_s": meter.cpu,
            "rss0": meter.rss0,
            "rss_peak": meter.rss_peak,
            "window_cpu_s": window.cpu_s,
            "window_queries": window.queries,
        }
        return stats, meter, window

    async def direct(self, name: str, n: int, ramp: float) -> list[DirectResult]:
        """n requests of the direct client at the pace the playground streams were sent, to
        the upstream as it is set now (the same tokens and interval)."""
        if self.template is None:
            raise RuntimeError("no playground request recorded to replay")
        if self.http is None:
            self.http = direct.new_client()
        results = await direct.run_direct(
            self.http,
            self.upstream.base_url + "/chat/completions",
            self.template,
            API_KEY,
            n,
            tag_prefix=f"direct-{name}",
            ramp=ramp,
        )
        self.raw.setdefault(name, {})["direct"] = [r.__dict__ for r in results]
        return results

    def ttft_rows(
        self,
        label: str,
        from_send: list[float],
        return_leg: list[float],
        direct_results: list[DirectResult],
        target: str = "",
    ) -> None:
        direct_ms = [r.ttft_ms for r in direct_results if r.ttft_ms is not None]
        self.row(
            label,
            "added TTFT from send p50 / p99",
            f"{added_from_send(from_send, direct_ms, 50):.1f} / "
            f"{added_from_send(from_send, direct_ms, 99):.1f} ms",
            target,
        )
        self.row(
            label,
            "TTFT from send: playground / direct client, p50 / p99",
            f"{percentile(from_send, 50):.1f} / {percentile(from_send, 99):.1f} ms"
            f" (n={len(from_send)}); {percentile(direct_ms, 50):.1f} /"
            f" {percentile(direct_ms, 99):.1f} ms (n={len(direct_ms)})",
        )
        self.row(
            label,
            "return leg: upstream first chunk → socket p50 / p99",
            f"{percentile(return_leg, 50):.1f} / {percentile(return_leg, 99):.1f} ms",
        )
        errors = [f"{r.tag}: {r.error}" for r in direct_results if r.error][:3]
        if errors:
            self.row(label, "direct client errors", "; ".join(errors))

    async def single(
        self, reps: int, tokens: int, interval: float, provider_ms: float = 0.0
    ) -> None:
        """`reps` one-stream turns against an upstream that answers at once, then (with
        `provider_ms`) as many against one that takes that long to its first token, as a
        real provider does: the turn's rows are then written while it works, and what is
        left is what the playground adds to a real user's wait."""
        print(
            f"[single] {reps} sequential 1-stream replies of {tokens} tokens, each followed by"
            " one direct request",
            flush=True,
        )
        # The first turn after start pays imports, template loading and the first upstream
        # connection: shown on its own, left out of the percentiles (and so for the direct
        # client's first request).
        warm, _, _ = await self.streams("single-warmup", 1, tokens, interval, 0.0)
        warm_direct = await self.direct("single-warmup", 1, 0.0)
        self.row(
            "1 stream",
            "first turn after start (not in the figures): playground / direct TTFT",
            f"{percentile(warm.client_ttft_ms, 50):.1f} / "
            f"{percentile([r.ttft_ms for r in warm_direct if r.ttft_ms], 50):.1f} ms",
        )
        await self.single_turns("1 stream", "single", reps, tokens, interval, "≤ 5 / ≤ 15 ms")
        if provider_ms > 0:
            label = f"1 stream, provider's first token after {provider_ms:g} ms"
            print(f"[{label}] {reps} more, each followed by one direct request", flush=True)
            with self.provider_delay(provider_ms):
                await self.single_turns(label, "single-provider", reps, tokens, interval)

    async def single_turns(
        self, label: str, name: str, reps: int, tokens: int, interval: float, target: str = ""
    ) -> None:
        """`reps` one-stream turns, each followed by one direct request to the same upstream."""
        from_send: list[float] = []
        return_leg: list[float] = []
        direct_results: list[DirectResult] = []
        for i in range(reps):
            stats, _, _ = await self.streams(f"{name}{i}", 1, tokens, interval, 0.0)
            from_send += stats.client_ttft_ms
            return_leg += stats.added_ttft_ms
            direct_results += await self.direct(f"{name}{i}", 1, 0.0)
        self.ttft_rows(label, from_send, return_leg, direct_results, target)

    async def burst(self, n: int, tokens: int, rate: float) -> None:
        label = f"{n} streams at once"
        print(f"[{label}] {tokens} tokens at {rate:g} tok/s, then {n} direct requests", flush=True)
        s, _, _ = await self.streams("burst", n, tokens, 1 / rate if rate else 0, 0.0)
        direct_results = await self.direct("burst", n, 0.0)
        self.row(
            label,
            "completed / lost / duplicated deltas",
            f"{s.ok}/{s.streams} / {s.lost} / {s.duplicated}",
            "all / 0 / 0",
        )
        if s.errors:
            self.row(label, "errors", "; ".join(s.errors))
        self.ttft_rows(label, s.client_ttft_ms, s.added_ttft_ms, direct_results, "p99 ≤ 2.5 s")

    async def concurrent(self, n: int, tokens: int, rate: float, ramp: float) -> None:
        label = f"{n} streams over {ramp:g} s"
        print(
            f"[{label}] {tokens} tokens at {rate:g} tok/s, sends spread over {ramp:g}s, then"
            f" {n} direct requests at the same pace",
            flush=True,
        )
        s, meter, _ = await self.streams("concurrent", n, tokens, 1 / rate if rate else 0, ramp)
        direct_results = await self.direct("concurrent", n, ramp)
        self.row(
            label,
            "completed / lost / duplicated deltas",
            f"{s.ok}/{s.streams} / {s.lost} / {s.duplicated}",
            "all / 0 / 0",
        )
        if s.errors:
            self.row(label, "errors", "; ".join(s.errors))
        self.ttft_rows(label, s.client_ttft_ms, s.added_ttft_ms, direct_results)
        self.row(
            label,
            "aggregate tokens/s delivered",
            f"{s.tokens / s.makespan_s:,.0f} ({s.tokens:,} tokens in {s.makespan_s:.2f} s)",
        )
        self.row(
            label,
            "delta frames/s per stream p50 / max",
            f"{percentile(s.delta_fps, 50):.1f} / {max(s.delta_fps, default=math.nan):.1f}",
            "≤ 20",
        )
        self.row(
            label,
            "frames per reply p50 (deltas / all)",
            f"{percentile(s.delta_frames_per_reply, 50):.0f} / "
            f"{percentile(s.frames_per_reply, 50):.0f}",
        )
        self.row(
            label,
            "wire bytes ÷ content bytes (deltas / all frames)",
            f"{s.delta_wire_ratio:.2f} / {s.all_wire_ratio:.2f}",
            "≤ 1.5",
        )
        self.row(
            label,
            "chat_message UPDATEs per reply p50 / max (over budget)",
            f"{percentile(s.message_updates, 50):.0f} / {max(s.message_updates, default=0)}"
            f" ({s.writes_over_budget} replies)",
            "≤ 1 per 2 s + final",
        )
        self.row(label, "row writes per turn, all tables", f"{s.row_writes_per_turn:.1f}")
        self.row(
            label,
            "RSS per open stream",
            f"{(meter.rss_peak - meter.rss0) / n / 1024:.0f} KB "
            f"(peak {meter.rss_peak / 2**20:.0f} MB)",
        )
        self.row(
            label,
            "Daphne CPU s per 1,000 tokens",
            f"{meter.cpu / max(1, s.tokens) * 1000:.3f} ({meter.cpu:.1f} s total)",
        )

    async def turns(self, k: int, spacing: float) -> None:
        label = f"{k} 1-token turns"
        print(f"[{label}] one sent every {spacing:g} s", flush=True)
        s, _, window = await self.streams("turns", k, 1, 0.0, spacing * k)
        if s.ok != k:
            self.row(label, "completed", f"{s.ok}/{k}; " + "; ".join(s.errors))
        self.cpu_ms_per_turn = window.cpu_s * 1000 / k
        self.row(
            label,
            "Daphne CPU ms per turn start (1-token turn)",
            f"{self.cpu_ms_per_turn:.1f} ({window.cpu_s:.2f} s for {k} turns)",
            "≤ 10",
        )
        by_kind = ", ".join(f"{kind} {n / k:g}" for kind, n in window.queries.items())
        self.row(label, "SQL statements per turn, all", f"{window.statements / k:g} ({by_kind})")
        log = await asyncio.to_thread(self.stack.statements)
        upstream, token = statements_by_phase(*self.last, log)
        self.row(
            label,
            "SQL statements from the send to the upstream request; to the first token, p50 / max",
            f"{percentile([float(n) for n in upstream], 50):g} / {max(upstream, default=0)}; "
            f"{percentile([float(n) for n in token], 50):g} / {max(token, default=0)} "
            f"(n={len(upstream)})",
            "≤ 4 on the hot path",
        )

    async def long(self, n: int, tokens: int, rate: float, ramp: float) -> None:
        label = f"{n} long replies"
        print(f"[{label}] {tokens} tokens at {rate:g} tok/s, sends over {ramp:g} s", flush=True)
        s, _, window = await self.streams("long", n, tokens, 1 / rate if rate else 0, ramp)
        if s.ok != n or s.lost or s.duplicated:
            self.row(
                label,
                "completed / lost / duplicated deltas",
                f"{s.ok}/{s.streams} / {s.lost} / {s.duplicated}",
            )
        if self.cpu_ms_per_turn is None:
            per_token = "(needs the turns scenario)"
        else:
            ms = cpu_ms_per_token(window.cpu_s, n, self.cpu_ms_per_turn, s.tokens)
            per_token = (
                f"{ms:.3f} (({window.cpu_s:.2f} s − {n} × {self.cpu_ms_per_turn:.1f} ms)"
                f" ÷ {s.tokens:,} tokens)"
            )
        self.row(label, "Daphne CPU ms per token", per_token)
        self.row(
            label,
            "SQL statements per turn",
            f"{window.statements / n:g} (UPDATE {window.queries.get('UPDATE', 0) / n:g})",
        )

    async def ceiling(self, n: int, tokens: int) -> None:
        label = f"ceiling ({n}×{tokens})"
        print(f"[{label}] upstream interval 0", flush=True)
        s, meter, _ = await self.streams("ceiling", n, tokens, 0.0, 0.0)
        up = self.upstream
        self.row(
            label,
            "relay ceiling, tokens/s delivered",
            f"{s.tokens / s.makespan_s:,.0f} ({s.ok}/{s.streams} ok, lost {s.lost}, "
            f"dup {s.duplicated})",
        )
        self.row(
            label,
            "Daphne CPU s per 1,000 tokens",
            f"{meter.cpu / max(1, s.tokens) * 1000:.3f} (Daphne busy "
            f"{meter.cpu / s.makespan_s:.0%} of one core)",
        )
        self.raw["ceiling"]["upstream_pid"] = getattr(up, "pid", None)

    async def idle(self, k: int) -> None:
        """Two waves of k idle sockets, the second opened beside the first. The first wave
        may fill memory that earlier scenarios freed and the process kept (an allocator
        rarely hands it back), so its RSS growth can be well below what each socket holds;
        the second wave's growth is the cost of one more socket."""
        label = f"{k} idle sockets"
        print(f"[{label}] twice: a first wave, then a second beside it", flush=True)
        targets = self.take(2 * k + 50)
        warm, waves = targets[:50], [targets[50 : 50 + k], targets[50 + k :]]
        # Warm up: the first sockets pay for imports, caches and pools, not per socket.
        warm_socks = [await client.hold_idle(u, c, self.cookie) for u, c in warm]
        for ws in warm_socks:
            await ws.close()
        await asyncio.sleep(1.0)
        meter = ProcessMeter(self.pids)
        limit = asyncio.Semaphore(20)

        async def one(url: str, cid: int):
            async with limit:
                return await client.hold_idle(url, cid, self.cookie)

        opened: list[Any] = []
        opening_cpu = 0.0
        growth: list[str] = []
        per_socket: list[float] = []
        for wave in waves:
            rss0, cpu0 = meter.rss(), meter.cpu_now()
            socks = await asyncio.gather(*(one(u, c) for u, c in wave), return_exceptions=True)
            now_open = [s for s in socks if not isinstance(s, BaseException)]
            opened += now_open
            await asyncio.sleep(2.0)
            rss1 = meter.rss()
            per_socket.append((rss1 - rss0) / max(1, len(now_open)) / 1024)
            growth.append(
                f"{per_socket[-1]:.1f} KB ({len(now_open)}/{k} open, "
                f"{rss0 / 2**20:.0f} → {rss1 / 2**20:.0f} MB)"
            )
            if len(growth) == 1:
                opening_cpu = (meter.cpu_now() - cpu0) / max(1, len(now_open))
        cpu_idle0 = meter.cpu_now()
        await asyncio.sleep(5.0)
        idle_cpu = (meter.cpu_now() - cpu_idle0) / 5.0
        self.row(
            label,
            "RSS growth per idle socket, first wave; second wave beside it",
            "; ".join(growth),
            "≤ 30 KB",
        )
        self.raw["idle"] = {"kb_per_socket": per_socket}
        self.row(
            label,
            f"CPU while {len(opened)} sockets idle; CPU per socket opened (first wave)",
            f"{idle_cpu:.1%} of a core; {opening_cpu * 1000:.1f} ms",
        )
        for ws in opened:
            await ws.close()

    async def storm(self, n: int, streams: int, rate: float, timeout: float) -> None:
        """n sockets that all start their handshake at once, while `streams` replies stream:
        how many get in, how long they wait, and whether the running replies stall."""
        label = f"storm of {n} sockets"
        print(f"[{label}] while {streams} replies stream at {rate:g} tok/s", flush=True)
        before_s = 3.0
        # Long enough to outlast the storm; stopped once it is over.
        tokens = int(rate * (before_s + timeout + 10))
        self.upstream.set_default(tokens, 1 / rate)
        self.upstream.reset()
        stream_targets, storm_targets = self.take(streams), self.take(n)
        arrivals: list[list[float]] = [[] for _ in stream_targets]
        storm_over = asyncio.Event()
        meter = ProcessMeter(self.pids)

        async def stream(i: int, url: str, cid: int) -> None:
            ws = await client.open_socket(url, cid, self.cookie)
            try:
                await asyncio.wait_for(ws.recv(), 10)  # the transcript
                await ws.send(client.send_payload(client.prompt_for(f"bench-storm-{i}")))
                while not storm_over.is_set():
                    with contextlib.suppress(TimeoutError):
                        frame = await asyncio.wait_for(ws.recv(), 0.5)
                        if isinstance(frame, str) and frame.startswith("+t"):
                            arrivals[i].append(time.monotonic())
                await ws.send(client.STOP)
            finally:
                await ws.close()

        # The storm's handshakes run in a process of their own (see client.storm_process).
        spawn = multiprocessing.get_context("spawn")
        parent, child = spawn.Pipe()
        storm = spawn.Process(
            target=client.storm_process, args=(storm_targets, self.cookie, timeout, child)
        )
        running = [asyncio.create_task(stream(i, u, c)) for i, (u, c) in enumerate(stream_targets)]
        storm.start()
        try:
            await asyncio.sleep(1.0 + before_s)  # first tokens, then the quiet baseline
            assert await asyncio.to_thread(parent.recv) == "ready"
            async with meter:
                storm_start = time.monotonic()
                parent.send("go")
                outcomes, storm_end = await asyncio.wait_for(
                    asyncio.to_thread(parent.recv), timeout + 10
                )
            # Streams keep running a little past the storm, so its last gaps have an end.
            await asyncio.sleep(1.0)
            storm_over.set()
            await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 20)
        finally:
            storm_over.set()
            for task in running:
                task.cancel()
            with contextlib.suppress(OSError):
                parent.send("close")
            await asyncio.to_thread(storm.join, 30)
            if storm.is_alive():
                storm.kill()

        ok_times = [t * 1000 for kind, t in outcomes if kind == "ok"]
        failures = Counter(kind for kind, _ in outcomes if kind != "ok")
        why = ", ".join(f"{kind} {count}" for kind, count in failures.most_common())
        self.row(
            label,
            "handshakes ok / failed",
            f"{len(ok_times)} / {n - len(ok_times)}" + (f" ({why})" if why else ""),
            f"{n} / 0",
        )
        self.row(
            label,
            "connect to transcript p50 / p99 / max",
            f"{percentile(ok_times, 50):,.0f} / {percentile(ok_times, 99):,.0f} / "
            f"{max(ok_times, default=math.nan):,.0f} ms (storm {storm_end - storm_start:.1f} s)",
        )
        quiet = gaps_in(arrivals, storm_start - before_s, storm_start)
        during = gaps_in(arrivals, storm_start, storm_end)
        self.row(
            label,
            f"{streams} running streams: delta gap p99 / stall max, before → during",
            f"{percentile(quiet, 99) * 1000:.0f} / {max(quiet, default=math.nan) * 1000:.0f} ms"
            f" → {percentile(during, 99) * 1000:.0f} / "
            f"{max(during, default=math.nan) * 1000:.0f} ms",
        )
        self.row(
            label,
            "Daphne CPU during the storm; per socket",
            f"{meter.cpu:.1f} s; {meter.cpu / max(1, len(ok_times)) * 1000:.1f} ms",
        )
        self.raw["storm"] = {
            "outcomes": outcomes,
            "arrivals": arrivals,
            "storm": [storm_start, storm_end],
        }

    def table(self) -> str:
        lines = ["| scenario | figure | measured | target |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        return "\n".join(lines)


def command_args(argv: list[str] | None) -> str:
    """The bench's arguments as given, for the "Command:" line under its table."""
    return " ".join(sys.argv[1:] if argv is None else argv)


@functools.cache
def calibration_ms() -> float:
    """The best of 5 runs of a fixed pure-Python workload (JSON both ways, dict lookups, string
    formatting: what a relay does per chunk), in ms. The same machine kind runs this code up to
    twice as fast on one day as on another: this number, printed with every table, says how
    fast this stretch of this machine was, so figures from different runs can be set side by
    side. Lower is faster."""
    chunk = {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": " tok"}}]}
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        for i in range(20_000):
            data = json.loads(json.dumps(chunk))
            f"+t{i}:{data['choices'][0]['delta']['content']}"
        best = min(best, time.perf_counter() - started)
    return best * 1000


def single_streams(args: argparse.Namespace) -> int:
    """The one-stream turns `single` makes (both blocks), its warm-up left out."""
    return args.single_reps * (1 + (args.single_provider_ms > 0))


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, {os.cpu_count()} cores, {mem:.0f} GB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}; calibration {calibration_ms():.0f} ms (a fixed"
        " Python workload, best of 5; lower is faster)"
    )


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=200, help="concurrent streams")
    p.add_argument("--tokens", type=int, default=100, help="tokens per concurrent reply")
    p.add_argument("--rate", type=float, default=50, help="upstream tokens/s per stream")
    p.add_argument("--ramp", type=float, default=1.0, help="spread the sends over this many s")
    p.add_argument("--single-reps", type=int, default=40, help="sequential 1-stream replies")
    p.add_argument("--single-tokens", type=int, default=10)
    p.add_argument(
        "--single-provider-ms",
        type=float,
        default=100,
        help="single: as many again, the upstream's first token after this many ms (0: none)",
    )
    p.add_argument("--turns", type=int, default=50, help="1-token turns for the per-turn CPU")
    p.add_argument("--turn-spacing", type=float, default=0.1, help="s between 1-token turns")
    p.add_argument("--long-streams", type=int, default=20, help="long replies (CPU per token)")
    p.add_argument("--long-tokens", type=int, default=500)
    p.add_argument("--ceiling-streams", type=int, default=20)
    p.add_argument("--ceiling-tokens", type=int, default=2000)
    p.add_argument("--idle", type=int, default=1000, help="idle sockets to open")
    p.add_argument("--storm", type=int, default=1000, help="sockets that connect at once")
    p.add_argument("--storm-streams", type=int, default=20, help="replies streaming meanwhile")
    p.add_argument("--storm-timeout", type=float, default=60, help="s a storm socket may wait")
    p.add_argument(
        "--only",
        default="single,burst,concurrent,turns,long,ceiling,idle,storm",
        help="comma-separated scenarios to run",
    )
    p.add_argument("--processes", type=int, default=1, help="Daphne processes")
    # Keep these two in step with `make run` and docs/deploy.md: the bench measures them.
    p.add_argument("--backlog", type=int, default=4096, help="Daphne's listen backlog")
    p.add_argument(
        "--websocket-connect-timeout",
        type=int,
        default=30,
        help="Daphne's --websocket_connect_timeout, s",
    )
    p.add_argument(
        "--database-url",
        help="PostgreSQL server: a fresh database is created on "
        "it (and dropped); default: SQLite in a fresh var dir",
    )
    p.add_argument("--redis-url", help="Redis for the channel layer; its db is FLUSHED")
    p.add_argument("--frame-interval", type=float, help="PLAYGROUND_FRAME_INTERVAL for Daphne")
    p.add_argument("--profile", type=Path, help="py-spy each scenario into this directory")
    p.add_argument("--json", type=Path, help="write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep the var dir / database")
    args = p.parse_args(argv)
    if args.processes > 1 and not (args.database_url and args.redis_url):
        p.error("--processes > 1 needs --database-url (PostgreSQL) and --redis-url")
    return args


async def main_async(args: argparse.Namespace, bench: Bench) -> None:
    only = set(args.only.split(","))
    try:
        if "single" in only:
            await bench.single(
                args.single_reps, args.single_tokens, 1 / args.rate, args.single_provider_ms
            )
        if "burst" in only:
            await bench.burst(args.streams, args.tokens, args.rate)
        if "concurrent" in only:
            await bench.concurrent(args.streams, args.tokens, args.rate, args.ramp)
        if "turns" in only:
            await bench.turns(args.turns, args.turn_spacing)
        if "long" in only:
            await bench.long(args.long_streams, args.long_tokens, args.rate, args.ramp)
        if "ceiling" in only:
            await bench.ceiling(args.ceiling_streams, args.ceiling_tokens)
        if "idle" in only:
            await bench.idle(args.idle)
        if "storm" in only:
            await bench.storm(args.storm, args.storm_streams, args.rate, args.storm_timeout)
    finally:
        if bench.http is not None:
            await bench.http.aclose()


def main(argv: list[str] | None = None) -> int:
    from bench.upstream_proc import UpstreamProcess

    args = parse_args(argv)
    only = set(args.only.split(","))
    needed = (
        ("single" in only) * (single_streams(args) + 1)
        + ("burst" in only) * args.streams
        + ("concurrent" in only) * args.streams
        + ("turns" in only) * args.turns
        + ("long" in only) * args.long_streams
        + ("ceiling" in only) * args.ceiling_streams
        + ("idle" in only) * (2 * args.idle + 50)
        + ("storm" in only) * (args.storm + args.storm_streams)
    )
    upstream = UpstreamProcess(args.tokens, 1 / args.rate)
    database_url = create_pg_database(args.database_url) if args.database_url else None
    if args.redis_url:
        flush_redis(args.redis_url)
    extra = {}
    if args.frame_interval is not None:
        extra["PLAYGROUND_FRAME_INTERVAL"] = str(args.frame_interval)
    stack = Stack(
        upstream.base_url,
        database_url,
        args.redis_url,
        extra_env=extra,
        asgi_app="bench.asgi:application",  # adds the SQL statement count
        backlog=args.backlog,
        websocket_connect_timeout=args.websocket_connect_timeout,
    )
    mode = (
        f"{args.processes} Daphne process(es) (backlog {args.backlog}, websocket connect "
        f"timeout {args.websocket_connect_timeout} s), "
        + ("PostgreSQL + Redis" if database_url else "SQLite + in-memory channel layer")
    )
    print(f"machine: {machine()}\nmode: {mode}\nvar dir: {stack.var_dir}", flush=True)
    try:
        with stack.serving(upstream, keep=args.keep):
            seed = stack.prepare(needed)
            stack.start_servers(args.processes)
            bench = Bench(stack, upstream, seed.cookie, seed.conversations, args.profile)
            asyncio.run(main_async(args, bench))
            print()
            print(f"Machine: {machine()}; {mode}; client, upstream and Daphne on the same host.")
            print(f"Command: python -m bench.relay {command_args(argv)}")
            print()
            print(bench.table())
            if args.json:
                raw = {"machine": machine(), "calibration_ms": calibration_ms(), **bench.raw}
                args.json.write_text(json.dumps(raw, indent=1, default=str))
            return 0
    finally:
        if database_url and not args.keep:  # once Daphne, stopped above, has let go of it
            drop_pg_database(args.database_url, database_url)


if __name__ == "__main__":
    sys.exit(main())
