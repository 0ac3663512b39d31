"""The fake upstream in a process of its own, controlled over stdin/stdout (JSON lines).

    python -m bench.upstream_proc --tokens 100 --interval 0.02
    → {"port": 40123}
    ← {"cmd": "default", "n_tokens": 100, "interval": 0}   → {"ok": true}
      (with "first_token_delay": 0.1, each answer waits 0.1 s first: a provider's own TTFT)
    ← {"cmd": "records"}                                    → {"records": [...]}
    ← {"cmd": "reset"}                                      → {"ok": true}

A record carries the stream tag found in the prompt, so the benchmark can match the upstream's
first-token time (wall clock: the processes share no monotonic origin) to its client.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from typing import Any

from tests.upstream import Behaviour, FakeUpstream, Recorded

TAG = re.compile(r"\[(bench-[\w-]+)\]")


def tag_of(rec: Recorded) -> str | None:
    body = rec.body if isinstance(rec.body, dict) else {}
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            found = TAG.search(str(message.get("content", "")))
            return found.group(1) if found else None
    return None


def record_rows(upstream: FakeUpstream) -> list[dict[str, Any]]:
    with upstream._cond:  # the server thread appends while we read
        requests = list(upstream.requests)
        gone = {d.request_index: d.tokens_sent for d in upstream.disconnects}
    wall_minus_monotonic = time.time() - time.monotonic()
    return [
        {
            "index": r.index,
            "tag": tag_of(r),
            "received_wall": r.received_at + wall_minus_monotonic,
            "first_token_sent_wall": r.first_token_sent_wall,
            "tokens_sent": r.tokens_sent,
            "completed": r.completed,
            "disconnected": r.index in gone,
            "body": r.body,  # what the playground sent: bench.direct replays it
        }
        for r in requests
        if r.method == "POST"
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    upstream = FakeUpstream(port=args.port).start()
    upstream.default = Behaviour(n_tokens=args.tokens, interval=args.interval)
    print(json.dumps({"port": upstream.port}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "records":
            reply: dict[str, Any] = {"records": record_rows(upstream)}
        elif command["cmd"] == "default":
            upstream.default = Behaviour(
                n_tokens=command["n_tokens"],
                interval=command["interval"],
                silence=command.get("first_token_delay", 0.0),  # before the response
            )
            reply = {"ok": True}
        elif command["cmd"] == "reset":
            default = upstream.default
            upstream.reset()
            upstream.default = default
            reply = {"ok": True}
        else:
            reply = {"error": "unknown command"}
        print(json.dumps(reply), flush=True)
    upstream.stop()


class UpstreamProcess:
    """The parent's handle on `python -m bench.upstream_proc`."""

    def __init__(self, tokens: int, interval: float, port: int = 0) -> None:
        """`port` 0 takes a free one; a fixed port lets a server started by hand (a peer
        such as Open WebUI in bench.peers) be pointed at this upstream beforehand."""
        from bench.stack import BIN, ROOT

        self.process = subprocess.Popen(
            [
                str(BIN / "python"),
                "-m",
                "bench.upstream_proc",
                "--tokens",
                str(tokens),
                "--interval",
                str(interval),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = json.loads(self._readline())["port"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _readline(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fake upstream process exited")
        return line

    def _call(self, **command: Any) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return json.loads(self._readline())

    def records(self) -> list[dict[str, Any]]:
        return self._call(cmd="records")["records"]

    def set_default(self, n_tokens: int, interval: float, first_token_delay: float = 0.0) -> None:
        """Every answer from now: `n_tokens` chunks `interval` s apart, the first after
        `first_token_delay` s (the time a real provider takes to its first token)."""
        self._call(
            cmd="default",
            n_tokens=n_tokens,
            interval=interval,
            first_token_delay=first_token_delay,
        )

    def reset(self) -> None:
        self._call(cmd="reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


if __name__ == "__main__":
    main()
