"""Page weight: the first view of a conversation, with every asset, is at most 100 KB
transferred for a user with a long history, its text assets come compressed, and it asks
nothing of any other origin.

Measured with the Chrome DevTools Protocol on a cold cache: `encodedDataLength` is what came
over the wire (response headers plus the body as sent, so compressed where it was). The
sidebar shows the 50 newest of the user's 500 conversations; the page is HTML as Django
renders it, the static files are gzipped by `collectstatic` and served by WhiteNoise. Run
with `-s` to see the breakdown.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from tests.e2e.test_browser import Sockets
from tests.e2e.test_parameters import sign_in

BUDGET_BYTES = 100 * 1024
SETTLE_TIMEOUT = 10.0
# Schemes that never touch the network: the page's `<link rel="icon" href="data:,">`.
LOCAL_SCHEMES = {"data", "blob", "about"}
KINDS = {"Document": "html", "Script": "js", "Stylesheet": "css"}
# What a browser accepts and WhiteNoise sends (gzip from collectstatic; br if Brotli is there).
COMPRESSED = {"gzip", "br"}


@dataclass
class Transfer:
    url: str
    kind: str = "other"
    status: int | None = None
    bytes: int = 0
    encoding: str = ""  # Content-Encoding
    done: bool = False


@dataclass
class NetworkLog:
    """Every request and WebSocket the page makes, as Chromium's network stack saw them."""

    requests: dict[str, list[Transfer]] = field(default_factory=lambda: defaultdict(list))
    sockets: list[str] = field(default_factory=list)
    socket_frame_bytes: int = 0

    def attach(self, cdp) -> None:
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.loadingFinished", self._finished)
        cdp.on("Network.loadingFailed", self._failed)
        cdp.on("Network.webSocketCreated", lambda e: self.sockets.append(e["url"]))
        cdp.on("Network.webSocketFrameReceived", self._frame)

    def _sent(self, event: dict) -> None:
        hops = self.requests[event["requestId"]]
        redirect = event.get("redirectResponse")
        if redirect and hops:
            # A redirect reuses the request id: its response (headers only) is finished here.
            hops[-1].status = redirect["status"]
            hops[-1].bytes = int(redirect.get("encodedDataLength", 0))
            hops[-1].done = True
        hops.append(Transfer(event["request"]["url"], KINDS.get(event.get("type", ""), "other")))

    def _response(self, event: dict) -> None:
        hops = self.requests.get(event["requestId"])
        if hops:
            response = event["response"]
            hops[-1].status = response["status"]
            hops[-1].kind = KINDS.get(event.get("type", ""), hops[-1].kind)
            headers = {name.lower(): value for name, value in response["headers"].items()}
            hops[-1].encoding = headers.get("content-encoding", "")

    def _finished(self, event: dict) -> None:
        hops = self.requests.get(event["requestId"])
        if hops:
            hops[-1].bytes = int(event["encodedDataLength"])
            hops[-1].done = True

    def _failed(self, event: dict) -> None:
        hops = self.requests.get(event["requestId"])
        if hops:
            hops[-1].done = True

    def _frame(self, event: dict) -> None:
        self.socket_frame_bytes += len(event["response"].get("payloadData", "").encode())

    def transfers(self) -> list[Transfer]:
        return [hop for hops in self.requests.values() for hop in hops]

    def network_transfers(self) -> list[Transfer]:
        return [t for t in self.transfers() if urlsplit(t.url).scheme not in LOCAL_SCHEMES]

    def settled(self) -> bool:
        return all(t.done for t in self.network_transfers())


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return scheme, parts.netloc


HISTORY_USER = "historian"
HISTORY_PASSWORD = "long history battery staple"
HISTORY_SIZE = 500
# Titles as long as the ones taken from a first message (60 characters).
HISTORY_TITLE = "Question {i} about running a quantised Gemma on a laptop GPU"
# One bulk insert in the server's own database (auto_now gives each row its own `updated`),
# once per server: the browser tests of the sidebar sign in as this user too.
SEED_HISTORY = f"""
from django.contrib.auth import get_user_model
from playground.chat.models import Conversation
User = get_user_model()
if not User.objects.filter(username={HISTORY_USER!r}).exists():
    user = User.objects.create_user({HISTORY_USER!r}, password={HISTORY_PASSWORD!r})
    Conversation.objects.bulk_create(
        Conversation(owner=user, model="gemma", title={HISTORY_TITLE!r}.format(i=i)[:60])
        for i in range({HISTORY_SIZE})
    )
"""


def sign_in_with_history(page, live_server) -> None:
    """The admin exists (other tests sign in as it); this user has a long history."""
    sign_in(page, live_server.url)
    live_server.manage("shell", "-c", SEED_HISTORY)
    page.context.clear_cookies()
    page.goto("/login/")
    page.fill("#id_username", HISTORY_USER)
    page.fill("#id_password", HISTORY_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)


@pytest.mark.e2e
def test_first_conversation_view_is_light_and_same_origin(page, live_server, record_property):
    sign_in_with_history(page, live_server)

    cdp = page.context.new_cdp_session(page)
    log = NetworkLog()
    log.attach(cdp)
    cdp.send("Network.enable")
    cdp.send("Network.clearBrowserCache")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})

    sockets = Sockets(page)
    with sockets.transcript_loaded():  # waits for the socket's first frame from the server
        page.goto("/", wait_until="load")
    assert "/c/" in page.url, page.url

    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not log.settled() and time.monotonic() < deadline:
        page.wait_for_timeout(50)  # lets Playwright deliver the pending CDP events
    assert log.settled(), [t.url for t in log.network_transfers() if not t.done]

    transfers = log.network_transfers()
    by_kind: dict[str, int] = defaultdict(int)
    for t in transfers:
        by_kind[t.kind] += t.bytes
    http_bytes = sum(by_kind.values())
    total = http_bytes + log.socket_frame_bytes
    summary = (
        f"PAGE WEIGHT: {total:,} bytes transferred in {len(transfers)} requests "
        f"(html {by_kind['html']:,}, js {by_kind['js']:,}, css {by_kind['css']:,}, "
        f"other {by_kind['other']:,}, websocket frames {log.socket_frame_bytes:,}; "
        f"budget {BUDGET_BYTES:,})"
    )
    detail = "\n".join(
        f"  {t.status} {t.kind:5} {t.bytes:>8,} {t.encoding or '-':4}  {t.url}" for t in transfers
    ) + "".join(f"\n  ws               {url}" for url in log.sockets)
    print(f"\n{summary}\n{detail}")
    record_property("page_weight_bytes", total)
    record_property("page_weight", summary)

    # Everything the page needs really came over the wire, once.
    kinds = [t.kind for t in transfers]
    assert kinds.count("html") >= 1 and kinds.count("js") >= 1 and kinds.count("css") >= 1, detail
    assert log.sockets, "the conversation page opened no WebSocket"

    assert total <= BUDGET_BYTES, f"{summary}\n{detail}"

    # Scripts and styles (htmx, its ws extension, app.js, app.css) came compressed.
    plain = [t.url for t in transfers if t.kind in ("js", "css") and t.encoding not in COMPRESSED]
    assert not plain, f"sent uncompressed: {plain}\n{detail}"

    here = _origin(live_server.url)
    foreign = [t.url for t in transfers if _origin(t.url) != here]
    foreign += [url for url in log.sockets if _origin(url) != here]
    assert not foreign, f"requests to another origin: {foreign}"
