"""Peers beside the playground: the same streams through Open WebUI and LiteLLM, in one run.

    .venv/bin/python -m bench.peers [--openwebui http://127.0.0.1:8090 [--openwebui-token JWT]
        [--openwebui-pid PID]] [--litellm http://127.0.0.1:4000 [--litellm-key KEY]
        [--litellm-pid PID]] [--only single,burst,concurrent] [--single-reps 40
        --single-tokens 10] [--streams 200 --tokens 100 --rate 50 --ramp 1 --rounds N]

It starts what `bench.relay` starts (fresh var dir, one Daphne, the fake upstream in its own
process), the fake upstream on a fixed port (`--upstream-port`, 8011) so that the peers,
started beforehand by hand (bench/README.md says how), relay to this very process. Then, for
`single` (`--single-reps` sequential one-stream requests per system), `burst` (all sends at
once) and `concurrent` (sends spread over `--ramp` s), round after round: the playground's
streams over WebSockets, the same through each peer given (Open WebUI's streaming
`/api/chat/completions`, LiteLLM proxy's `/v1/chat/completions`, both SSE) and direct
requests to the fake upstream, in an order rotated every round, each against the same upstream
pace. It prints one table per scenario. Nothing of either peer is imported or installed here:
each is a URL and a token.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import client, direct
from bench.direct import DirectResult
from bench.relay import (
    Bench,
    ProcessMeter,
    added_from_send,
    command_args,
    machine,
    percentile,
    single_streams,
)
from bench.stack import Stack

PEERS = ("openwebui", "litellm")
SYSTEMS = ("playground", *PEERS, "direct")
LABELS = {
    "playground": "playground",
    "openwebui": "Open WebUI",
    "litellm": "LiteLLM proxy",
    "direct": "direct client",
}


def systems_for(peers: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The systems of a run: the playground, the peers given (in PEERS' order), direct."""
    return ("playground", *(p for p in PEERS if p in peers), "direct")


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


def rotation(round_index: int, systems: tuple[str, ...] = SYSTEMS) -> list[str]:
    """The order of the batches in a round: rotated each round, so over len(systems) rounds
    each system takes each place once (a slow start or a noisy neighbour does not always hit
    the same one)."""
    k = round_index % len(systems)
    return list(systems[k:] + systems[:k])


def added_ratio(peer_added: tuple[float, float], playground_added: tuple[float, float]):
    """Peer-added ÷ playground-added TTFT, (p50, p99): how many times the playground's added
    latency the peer adds. NaN where the playground adds nothing measurable (≤ 0 ms: the
    direct client's percentile was as slow or slower), where a ratio would mean nothing."""
    return tuple(
        peer / mine if mine > 0 and not math.isnan(peer) else math.nan
        for peer, mine in zip(peer_added, playground_added, strict=True)
    )


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


def _pair(pair: tuple[float, float], unit: str = " ms", fmt: str = ".1f") -> str:
    a, b = pair
    return "—" if math.isnan(a) else f"{a:{fmt}} / {b:{fmt}}{unit}"


def table(
    label: str,
    figures: dict[str, dict[str, Any]],
    rounds: int,
    systems: tuple[str, ...],
) -> str:
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
            return _pair(f[key])
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
        "| figure | " + " | ".join(LABELS[s] for s in systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    lines += [
        f"| {name} | " + " | ".join(cell(s, key) for s in systems) + " |" for name, key in rows
    ]
    lines.append("")
    for peer in (s for s in systems if s in PEERS):
        ratio = figures["playground"]["tokens_per_s"] / figures[peer]["tokens_per_s"]
        lines.append(
            f"playground ÷ {LABELS[peer]} tokens/s: {ratio:.2f}× (issue 9's target: ≥ 1.5×)"
        )
    return "\n".join(lines)


def single_table(
    label: str,
    figures: dict[str, dict[str, Any]],
    warmup: dict[str, float],
    systems: tuple[str, ...],
) -> str:
    """The one-stream scenario: TTFT and added TTFT from the send per system, then each
    peer's added TTFT ÷ the playground's (issue 9: ≥ 5× better than both peers)."""

    def row(name: str, cell) -> str:
        return f"| {name} | " + " | ".join(cell(s) for s in systems) + " |"

    lines = [
        label,
        "",
        "| figure | " + " | ".join(LABELS[s] for s in systems) + " |",
        "|---|" + "---|" * len(systems),
        row("completed", lambda s: f"{figures[s]['ok']}/{figures[s]['streams']}"),
        row(
            "first request after start (not in the figures): TTFT",
            lambda s: "—" if math.isnan(warmup.get(s, math.nan)) else f"{warmup[s]:.1f} ms",
        ),
        row("TTFT from send p50 / p99", lambda s: _pair(figures[s]["ttft"])),
        row(
            "added TTFT from send p50 / p99",
            lambda s: "—" if s == "direct" else _pair(figures[s]["added"]),
        ),
        "",
    ]
    mine = figures["playground"]["added"]
    for peer in (s for s in systems if s in PEERS):
        ratio = added_ratio(figures[peer]["added"], mine)
        lines.append(
            f"{LABELS[peer]} added ÷ playground added, p50 / p99: {_pair(ratio, '×', '.1f')}"
            " (issue 9's target: ≥ 5×)"
        )
    return "\n".join(lines)


# -- the peers ----------------------------------------------------------------------------------


async def openwebui_token(http: httpx.AsyncClient, base: str) -> str:
    """A JWT for an Open WebUI started with WEBUI_AUTH=False: its single-user sign-in creates
    (or signs in) admin@localhost."""
    response = await http.post(
        f"{base}/api/v1/auths/signin", json={"email": "admin@localhost", "password": "admin"}
    )
    response.raise_for_status()
    return response.json()["token"]


async def first_model(http: httpx.AsyncClient, models_url: str, token: str) -> str:
    """The first model a peer lists (Open WebUI lists what the fake upstream's /v1/models
    does, LiteLLM its config's model_list); the call also fills Open WebUI's model cache, and
    fails early on a wrong token or URL."""
    response = await http.get(models_url, headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    models = [m["id"] for m in response.json()["data"]]
    if not models:
        raise RuntimeError(f"{models_url} lists no model: is its upstream this bench's?")
    return models[0]


@dataclass
class Peer:
    """One peer as the bench sees it: where to post, with which token and model."""

    chat_url: str
    token: str
    model: str
    pid: int | None


@dataclass
class Peers:
    bench: Bench
    peers: dict[str, Peer]
    http: httpx.AsyncClient  # the peers' client; the direct client keeps bench.http

    @property
    def systems(self) -> tuple[str, ...]:
        return systems_for(tuple(self.peers))

    async def run(self, system: str, name: str, n: int, tokens: int, interval: float, ramp: float):
        if system == "playground":
            return await self.playground(name, n, tokens, interval, ramp)
        if system == "direct":
            return await self.direct(name, n, tokens, interval, ramp)
        return await self.peer(system, name, n, tokens, interval, ramp)

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

    async def peer(self, system: str, name: str, n: int, tokens: int, interval: float, ramp: float):
        peer = self.peers[system]
        up = self.bench.upstream
        up.set_default(tokens, interval, self.bench.first_token_delay)
        up.reset()
        assert self.bench.template is not None
        template = {**self.bench.template, "model": peer.model}
        meter = ProcessMeter([peer.pid] if peer.pid else [])
        async with meter:
            results = await direct.run_direct(
                self.http,
                peer.chat_url,
                template,
                peer.token,
                n,
                tag_prefix=f"bench-{name}",  # `bench-` tags: the upstream records them
                ramp=ramp,
            )
            await asyncio.sleep(0.3)  # as bench.streams does before reading the CPU
        batch = http_batch(results, tokens, up.records())
        if peer.pid:
            batch.server_cpu_s = meter.cpu
        self.bench.raw.setdefault(name, {})["results"] = [r.__dict__ for r in results]
        return batch

    async def direct(self, name: str, n: int, tokens: int, interval: float, ramp: float):
        self.bench.upstream.set_default(tokens, interval, self.bench.first_token_delay)
        self.bench.upstream.reset()
        return http_batch(await self.bench.direct(name, n, ramp), tokens)

    async def rounds(
        self,
        label: str,
        name: str,
        n: int,
        tokens: int,
        rate: float,
        ramp: float,
        rounds: int,
        pause: float = 1.0,
        verbose: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """`rounds` rounds of one batch per system, rotated; the figures per system."""
        interval = 1 / rate if rate else 0.0
        systems = self.systems
        batches: dict[str, list[Batch]] = {s: [] for s in systems}
        for r in range(rounds):
            order = rotation(r, systems)
            if verbose:
                print(f"[{label}] round {r + 1}/{rounds}: {', '.join(order)}", flush=True)
            for system in order:
                batch = await self.run(system, f"{name}-r{r}-{system}", n, tokens, interval, ramp)
                batches[system].append(batch)
                if verbose:
                    print(
                        f"  {LABELS[system]}: {batch.ok}/{batch.streams} ok, lost {batch.lost},"
                        f" {batch.tokens_per_s:,.0f} tokens/s, TTFT p50"
                        f" {percentile(batch.ttft_ms, 50):.1f} ms",
                        flush=True,
                    )
                await asyncio.sleep(pause)  # let the last replies' work settle
        self.bench.raw[name] = {s: [b.__dict__ for b in batches[s]] for s in systems}
        return {s: summary(batches[s], batches["direct"]) for s in systems}

    async def scenario(
        self, label: str, name: str, n: int, tokens: int, rate: float, ramp: float, rounds: int
    ) -> str:
        figures = await self.rounds(label, name, n, tokens, rate, ramp, rounds)
        return table(label, figures, rounds, self.systems)

    async def single(
        self,
        reps: int,
        tokens: int,
        rate: float,
        warmup: dict[str, float],
        provider_ms: float = 0.0,
    ) -> str:
        """`reps` rounds of one request per system, one after the other (relay.py's `single`,
        with the peers in the rotation); `warmup` is each system's first request's TTFT.
        `provider_ms`: the upstream takes that long to its first token, as a real provider
        does (relay.py's second `single` block)."""
        label = f"1 stream, {reps} sequential requests per system, {tokens} tokens at {rate:g}"
        label += " tok/s"
        name = "single"
        if provider_ms > 0:
            label += f", provider's first token after {provider_ms:g} ms"
            name = "single-provider"
        print(f"[{label}]", flush=True)
        with self.bench.provider_delay(provider_ms):
            figures = await self.rounds(
                label, name, 1, tokens, rate, 0.0, reps, pause=0.1, verbose=False
            )
        return single_table(label, figures, warmup, self.systems)


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n")[0])
    p.add_argument("--openwebui", help="Open WebUI's URL, e.g. http://127.0.0.1:8090")
    p.add_argument("--openwebui-token", help="API key or JWT; default: WEBUI_AUTH=False sign-in")
    p.add_argument("--openwebui-pid", type=int, help="its process, for its CPU per 1,000 tokens")
    p.add_argument("--litellm", help="LiteLLM proxy's URL, e.g. http://127.0.0.1:4000")
    p.add_argument(
        "--litellm-key",
        default=os.environ.get("LITELLM_MASTER_KEY", ""),
        help="its master key; default: $LITELLM_MASTER_KEY (kept out of the printed command)",
    )
    p.add_argument("--litellm-pid", type=int, help="its process, for its CPU per 1,000 tokens")
    p.add_argument(
        "--upstream-port",
        type=int,
        default=8011,
        help="the fake upstream's port: the peers' upstream URLs must point at it",
    )
    p.add_argument("--single-reps", type=int, default=40, help="single: requests per system")
    p.add_argument("--single-tokens", type=int, default=10)
    p.add_argument(
        "--single-provider-ms",
        type=float,
        default=100,
        help="single: as many again, the upstream's first token after this many ms (0: none)",
    )
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--rate", type=float, default=50, help="upstream tokens/s per stream")
    p.add_argument("--ramp", type=float, default=1.0, help="concurrent: sends spread over s")
    p.add_argument(
        "--rounds",
        type=int,
        help="batches of each system per scenario; default: one per system, so that each"
        " takes each place in the rotation once",
    )
    p.add_argument("--only", default="single,burst,concurrent")
    args = p.parse_args(argv)
    if not (args.openwebui or args.litellm):
        p.error("give at least one peer: --openwebui URL and/or --litellm URL")
    if args.rounds is None:
        args.rounds = 2 + bool(args.openwebui) + bool(args.litellm)
    return args


async def connect_peers(args: argparse.Namespace, http: httpx.AsyncClient) -> dict[str, Peer]:
    peers = {}
    if args.openwebui:
        base = args.openwebui.rstrip("/")
        token = args.openwebui_token or await openwebui_token(http, base)
        model = await first_model(http, f"{base}/api/models", token)
        peers["openwebui"] = Peer(f"{base}/api/chat/completions", token, model, args.openwebui_pid)
    if args.litellm:
        base = args.litellm.rstrip("/")
        model = await first_model(http, f"{base}/v1/models", args.litellm_key)
        peers["litellm"] = Peer(
            f"{base}/v1/chat/completions", args.litellm_key, model, args.litellm_pid
        )
    return peers


async def main_async(args: argparse.Namespace, bench: Bench) -> list[str]:
    http = direct.new_client()
    try:
        peers = Peers(bench, await connect_peers(args, http), http)
        # Warm-up, not in the figures: the first turn after Daphne starts (imports, templates,
        # the first upstream connection), the first request through each peer, the first
        # direct one (relay.py's `single` leaves its first turn out the same way). It also
        # records the body the playground sends upstream, which the peers (their model
        # swapped in) and the direct client are sent.
        interval = 1 / args.rate if args.rate else 0.0
        warmup = {}
        for system in peers.systems:
            batch = await peers.run(system, f"warmup-{system}", 1, 5, interval, 0.0)
            warmup[system] = percentile(batch.ttft_ms, 50)
        only = set(args.only.split(","))
        tables = []
        n, tok, rate = args.streams, args.tokens, args.rate
        if "single" in only:
            tables.append(await peers.single(args.single_reps, args.single_tokens, rate, warmup))
            if args.single_provider_ms > 0:
                tables.append(
                    await peers.single(
                        args.single_reps,
                        args.single_tokens,
                        rate,
                        warmup,
                        args.single_provider_ms,
                    )
                )
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
    needed = (
        1
        + ("single" in only) * single_streams(args)
        + len(only & {"burst", "concurrent"}) * args.rounds * args.streams
    )
    upstream = UpstreamProcess(args.tokens, 1 / args.rate, port=args.upstream_port)
    # The Daphne options of `make run` and bench.relay's defaults.
    stack = Stack(
        upstream.base_url,
        asgi_app="bench.asgi:application",
        backlog=4096,
        websocket_connect_timeout=30,
    )
    print(f"machine: {machine()}\nvar dir: {stack.var_dir}", flush=True)
    with stack.serving(upstream):
        seed = stack.prepare(needed)
        stack.start_servers(1)
        bench = Bench(stack, upstream, seed.cookie, seed.conversations)
        tables = asyncio.run(main_async(args, bench))
        peers = " and ".join(LABELS[p] for p in PEERS if getattr(args, p))
        print()
        print(f"Machine: {machine()}; 1 Daphne process, SQLite + in-memory channel layer;")
        print(f"{peers}, the fake upstream, Daphne and the clients on the same host.")
        print(f"Command: python -m bench.peers {command_args(argv)}")
        for text in tables:
            print()
            print(text)
        return 0


if __name__ == "__main__":
    sys.exit(main())
