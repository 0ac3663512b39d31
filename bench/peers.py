"""A peer beside the playground: the same streams through Open WebUI, in the same run.

    .venv/bin/python -m bench.peers --openwebui http://127.0.0.1:8090 [--openwebui-token JWT]
        [--openwebui-pid PID] [--streams 200 --tokens 100 --rate 50 --ramp 1 --rounds 3]

It starts what `bench.relay` starts (fresh var dir, one Daphne, the fake upstream in its own
process), the fake upstream on a fixed port (`--upstream-port`, 8011) so that an Open WebUI
started beforehand by hand (bench/README.md says how) relays to this very process. Then, for
`burst` (all sends at once) and `concurrent` (sends spread over `--ramp` s), `--rounds` times:
N playground streams over WebSockets, N requests through Open WebUI's streaming
`/api/chat/completions` (SSE) and N direct requests to the fake upstream, the three batches in
a rotating order, each against the same upstream pace. It prints one table per scenario.
Nothing of Open WebUI is imported or installed here: it is a URL and a token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import client, direct
from bench.direct import DirectResult
from bench.relay import Bench, ProcessMeter, added_from_send, machine, percentile
from bench.stack import Stack

SYSTEMS = ("playground", "openwebui", "direct")
LABELS = {"playground": "playground", "openwebui": "Open WebUI", "direct": "direct client"}


# -- pure helpers (tests/test_bench_peers.py) -------------------------------------------------


@dataclass
class Batch:
    """One batch of N streams of one system, reduced to the figures compared."""

    streams: int
    ok: int  # read to their end without error, the whole expected text
    lost: int  # expected `tokN` missing from the texts
    duplicated: int
    tokens: int  # tokens delivered (expected tokens present in the texts)
    makespan_s: float  # last reply done − first request sent
    ttft_ms: list[float]  # TTFT from send, per stream that got text
    return_leg_ms: list[float] = field(default_factory=list)  # upstream first token → client
    server_cpu_s: float = math.nan  # the relaying server's CPU from the first send to the end

    @property
    def tokens_per_s(self) -> float:
        """Aggregate tokens/s delivered: as `bench.relay` defines it for the playground."""
        if not self.makespan_s or math.isnan(self.makespan_s):
            return math.nan
        return self.tokens / self.makespan_s


def http_batch(results: list[DirectResult], n_tokens: int, records=None) -> Batch:
    """A batch of SSE streams (Open WebUI or the direct client) scored like `relay.analyse`
    scores the playground's: tokens by `client.check_tokens`, makespan from the first send to
    the last reply done. `records` (the upstream's, by tag) adds the return leg."""
    expected = client.expected_text(n_tokens)
    by_tag = {r["tag"]: r for r in records or [] if r.get("tag")}
    lost = duplicated = tokens = ok = 0
    ttft, leg = [], []
    for r in results:
        lost_r, dup_r = client.check_tokens(r.text, n_tokens)
        lost, duplicated, tokens = lost + lost_r, duplicated + dup_r, tokens + n_tokens - lost_r
        ok += bool(r.done_at and not r.error and r.text == expected)
        if r.ttft_ms is not None:
            ttft.append(r.ttft_ms)
        rec = by_tag.get(r.tag)
        if r.first_text_at and rec and rec.get("first_token_sent_wall"):
            leg.append((r.first_text_at - rec["first_token_sent_wall"]) * 1000)
    done = [r for r in results if r.done_at]
    makespan = (max(r.done_at for r in done) - min(r.sent_at for r in done)) if done else math.nan
    return Batch(len(results), ok, lost, duplicated, tokens, makespan, ttft, leg)


def rotation(round_index: int) -> list[str]:
    """The order of the three batches in a round: rotated each round, so over three rounds
    each system goes first, second and last once (a slow start or a noisy neighbour does not
    always hit the same one)."""
    k = round_index % len(SYSTEMS)
    return list(SYSTEMS[k:] + SYSTEMS[:k])


def summary(batches: list[Batch], direct_batches: list[Batch]) -> dict[str, Any]:
    """The figures of one system over its rounds: tokens/s as the median of the rounds' (and
    their range), TTFT percentiles over every stream of every round, added TTFT against the
    direct client's pooled percentiles (`relay.added_from_send`)."""
    ttft = [t for b in batches for t in b.ttft_ms]
    direct_ttft = [t for b in direct_batches for t in b.ttft_ms]
    rates = [b.tokens_per_s for b in batches]
    leg = [t for b in batches for t in b.return_leg_ms]
    cpu = [b.server_cpu_s for b in batches]
    tokens = sum(b.tokens for b in batches)
    return {
        "streams": sum(b.streams for b in batches),
        "ok": sum(b.ok for b in batches),
        "lost": sum(b.lost for b in batches),
        "duplicated": sum(b.duplicated for b in batches),
        "tokens_per_s": statistics.median(rates) if rates else math.nan,
        "tokens_per_s_range": (min(rates), max(rates)) if rates else (math.nan, math.nan),
        "makespan_s": statistics.median(b.makespan_s for b in batches) if batches else math.nan,
        "ttft": (percentile(ttft, 50), percentile(ttft, 99)),
        "added": (
            added_from_send(ttft, direct_ttft, 50),
            added_from_send(ttft, direct_ttft, 99),
        ),
        "return_leg": (percentile(leg, 50), percentile(leg, 99)),
        "cpu_per_1000": sum(cpu) / tokens * 1000 if tokens else math.nan,
    }


def table(label: str, figures: dict[str, dict[str, Any]], rounds: int) -> str:
    """One scenario's figures, a column per system."""

    def cell(system: str, key: str) -> str:
        f = figures[system]
        if key == "completed":
            return f"{f['ok']}/{f['streams']} / {f['lost']}"
        if key == "rate":
            lo, hi = f["tokens_per_s_range"]
            return f"{f['tokens_per_s']:,.0f} ({lo:,.0f}–{hi:,.0f})"
        if key == "makespan":
            return f"{f['makespan_s']:.2f} s"
        if key in ("ttft", "added", "return_leg"):
            if system == "direct" and key != "ttft":
                return "—"
            a, b = f[key]
            return "—" if math.isnan(a) else f"{a:.1f} / {b:.1f} ms"
        if key == "cpu":
            return "—" if math.isnan(f["cpu_per_1000"]) else f"{f['cpu_per_1000']:.3f} s"
        raise KeyError(key)

    rows = [
        ("completed / lost tokens", "completed"),
        (f"tokens/s delivered, median of {rounds} rounds (range)", "rate"),
        ("makespan, median", "makespan"),
        ("TTFT from send p50 / p99", "ttft"),
        ("added TTFT from send p50 / p99", "added"),
        ("return leg: upstream first token → client p50 / p99", "return_leg"),
        ("server CPU per 1,000 tokens", "cpu"),
    ]
    lines = [
        f"{label}",
        "",
        "| figure | " + " | ".join(LABELS[s] for s in SYSTEMS) + " |",
        "|---|" + "---|" * len(SYSTEMS),
    ]
    lines += [
        f"| {name} | " + " | ".join(cell(s, key) for s in SYSTEMS) + " |" for name, key in rows
    ]
    ratio = figures["playground"]["tokens_per_s"] / figures["openwebui"]["tokens_per_s"]
    lines += ["", f"playground ÷ Open WebUI tokens/s: {ratio:.2f}× (issue 9's target: ≥ 1.5×)"]
    return "\n".join(lines)


# -- Open WebUI ---------------------------------------------------------------------------------


async def openwebui_token(http: httpx.AsyncClient, base: str) -> str:
    """A JWT for an Open WebUI started with WEBUI_AUTH=False: its single-user sign-in creates
    (or signs in) admin@localhost."""
    response = await http.post(
        f"{base}/api/v1/auths/signin", json={"email": "admin@localhost", "password": "admin"}
    )
    response.raise_for_status()
    return response.json()["token"]


async def openwebui_model(http: httpx.AsyncClient, base: str, token: str) -> str:
    """The first model Open WebUI lists (it lists what the fake upstream's /v1/models does);
    the call also fills its model cache, and fails early on a wrong token or URL."""
    response = await http.get(f"{base}/api/models", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    models = [m["id"] for m in response.json()["data"]]
    if not models:
        raise RuntimeError(f"Open WebUI at {base} lists no model: is its upstream this bench's?")
    return models[0]


@dataclass
class Peers:
    bench: Bench
    base: str  # Open WebUI's URL
    token: str
    model: str
    pid: int | None
    http: httpx.AsyncClient  # Open WebUI's client; the direct client keeps bench.http

    async def playground(self, name: str, n: int, tokens: int, interval: float, ramp: float):
        stats, _, window = await self.bench.streams(name, n, tokens, interval, ramp)
        return Batch(
            stats.streams,
            stats.ok,
            stats.lost,
            stats.duplicated,
            stats.tokens,
            stats.makespan_s,
            stats.client_ttft_ms,
            stats.added_ttft_ms,
            window.cpu_s,
        )

    async def openwebui(self, name: str, n: int, tokens: int, interval: float, ramp: float):
        up = self.bench.upstream
        up.set_default(tokens, interval)
        up.reset()
        assert self.bench.template is not None
        template = {**self.bench.template, "model": self.model}
        meter = ProcessMeter([self.pid] if self.pid else [])
        async with meter:
            results = await direct.run_direct(
                self.http,
                f"{self.base}/api/chat/completions",
                template,
                self.token,
                n,
                tag_prefix=f"bench-{name}",  # `bench-` tags: the upstream records them
                ramp=ramp,
            )
            await asyncio.sleep(0.3)  # as bench.streams does before reading the CPU
        batch = http_batch(results, tokens, up.records())
        if self.pid:
            batch.server_cpu_s = meter.cpu
        self.bench.raw.setdefault(name, {})["results"] = [r.__dict__ for r in results]
        return batch

    async def direct(self, name: str, n: int, tokens: int, interval: float, ramp: float):
        self.bench.upstream.set_default(tokens, interval)
        self.bench.upstream.reset()
        return http_batch(await self.bench.direct(name, n, ramp), tokens)

    async def scenario(
        self, label: str, name: str, n: int, tokens: int, rate: float, ramp: float, rounds: int
    ) -> str:
        interval = 1 / rate if rate else 0.0
        batches: dict[str, list[Batch]] = {s: [] for s in SYSTEMS}
        for r in range(rounds):
            order = rotation(r)
            print(f"[{label}] round {r + 1}/{rounds}: {', '.join(order)}", flush=True)
            for system in order:
                batch = await getattr(self, system)(
                    f"{name}-r{r}-{system}", n, tokens, interval, ramp
                )
                batches[system].append(batch)
                print(
                    f"  {LABELS[system]}: {batch.ok}/{batch.streams} ok, lost {batch.lost},"
                    f" {batch.tokens_per_s:,.0f} tokens/s, TTFT p50"
                    f" {percentile(batch.ttft_ms, 50):.1f} ms",
                    flush=True,
                )
                await asyncio.sleep(1.0)  # let the last replies' work settle
        figures = {s: summary(batches[s], batches["direct"]) for s in SYSTEMS}
        self.bench.raw[name] = {s: [b.__dict__ for b in batches[s]] for s in SYSTEMS}
        return table(label, figures, rounds)


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n")[0])
    p.add_argument(
        "--openwebui", required=True, help="Open WebUI's URL, e.g. http://127.0.0.1:8090"
    )
    p.add_argument("--openwebui-token", help="API key or JWT; default: WEBUI_AUTH=False sign-in")
    p.add_argument("--openwebui-pid", type=int, help="its process, for its CPU per 1,000 tokens")
    p.add_argument(
        "--upstream-port",
        type=int,
        default=8011,
        help="the fake upstream's port: Open WebUI's OPENAI_API_BASE_URL must point at it",
    )
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--rate", type=float, default=50, help="upstream tokens/s per stream")
    p.add_argument("--ramp", type=float, default=1.0, help="concurrent: sends spread over s")
    p.add_argument("--rounds", type=int, default=3, help="batches of each system per scenario")
    p.add_argument("--only", default="burst,concurrent")
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace, bench: Bench) -> list[str]:
    http = direct.new_client()
    try:
        token = args.openwebui_token or await openwebui_token(http, args.openwebui)
        model = await openwebui_model(http, args.openwebui, token)
        peers = Peers(bench, args.openwebui.rstrip("/"), token, model, args.openwebui_pid, http)
        # Warm-up, not in the figures: the first turn after Daphne starts (imports, templates,
        # the first upstream connection), the first request through Open WebUI, the first
        # direct one. It also records the body the playground sends upstream, which Open WebUI
        # (its model swapped in) and the direct client are sent.
        interval = 1 / args.rate if args.rate else 0.0
        await peers.playground("warmup", 1, 5, interval, 0.0)
        await peers.openwebui("warmup-owui", 1, 5, interval, 0.0)
        await peers.direct("warmup-direct", 1, 5, interval, 0.0)
        only = set(args.only.split(","))
        tables = []
        n, tok, rate = args.streams, args.tokens, args.rate
        if "burst" in only:
            label = f"{n} streams at once, {tok} tokens at {rate:g} tok/s"
            tables.append(await peers.scenario(label, "burst", n, tok, rate, 0.0, args.rounds))
        if "concurrent" in only:
            label = f"{n} streams over {args.ramp:g} s, {tok} tokens at {rate:g} tok/s"
            tables.append(
                await peers.scenario(label, "concurrent", n, tok, rate, args.ramp, args.rounds)
            )
        return tables
    finally:
        await http.aclose()
        if bench.http is not None:
            await bench.http.aclose()


def main(argv: list[str] | None = None) -> int:
    from bench.upstream_proc import UpstreamProcess

    args = parse_args(argv)
    only = set(args.only.split(","))
    needed = 1 + len(only & {"burst", "concurrent"}) * args.rounds * args.streams
    upstream = UpstreamProcess(args.tokens, 1 / args.rate, port=args.upstream_port)
    # The Daphne options of `make run` and bench.relay's defaults.
    stack = Stack(
        upstream.base_url,
        asgi_app="bench.asgi:application",
        backlog=4096,
        websocket_connect_timeout=30,
    )
    print(f"machine: {machine()}\nvar dir: {stack.var_dir}", flush=True)
    try:
        seed = stack.prepare(needed)
        stack.start_servers(1)
        bench = Bench(stack, upstream, seed.cookie, seed.conversations)
        tables = asyncio.run(main_async(args, bench))
        print()
        print(f"Machine: {machine()}; 1 Daphne process, SQLite + in-memory channel layer;")
        print("Open WebUI, the fake upstream, Daphne and the clients on the same host.")
        print(f"Command: python -m bench.peers {' '.join(sys.argv[1:] if argv is None else argv)}")
        for text in tables:
            print()
            print(text)
        return 0
    except Exception:
        print(stack.log_tails(), file=sys.stderr)
        raise
    finally:
        stack.stop()
        upstream.stop()
        with contextlib.suppress(OSError):
            stack.cleanup()


if __name__ == "__main__":
    sys.exit(main())
