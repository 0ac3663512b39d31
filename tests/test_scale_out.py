"""Multi-process mode: PostgreSQL, Redis and two Daphne processes, driven by real WebSockets.

Any process serves any socket: a run started through process A is watched and stopped through
process B, and a socket that moves from A to B mid-reply resumes without loss or duplication.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench import client
from bench.client import View
from bench.relay import analyse, run_streams
from bench.upstream_proc import record_rows
from tests.scaleout import ScaledOut, scaled_out
from tests.upstream import Behaviour


@pytest.fixture(scope="module")
def cluster() -> Iterator[ScaledOut]:
    yield from scaled_out()


@pytest.fixture(autouse=True)
def _server_logs_on_failure(request, cluster: ScaledOut) -> Iterator[None]:
    failed_before = request.session.testsfailed
    cluster.upstream.reset()
    yield
    if request.session.testsfailed > failed_before:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(f"\n{request.node.name}: Daphne logs\n{cluster.stack.log_tails()}")


def reply_id(view: View) -> int | None:
    return view.streaming_reply()


def tokens_shown(view: View) -> int:
    reply = reply_id(view)
    return view.texts.get(reply, "").count("tok") if reply else 0


def finished(view: View) -> bool:
    reply = reply_id(view)
    return reply is not None and view.finished(reply)


async def test_a_run_started_on_one_process_is_watched_and_stopped_from_the_other(cluster):
    cluster.upstream.script(Behaviour(n_tokens=400, interval=0.02))
    conversation = cluster.conversation()
    cookie = cluster.seed.cookie
    on_a = await client.open_socket(cluster.a.url, conversation, cookie)
    on_b = await client.open_socket(cluster.b.url, conversation, cookie)
    seen_a, seen_b = View(), View()
    try:
        await client.read_until(on_a, seen_a, lambda v: v.frames >= 1, 10)
        await client.read_until(on_b, seen_b, lambda v: v.frames >= 1, 10)

        await on_a.send(client.send_payload("Count for me"))
        await client.read_until(on_b, seen_b, lambda v: tokens_shown(v) >= 10, 10)
        assert not finished(seen_b), "B saw the deltas live, before the reply completed"

        await on_b.send(client.STOP)
        await client.read_until(on_b, seen_b, finished, 10)
        await client.read_until(on_a, seen_a, finished, 10)
    finally:
        await on_a.close()
        await on_b.close()

    reply = reply_id(seen_b)
    assert reply == reply_id(seen_a)
    assert seen_a.statuses[reply] == seen_b.statuses[reply] == "stopped"
    assert await asyncio.to_thread(cluster.upstream.wait_for_disconnect, 5.0)
    assert cluster.upstream.disconnects[0].tokens_sent < 400
    status, text = cluster.stack.saved_messages([reply])[reply]
    assert status == "stopped"
    assert text == seen_b.texts[reply] == seen_a.texts[reply]
    assert text.count("tok") >= 10


async def test_a_socket_that_reconnects_to_the_other_process_resumes_without_loss(cluster):
    cluster.upstream.script(Behaviour(n_tokens=150, interval=0.02))
    conversation = cluster.conversation()
    cookie = cluster.seed.cookie

    on_a = await client.open_socket(cluster.a.url, conversation, cookie)
    first = View()
    try:
        await client.read_until(on_a, first, lambda v: v.frames >= 1, 10)
        await on_a.send(client.send_payload("Count for me"))
        await client.read_until(on_a, first, lambda v: tokens_shown(v) >= 20, 10)
        assert not finished(first), "A got the deltas live, not all at the end"
    finally:
        await on_a.close()  # the tab loses its connection mid-reply
    await asyncio.sleep(0.3)  # deltas go out while nobody watches

    on_b = await client.open_socket(cluster.b.url, conversation, cookie)
    again = View()
    try:
        await client.read_until(on_b, again, lambda v: v.frames >= 1, 10)
        reply = reply_id(again)
        assert reply == reply_id(first)
        assert again.statuses[reply] == "streaming", "B joined mid-reply"
        await client.read_until(on_b, again, finished, 15)
    finally:
        await on_b.close()

    expected = Behaviour(n_tokens=150).text
    status, saved = cluster.stack.saved_messages([reply])[reply]
    assert (status, saved) == ("complete", expected)
    assert again.texts[reply] == saved  # transcript, then snapshot, then deltas: exactly once
    assert client.check_tokens(again.texts[reply], 150) == (0, 0)


async def test_the_benchmark_runs_across_both_processes(cluster):
    tokens = 40
    cluster.upstream.default = Behaviour(n_tokens=tokens, interval=0.02)
    servers = [cluster.a.url, cluster.b.url]
    targets = [(servers[i % 2], cluster.conversation()) for i in range(10)]
    writes_before = len(cluster.stack.writes())

    results = await run_streams(
        targets, cluster.seed.cookie, tag_prefix="bench-t", ramp=0.2, timeout=20
    )

    await asyncio.sleep(0.2)
    writes = cluster.stack.writes()[writes_before:]
    stats = analyse(results, record_rows(cluster.upstream), tokens, writes)
    assert stats.errors == []
    assert (stats.ok, stats.lost, stats.duplicated, stats.wrong_text) == (10, 0, 0, 0)
    assert len(stats.added_ttft_ms) == 10
    assert stats.writes_over_budget == 0
    assert {r.server for r in results} == set(servers)


MAKE_TEAMMATE = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation
owner = get_user_model().objects.get(pk={owner})
mate = get_user_model().objects.create_user("revoked-mate")
team = Team.objects.create(name="Revocation")
Membership.objects.create(team=team, user=owner, role="owner")
Membership.objects.create(team=team, user=mate, role="member")
shared = Conversation.objects.create(owner=owner, team=team, model="empiriolabs:gemma-4-e4b")
client = Client()
client.force_login(mate)
print(json.dumps({{"cookie": client.cookies["sessionid"].value, "conversation": shared.pk}}))
"""
REMOVE_TEAMMATE = """
from playground.accounts.models import Membership
Membership.objects.get(user__username="revoked-mate").delete()
"""


async def test_a_member_removed_in_another_process_is_cut_off_at_once(cluster):
    """The removal happens in a third process (manage.py shell); the socket on A hears of it
    through Redis, is told why, and is closed, without sending anything."""
    import json

    made = await asyncio.to_thread(
        cluster.stack.manage, "shell", "-c", MAKE_TEAMMATE.format(owner=cluster.seed.user_id)
    )
    mate = json.loads(made.strip().splitlines()[-1])
    socket = await client.open_socket(cluster.a.url, mate["conversation"], mate["cookie"])
    try:
        view = View()
        await client.read_until(socket, view, lambda v: v.frames >= 1, 10)
        await asyncio.to_thread(cluster.stack.manage, "shell", "-c", REMOVE_TEAMMATE)
        told = await asyncio.wait_for(socket.recv(), 10)
        assert "no longer have access" in told
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    finally:
        await socket.close()


TEAM_SEED = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation
User = get_user_model()
lead = User.objects.get(username="bench")
mate, _ = User.objects.get_or_create(username="mate")
team = Team.create(name="Across processes", owner=lead)
team.add_member(mate, Membership.Role.VIEWER)
shared = Conversation.objects.create(owner=lead, team=team, model="empiriolabs:gemma-4-e4b")
client = Client()
client.force_login(mate)
print(json.dumps({"team": team.pk, "conversation": shared.pk,
                  "cookie": client.cookies["sessionid"].value}))
"""


async def frames_until(socket, predicate: Callable[[str], bool], timeout: float = 10) -> str:
    async with asyncio.timeout(timeout):
        while True:
            frame = await socket.recv()
            if predicate(frame):
                return frame


async def test_activity_and_presence_reach_sockets_on_the_other_process(cluster):
    """The Activity page and presence go through the channel layer: with Redis, a run on
    process A shows on an Activity page served by B, and watchers on A and B see each other."""
    # Longer than one checkpoint interval (2 s), so a progress frame comes too.
    cluster.upstream.script(Behaviour(n_tokens=200, interval=0.02))
    seeded = await asyncio.to_thread(cluster.stack.manage, "shell", "-c", TEAM_SEED)
    team = json.loads(seeded.strip().splitlines()[-1])
    activity_url = cluster.b.url.replace("http://", "ws://", 1)
    activity = await connect(
        f"{activity_url}/ws/teams/{team['team']}/activity/",
        origin=cluster.b.url,
        additional_headers={"Cookie": f"sessionid={team['cookie']}"},
        proxy=None,
    )
    lead = await client.open_socket(cluster.a.url, team["conversation"], cluster.seed.cookie)
    mate = await client.open_socket(cluster.b.url, team["conversation"], team["cookie"])
    try:
        await frames_until(activity, lambda f: 'id="activity-streaming"' in f)
        await frames_until(lead, lambda f: 'id="presence"' in f and ">MA<" in f)
        await frames_until(mate, lambda f: 'id="presence"' in f and ">BE<" in f)
        await lead.send(client.send_payload("Across processes"))
        started = await frames_until(activity, lambda f: 'id="act-' in f)
        assert "bench" in started
        await frames_until(activity, lambda f: "tokens so far" in f)
        await frames_until(activity, lambda f: 'id="fin-' in f, timeout=20)
        await lead.close()
        await frames_until(mate, lambda f: 'id="presence"' in f and ">BE<" not in f)
    finally:
        for socket in (activity, lead, mate):
            await socket.close()
