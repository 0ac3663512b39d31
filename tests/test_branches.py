"""Branches: editing a message or regenerating a reply makes a sibling branch; ‹ › switches the
branch a conversation shows and continues; only the active branch is sent upstream."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]
GEMMA_4 = "empiriolabs:gemma-4-e4b"


def sent(request) -> list[tuple[str, str]]:
    """(role, content) of each message an upstream request carried."""
    return [(m["role"], m["content"]) for m in request.body["messages"]]


async def complete(socket) -> str:
    return await socket.until(lambda f: "status-complete" in f and "hx-swap-oob" in f)


async def two_turns(upstream, socket, conversation) -> tuple[list[Message], list[str]]:
    """ "First" and "Second" sent, each answered: the rows in order and the reply texts."""
    upstream.script(Behaviour(tokens=["One"]), Behaviour(tokens=["Two"]))
    await socket.send_prompt("First")
    await socket.until(lambda f: "status-complete" in f)
    await socket.send_prompt("Second")
    await socket.until(lambda f: "status-complete" in f)
    rows = [m async for m in Message.objects.filter(conversation=conversation).order_by("pk")]
    return rows, ["One", "Two"]


def reply_done(frame: str) -> bool:
    """The run's last frame: its reply, rendered out of band. Not a redrawn transcript (an
    edit or a regeneration redraws it at once), whose earlier replies are complete too."""
    return "status-complete" in frame and 'id="transcript"' not in frame


def page_of(user, conversation) -> str:
    client = Client()
    client.force_login(user)
    return client.get(f"/c/{conversation.pk}/").content.decode()


async def test_editing_a_message_makes_a_sibling_and_sends_only_the_path_above_it(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    (first, one, second, two), _ = await two_turns(upstream, socket, conversation)
    upstream.script(Behaviour(tokens=["Three"]))

    await socket.send(action="edit", message_id=second.pk, text="Second, edited")
    frame = await socket.until(lambda f: 'id="transcript"' in f)
    await socket.until(lambda f: "status-complete" in f)

    edited = await Message.objects.aget(conversation=conversation, text="Second, edited")
    three = await Message.objects.aget(conversation=conversation, parent=edited)
    assert edited.parent_id == one.pk == second.parent_id  # a sibling of the original
    assert three.text == "Three" and three.status == "complete"
    assert sent(upstream.requests[-1]) == [
        ("user", "First"),
        ("assistant", "One"),
        ("user", "Second, edited"),
    ]
    conv = await Conversation.objects.aget(pk=conversation.pk)
    assert conv.active_leaf_id == three.pk
    # The redrawn transcript is the new branch, with "‹ 2 / 2 ›" on the edited message.
    assert f"msg-{edited.pk}" in frame and f"msg-{second.pk}" not in frame
    assert '<span class="branch-pos">2 / 2</span>' in frame
    # The original branch is kept whole, and each reply keeps the request it came from.
    assert await Message.objects.filter(pk__in=[second.pk, two.pk]).acount() == 2
    assert three.request_body["messages"][-1] == {"role": "user", "content": "Second, edited"}
    two = await Message.objects.aget(pk=two.pk)
    assert two.request_body["messages"][-1] == {"role": "user", "content": "Second"}


async def test_regenerating_makes_a_sibling_reply_with_the_settings_as_they_are_now(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    (first, one, second, two), _ = await two_turns(upstream, socket, conversation)
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params={"temperature": 1.3})
    upstream.script(Behaviour(tokens=["One again"]))

    # The first reply, not the latest: its branch is only the first turn.
    await socket.send(action="regenerate", message_id=one.pk)
    await socket.until(lambda f: "One again" in f and "status-complete" in f)

    again = await Message.objects.aget(conversation=conversation, text="One again")
    assert again.parent_id == first.pk and again.role == "assistant"
    assert sent(upstream.requests[-1]) == [("user", "First")]
    assert upstream.requests[-1].body["temperature"] == 1.3
    assert (await Conversation.objects.aget(pk=conversation.pk)).active_leaf_id == again.pk
    # The finished reply, drawn by its run, keeps its "‹ 2 / 2 ›".
    done = [f for f in socket.frames if f'id="msg-{again.pk}"' in f and "status-complete" in f]
    assert '<span class="branch-pos">2 / 2</span>' in done[-1]


async def test_switching_shows_the_branch_keeps_it_on_reload_and_continues_it(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    (first, one, second, two), _ = await two_turns(upstream, socket, conversation)
    upstream.script(Behaviour(tokens=["Three"]))
    await socket.send(action="edit", message_id=second.pk, text="Second, edited")
    await socket.until(reply_done)
    ok, watcher = await connect(user, conversation.pk)  # another tab
    await watcher.drain()

    await socket.send(action="switch", message_id=second.pk)
    frame = await socket.until(lambda f: 'id="transcript"' in f)
    other_tab = await watcher.until(lambda f: 'id="transcript"' in f)

    for shown in (frame, other_tab):
        assert f"msg-{two.pk}" in shown and "Second, edited" not in shown
        assert '<span class="branch-pos">1 / 2</span>' in shown
    conv = await Conversation.objects.aget(pk=conversation.pk)
    assert conv.active_leaf_id == two.pk
    page = await database_sync_to_async(page_of)(user, conversation)
    assert f'id="msg-{two.pk}"' in page and "Second, edited</div>" not in page

    upstream.script(Behaviour(tokens=["Four"]))
    await socket.send_prompt("Third")
    await socket.until(lambda f: "status-complete" in f)
    assert sent(upstream.requests[-1]) == [
        ("user", "First"),
        ("assistant", "One"),
        ("user", "Second"),
        ("assistant", "Two"),
        ("user", "Third"),
    ]
    third = await Message.objects.aget(conversation=conversation, text="Third")
    assert third.parent_id == two.pk


async def test_a_switch_to_a_message_of_another_conversation_is_refused(
    upstream, user, api_key, conversation, connect
):
    other = await Conversation.objects.acreate(owner=user, model=GEMMA_4)
    foreign = await Message.objects.acreate(conversation=other, role="user", text="Elsewhere")
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    await socket.send(action="switch", message_id=foreign.pk)
    assert "not in this conversation" in await socket.until(lambda f: "composer-error" in f)
    assert (await Conversation.objects.aget(pk=conversation.pk)).active_leaf_id is None


async def test_an_edit_of_another_conversations_message_is_refused(
    upstream, user, api_key, conversation, connect
):
    other = await Conversation.objects.acreate(owner=user, model=GEMMA_4)
    foreign = await Message.objects.acreate(conversation=other, role="user", text="Elsewhere")
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    await socket.send(action="edit", message_id=foreign.pk, text="Hijack")
    assert "can be edited" in await socket.until(lambda f: "composer-error" in f)
    assert not upstream.requests
    assert not await Message.objects.filter(text="Hijack").aexists()


async def test_stop_and_resume_work_on_a_branch_that_is_not_the_latest(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    (first, one, second, two), _ = await two_turns(upstream, socket, conversation)
    upstream.script(Behaviour(n_tokens=500, interval=0.01))
    await socket.send(action="regenerate", message_id=one.pk)
    await socket.until(lambda f: f.startswith("+t"))
    again = await Message.objects.filter(conversation=conversation).alast()
    assert again.parent_id == first.pk and again.status == "streaming"

    # A tab that joins now (a reload) sees the new branch streaming and catches up from the
    # run's snapshot, then carries on with the deltas.
    ok, late = await connect(user, conversation.pk)
    joined = await late.until(lambda f: 'id="transcript"' in f)
    assert f"msg-{again.pk}" in joined and f"msg-{second.pk}" not in joined
    await late.until(lambda f: f'id="text-{again.pk}" hx-swap-oob="innerHTML"' in f)
    await late.until(lambda f: f.startswith(f"+t{again.pk}:"))

    await late.send(action="stop")
    await late.until(lambda f: "status-stopped" in f)
    again = await Message.objects.aget(pk=again.pk)
    assert again.status == "stopped" and 0 < len(again.text) < len(" tok".join("x" * 500))
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 5)
    two = await Message.objects.aget(pk=two.pk)
    assert two.status == "complete" and two.text == "Two"  # the other branch is untouched


@pytest.fixture
def team_world(django_user_model):
    owner = django_user_model.objects.create_user("founder", password="x")
    viewer = django_user_model.objects.create_user("vera", password="x")
    team = Team.create(name="Lab", owner=owner)
    team.add_member(viewer, Membership.Role.VIEWER)
    conversation = Conversation.objects.create(owner=owner, team=team, model=GEMMA_4)
    prompt = Message.objects.create(conversation=conversation, role="user", text="Hello")
    body = {"model": "gemma-4-e4b", "messages": [{"role": "user", "content": "Hello"}]}
    old = Message.objects.create(
        conversation=conversation,
        parent=prompt,
        role="assistant",
        model=GEMMA_4,
        text="The quick brown fox <script>alert(1)</script>",
        request_body={**body, "temperature": 0.2, "stream": True},
    )
    new = Message.objects.create(
        conversation=conversation,
        parent=prompt,
        role="assistant",
        model=GEMMA_4,
        text="The slow brown fox <script>alert(1)</script>",
        request_body={**body, "temperature": 0.9, "seed": 7, "stream": True},
    )
    conversation.active_leaf = new
    conversation.save()
    return owner, viewer, conversation, old, new


async def test_a_viewer_switches_in_their_own_tab_only(team_world, connect):
    owner, viewer, conversation, old, new = team_world
    ok, socket = await connect(viewer, conversation.pk)
    await socket.drain()
    await socket.send(action="switch", message_id=old.pk)
    frame = await socket.until(lambda f: 'id="transcript"' in f)
    assert f"msg-{old.pk}" in frame and f"msg-{new.pk}" not in frame
    assert (await Conversation.objects.aget(pk=conversation.pk)).active_leaf_id == new.pk
    await socket.send(action="regenerate", message_id=old.pk)
    assert "not run it" in await socket.until(lambda f: "composer-error" in f)


def test_the_page_shows_the_active_branch_with_its_arrows(client, team_world):
    owner, viewer, conversation, old, new = team_world
    client.force_login(owner)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert f'id="msg-{new.pk}"' in page and f'id="msg-{old.pk}"' not in page
    assert '<span class="branch-pos">2 / 2</span>' in page
    assert f'"message_id": {old.pk}' in page  # ‹ goes to the older sibling
    assert f"/review/diff/?a={old.pk}&amp;b={new.pk}" in page
    client.force_login(viewer)
    assert 'class="app watch-only"' in client.get(f"/c/{conversation.pk}/").content.decode()


def test_the_diff_page_shows_both_replies_word_by_word_and_their_parameters(client, team_world):
    owner, viewer, conversation, old, new = team_world
    client.force_login(viewer)  # reading is enough
    response = client.get("/review/diff/", {"a": old.pk, "b": new.pk})
    page = response.content.decode()
    assert response.status_code == 200
    assert "<del>quick</del>" in page and "<ins>slow</ins>" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    params = page[page.index('class="param-diff"') : page.index("</table>")]
    row = '<th scope="row">temperature</th><td><code>0.2</code></td><td><code>0.9</code>'
    assert row in params
    assert "seed" in params and "unset (provider default)" in params
    assert "model" not in params.replace('<th scope="col">', "")  # same model: not listed


def test_the_diff_picker_offers_the_siblings(client, team_world):
    owner, viewer, conversation, old, new = team_world
    client.force_login(owner)
    page = client.get("/review/diff/", {"a": old.pk}).content.decode()
    assert f'<option value="{new.pk}">Sibling' in page


def test_the_diff_page_needs_both_replies_visible(client, team_world, django_user_model):
    owner, viewer, conversation, old, new = team_world
    outsider = django_user_model.objects.create_user("eve", password="x")
    mine = Conversation.objects.create(owner=outsider, model=GEMMA_4)
    own = Message.objects.create(conversation=mine, role="assistant", text="Mine")
    client.force_login(outsider)
    assert client.get("/review/diff/", {"a": own.pk, "b": new.pk}).status_code == 404
    assert client.get("/review/diff/", {"a": new.pk}).status_code == 404
    assert client.get("/review/diff/", {"a": "x", "b": own.pk}).status_code == 404
    prompt = Message.objects.get(conversation=conversation, role="user")
    client.force_login(owner)
    assert client.get("/review/diff/", {"a": prompt.pk, "b": new.pk}).status_code == 404
    client.logout()
    assert client.get("/review/diff/", {"a": old.pk, "b": new.pk}).status_code == 302


async def test_the_exports_keep_every_branch_made_by_edits_and_regenerations(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    (first, one, second, two), _ = await two_turns(upstream, socket, conversation)
    await socket.send(action="edit", message_id=second.pk, text="Second, edited")
    await socket.until(reply_done)
    await socket.send(action="regenerate", message_id=one.pk)
    await socket.until(reply_done)

    def download(fmt: str) -> str:
        client = Client()
        client.force_login(user)
        response = client.get(f"/review/c/{conversation.pk}/export.{fmt}")
        return b"".join(response.streaming_content).decode()

    tree = json.loads(await database_sync_to_async(download)("json"))
    assert len(tree["messages"]) == await Message.objects.filter(conversation=conversation).acount()
    parents = [m["parent"] for m in tree["messages"]]
    assert parents.count(1) == 2 and parents.count(2) == 2  # two replies to First, two Seconds
    lines = (await database_sync_to_async(download)("jsonl")).splitlines()
    paths = [[m["content"] for m in json.loads(line)["messages"]] for line in lines]
    assert len(paths) == 3  # one per leaf
    assert ["First", "One", "Second", "Two"] in paths
    assert ["First", "One", "Second, edited", "tok0 tok1 tok2 tok3 tok4"] in paths


def test_the_diff_picker_finds_replies_of_other_visible_conversations(
    client, team_world, django_user_model
):
    owner, viewer, conversation, old, new = team_world
    elsewhere = Conversation.objects.create(owner=owner, model=GEMMA_4, title="Otters")
    ask = Message.objects.create(conversation=elsewhere, role="user", text="Tell me of otters")
    theirs = Message.objects.create(
        conversation=elsewhere, parent=ask, role="assistant", text="Otters hold hands."
    )
    stranger = django_user_model.objects.create_user("eve", password="x")
    hidden = Conversation.objects.create(owner=stranger, model=GEMMA_4, title="Otters too")
    Message.objects.create(conversation=hidden, role="assistant", text="Secret otters.")
    client.force_login(owner)
    page = client.get("/review/diff/", {"a": old.pk, "q": "otters"}).content.decode()
    assert f"/review/diff/?a={old.pk}&amp;b={theirs.pk}" in page
    assert "Secret otters" not in page
    page = client.get("/review/diff/", {"a": old.pk, "q": "NEAR( * "}).content.decode()
    assert 'class="error"' in page or "diff-found" in page  # refused or searched, never a 500


def test_a_shared_conversation_shows_its_active_branch(client, team_world):
    from playground.review import sharing

    owner, viewer, conversation, old, new = team_world
    link, token = sharing.create(owner, conversation, message=None, expires_in=None)
    page = Client().get(f"/review/s/{token}/").content.decode()
    assert "The slow brown fox" in page and "The quick brown fox" not in page


def test_the_json_export_names_the_active_branch_and_import_restores_it(client, team_world):
    owner, viewer, conversation, old, new = team_world
    Conversation.objects.filter(pk=conversation.pk).update(active_leaf=old)
    client.force_login(owner)
    body = b"".join(client.get(f"/review/c/{conversation.pk}/export.json").streaming_content)
    exported = json.loads(body)
    assert exported["active_leaf"] == 2  # the first reply: messages are numbered in order
    upload = ContentFile(body, name="branches.json")
    response = client.post("/review/import/", {"space": "", "file": upload})
    copy = Conversation.objects.exclude(pk=conversation.pk).get(owner=owner)
    assert response.status_code == 302
    assert copy.active_leaf.text == old.text
    again = b"".join(client.get(f"/review/c/{copy.pk}/export.json").streaming_content)
    assert json.loads(again)["active_leaf"] == 2
    exported["active_leaf"] = 9
    upload = ContentFile(json.dumps(exported).encode(), name="bad.json")
    response = client.post("/review/import/", {"space": "", "file": upload})
    assert response.status_code == 400 and "names no message" in response.content.decode()


def test_a_history_hit_on_a_reply_offers_its_diff(client, team_world):
    owner, viewer, conversation, old, new = team_world
    client.force_login(viewer)
    page = client.get("/review/", {"q": "slow"}).content.decode()
    assert f'href="/review/diff/?a={new.pk}">Diff with…</a>' in page


def test_replies_without_a_saved_request_can_be_diffed(client, user, conversation):
    first = Message.objects.create(conversation=conversation, role="assistant", text="A b c")
    second = Message.objects.create(conversation=conversation, role="assistant", text="A c")
    client.force_login(user)
    page = client.get("/review/diff/", {"a": first.pk, "b": second.pk}).content.decode()
    assert "<del>b </del>" in page or "<del>b</del>" in page
    assert "Same model, prompt and parameters." in page


def test_a_link_to_a_message_off_the_active_branch_opens_its_branch(client, team_world):
    owner, viewer, conversation, old, new = team_world
    client.force_login(owner)
    page = client.get(f"/c/{conversation.pk}/", {"at": old.pk}).content.decode()
    assert f'id="msg-{old.pk}"' in page and f'id="msg-{new.pk}"' not in page
    assert "branch-notice" in page and f'"action": "switch", "message_id": {old.pk}' in page
    assert f'ws-connect="/ws/conversations/{conversation.pk}/?v=' in page
    assert f'&amp;at={old.pk}"' in page
    # On the active branch (or a message not of this conversation), the page is as usual.
    for at in (new.pk, 999999, "x"):
        page = client.get(f"/c/{conversation.pk}/", {"at": at}).content.decode()
        assert f'id="msg-{new.pk}"' in page and "branch-notice" not in page
    assert (Conversation.objects.get(pk=conversation.pk)).active_leaf_id == new.pk


async def test_a_socket_opened_at_another_branch_shows_it_until_the_branch_changes(
    team_world, upstream
):
    from channels.testing import WebsocketCommunicator

    from playground.asgi import application
    from tests.conftest import ORIGIN, Socket, session_cookie

    owner, viewer, conversation, old, new = team_world
    cookie = await database_sync_to_async(session_cookie)(owner)
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN), (b"cookie", cookie)]
    path = f"/ws/conversations/{conversation.pk}/?at={old.pk}"
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    socket = Socket(communicator)
    assert connected
    opened = await socket.until(lambda f: 'id="transcript"' in f)
    assert f"msg-{old.pk}" in opened and "branch-notice" in opened
    await socket.send(action="switch", message_id=old.pk)  # "Continue this branch"
    switched = await socket.until(lambda f: 'id="transcript"' in f)
    assert f"msg-{old.pk}" in switched and "branch-notice" not in switched
    assert (await Conversation.objects.aget(pk=conversation.pk)).active_leaf_id == old.pk
    await socket.close()


def test_the_review_bars_load_for_the_branch_shown(client, team_world):
    owner, viewer, conversation, old, new = team_world
    client.force_login(owner)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    url = reverse("review:conversation_review", args=[conversation.pk])
    assert f"{url}?leaf={new.pk}" in page
    bars = client.get(url, {"leaf": new.pk}).content.decode()
    assert f'id="review-{new.pk}"' in bars and f'id="review-{old.pk}"' not in bars
    everything = client.get(url).content.decode()
    assert f'id="review-{new.pk}"' in everything and f'id="review-{old.pk}"' in everything
