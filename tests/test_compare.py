"""Compare: 2-6 columns, each an ordinary conversation of a run group, sent to at once
through the normal run engine, streamed over one socket, stopped together."""

from __future__ import annotations

import asyncio
import html
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from playground.accounts.models import ApiKey, Budget, Membership, Team
from playground.chat import runs
from playground.chat.models import Conversation, LastSettings, Message, RunGroup
from playground.compare import setup
from tests.conftest import ORIGIN, SECRET_KEY_VALUE, Socket, session_cookie
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "empiriolabs:gemma-4-e4b"


def make_compare(user, team=None, columns=None, title="Duel") -> RunGroup:
    columns = columns or [
        setup.ColumnSetup(MODEL, "chat", "Be brief.", {"temperature": "0.2", "seed": "7"}),
        setup.ColumnSetup(MODEL, "messages", "", {"temperature": "1.0"}),
    ]
    return setup.create_compare(user, team, title, setup.plan_columns(columns))


async def open_group(user, group_id: int) -> tuple[bool, Socket]:
    from playground.asgi import application

    cookie = await database_sync_to_async(session_cookie)(user)
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, f"/ws/groups/{group_id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return connected, Socket(communicator)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def finish(group: RunGroup) -> None:
    ids = [
        pk
        async for pk in Message.objects.filter(conversation__group=group).values_list(
            "pk", flat=True
        )
    ]
    for pk in ids:
        await runs.wait(pk)


# HTTP: setting up and opening


def test_it_creates_a_compare_whose_columns_are_conversations_of_the_group(user):
    response = client_for(user).post(
        "/compare/new/",
        {
            "columns": "2",
            "title": "Brief or not",
            "c1-model": MODEL,
            "c1-wire_format": "chat",
            "c1-system_prompt": "Be brief.",
            "c1-params": "temperature = 0.2\nstop = END",
            "c2-model": "aimlapi:google/gemma-3n-e4b-it",
            "c2-wire_format": "chat",
            "c2-params": "top_k = 40",
        },
    )
    group = RunGroup.objects.get()
    assert response.status_code == 302 and response.url == f"/compare/{group.pk}/"
    assert group.kind == "compare" and group.owner == user and group.team is None
    first, second = group.conversations.order_by("position")
    assert (first.position, second.position) == (0, 1)
    assert first.params == {"temperature": 0.2, "stop": ["END"]}
    assert first.system_prompt == "Be brief."
    assert second.model == "aimlapi:google/gemma-3n-e4b-it" and second.params == {"top_k": 40}
    assert first.title  # never taken for an abandoned empty conversation
    page = client_for(user).get(response.url).content.decode()
    assert f'ws-connect="/ws/groups/{group.pk}/' in page
    assert f'id="column-list-{first.pk}"' in page and f'id="column-list-{second.pk}"' in page
    assert "temperature=0.2" in page and "Gemma 3n E4B" in page


def test_a_column_a_format_or_a_parameter_refuses_names_the_column_and_saves_nothing(user):
    response = client_for(user).post(
        "/compare/new/",
        {
            "columns": "2",
            "c1-model": MODEL,
            "c1-params": "temperature = 9",
            "c2-model": "aimlapi:google/gemma-3n-e4b-it",
            "c2-wire_format": "responses",
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Column 1: temperature" in page
    assert "Column 2: Gemma 3n E4B is not served over Responses" in page
    assert not RunGroup.objects.exists() and not Conversation.objects.exists()


def test_a_title_holding_a_nul_is_refused_and_saves_nothing(user):
    # PostgreSQL keeps no NUL in text: the group's and its columns' titles were a 500 there.
    response = client_for(user).post(
        "/compare/new/",
        {"columns": "2", "title": "Brief\x00", "c1-model": MODEL, "c2-model": MODEL},
    )
    assert response.status_code == 400
    assert "The title holds a NUL character (\\u0000), which cannot be stored." in (
        html.unescape(response.content.decode())
    )
    assert not RunGroup.objects.exists() and not Conversation.objects.exists()


def test_a_repeated_setup_gets_a_seed_per_column_and_shows_it(user):
    response = client_for(user).post(
        "/compare/new/",
        {"columns": "2", "c1-model": MODEL, "repeat": "3", "vary_seed": "on"},
    )
    group = RunGroup.objects.get()
    seeds = [c.params.get("seed") for c in group.conversations.order_by("position")]
    assert seeds == [1, 2, 3]
    page = client_for(user).get(response.url).content.decode()
    assert all(f"seed {n}" in page for n in (1, 2, 3))


def test_more_than_six_columns_are_refused(user):
    with pytest.raises(setup.SetupError, match="2 to 6 columns"):
        setup.plan_columns([setup.ColumnSetup(MODEL)] * 7)
    with pytest.raises(setup.SetupError, match="at most 6 times"):
        setup.plan_columns([setup.ColumnSetup(MODEL)], repeat=7)


def test_grouped_columns_stay_out_of_the_sidebar_and_history_links_their_group(user):
    group = make_compare(user)
    client = client_for(user)
    own = Conversation.objects.create(owner=user, model=MODEL, title="Plain chat")
    Message.objects.create(conversation=own, role="user", text="hi", created_by=user)
    home = client.get(f"/c/{own.pk}/").content.decode()
    assert all(f'id="conv-{c.pk}"' not in home for c in group.conversations.all())
    history = client.get("/review/").content.decode()
    assert f'href="/compare/{group.pk}/"' in history
    listing = client.get("/compare/").content.decode()
    assert f'href="/compare/{group.pk}/"' in listing and "Duel" in listing


def test_someone_elses_compare_is_a_404_everywhere(user, other_user):
    group = make_compare(other_user)
    column = group.conversations.first()
    client = client_for(user)
    assert client.get(f"/compare/{group.pk}/").status_code == 404
    assert client.get(f"/compare/{group.pk}/diff/?a={column.pk}&b={column.pk}").status_code == 404
    assert client.post(f"/compare/{group.pk}/columns/{column.pk}/continue/").status_code == 404
    assert Conversation.objects.get(pk=column.pk).group_id == group.pk


def test_continue_in_playground_turns_a_column_into_a_plain_conversation(user):
    group = make_compare(user)
    column = group.conversations.get(position=1)
    response = client_for(user).post(f"/compare/{group.pk}/columns/{column.pk}/continue/")
    assert response.status_code == 302 and response.url == f"/c/{column.pk}/"
    column.refresh_from_db()
    assert column.group_id is None and column.wire_format == "messages"
    assert group.conversations.count() == 1
    page = client_for(user).get(f"/c/{column.pk}/").content.decode()
    assert f'id="conv-{column.pk}"' not in page or "current" in page  # a normal conversation


def test_the_word_diff_of_two_columns_marks_what_changed(user):
    group = make_compare(user)
    left, right = group.conversations.order_by("position")
    for conversation, text in ((left, "The cat sat on the mat."), (right, "The dog sat on a mat.")):
        Message.objects.create(conversation=conversation, role="assistant", text=text)
    response = client_for(user).get(f"/compare/{group.pk}/diff/?a={left.pk}&b={right.pk}")
    page = response.content.decode()
    assert "<del>cat</del>" in page and "<ins>dog</ins>" in page
    assert "<del>the</del>" in page and "<ins>a</ins>" in page
    assert "temperature: 0.2 → 1.0" in page and "seed: 7 → unset" in page


def test_model_output_in_a_diff_is_escaped(user):
    group = make_compare(user)
    left, right = group.conversations.order_by("position")
    Message.objects.create(conversation=left, role="assistant", text="a")
    Message.objects.create(conversation=right, role="assistant", text="<script>x()</script>")
    page = client_for(user).get(f"/compare/{group.pk}/diff/?a={left.pk}&b={right.pk}")
    assert "<script>x()" not in page.content.decode()


# WebSocket: one message to every column


async def test_one_send_streams_every_column_through_the_run_engine_in_its_own_format(
    upstream, user, api_key
):
    upstream.default = Behaviour(tokens=["Hello", " there"], interval=0.02)
    group = await database_sync_to_async(make_compare)(user)
    ok, socket = await open_group(user, group.pk)
    assert ok
    await socket.drain()
    await socket.send(action="send", text="Greet me")
    await socket.until(lambda f: "composer-sent" in f or 'id="prompt"' in f)
    await finish(group)
    await socket.drain()
    replies = [
        m
        async for m in Message.objects.filter(conversation__group=group, role="assistant").order_by(
            "conversation__position"
        )
    ]
    assert [r.status for r in replies] == ["complete", "complete"]
    assert [r.text for r in replies] == ["Hello there", "Hello there"]
    assert [r.wire_format for r in replies] == ["chat", "messages"]
    assert sorted(r.path for r in upstream.requests) == ["/v1/chat/completions", "/v1/messages"]
    chat_body = next(r.body for r in upstream.requests if r.path.endswith("completions"))
    assert chat_body["temperature"] == 0.2
    assert chat_body["messages"][0] == {"role": "system", "content": "Be brief."}
    # Both columns' text reached the page as deltas, then each column's figures.
    for reply in replies:
        assert any(f.startswith(f"+t{reply.pk}:") for f in socket.frames)
        stats = [f for f in socket.frames if f'id="col-stats-{reply.conversation_id}"' in f]
        assert "TTFT" in stats[-1] and "tokens" in stats[-1] and "Complete" in stats[-1]
    prompts = Message.objects.filter(conversation__group=group, role="user", text="Greet me")
    assert await prompts.acount() == 2
    # A new conversation still starts from the user's own last settings, not a column's.
    assert not await LastSettings.objects.filter(user=user).aexists()
    await socket.close()


async def test_stop_all_stops_every_column(upstream, user, api_key):
    upstream.default = Behaviour(n_tokens=200, interval=0.05)
    group = await database_sync_to_async(make_compare)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Go on")
    await socket.until(lambda f: f.startswith("+t"))
    await socket.send(action="stop")
    await finish(group)
    statuses = [
        m.status async for m in Message.objects.filter(conversation__group=group, role="assistant")
    ]
    assert statuses == ["stopped", "stopped"]
    await socket.close()


async def test_closing_the_tab_loses_nothing(upstream, user, api_key):
    upstream.default = Behaviour(n_tokens=8, interval=0.03)
    group = await database_sync_to_async(make_compare)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Keep going")
    await socket.until(lambda f: f.startswith("+t"))
    await socket.close()
    await finish(group)
    replies = Message.objects.filter(conversation__group=group, role="assistant")
    assert [m.text async for m in replies] == [Behaviour(n_tokens=8).text] * 2
    page = await database_sync_to_async(lambda: client_for(user).get(f"/compare/{group.pk}/"))()
    assert page.content.decode().count("status-complete") >= 2


async def test_the_run_cap_counts_every_column_and_refuses_the_whole_send(
    upstream, user, api_key, settings
):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "MAX_RUNS_PER_USER": 2}
    columns = [setup.ColumnSetup(MODEL)] * 3
    group = await database_sync_to_async(make_compare)(user, columns=columns)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Three at once")
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "needs 3 replies at once" in frame
    await socket.drain()
    assert upstream.requests == [] and not await Message.objects.aexists()
    await socket.close()


async def test_a_budget_counts_every_column(upstream, user, api_key):
    @database_sync_to_async
    def prepare():
        Budget.set(team=None, user=user, monthly_cost=Decimal("0.05"), daily_messages=None, by=user)
        return make_compare(user)  # two columns at $0.03 each: $0.06

    group = await prepare()
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Too dear")
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "budget" in frame
    await socket.drain()
    assert upstream.requests == [] and not await Message.objects.aexists()
    await socket.close()


def lab_with(owner, role_user, role) -> Team:
    team = Team.create(name="Lab", owner=owner)
    team.add_member(role_user, role)
    ApiKey.store(provider="empiriolabs", plaintext=SECRET_KEY_VALUE, team=team)
    return team


async def test_a_viewer_watches_a_team_compare_stream_but_cannot_send_or_stop(
    upstream, user, other_user
):
    upstream.default = Behaviour(n_tokens=30, interval=0.03)

    @database_sync_to_async
    def prepare():
        team = lab_with(other_user, user, Membership.Role.VIEWER)
        return make_compare(other_user, team=team)

    group = await prepare()
    ok, watcher = await open_group(user, group.pk)
    assert ok
    await watcher.drain()
    await watcher.send(action="send", text="From a viewer")
    assert "watch this compare but not run it" in await watcher.until(
        lambda f: "composer-error" in f
    )
    await watcher.send(action="stop")
    await watcher.until(lambda f: "composer-error" in f)
    assert upstream.requests == []
    # The owner sends; the viewer sees both columns stream.
    ok, owner = await open_group(other_user, group.pk)
    await owner.drain()
    await owner.send(action="send", text="From the owner")
    await finish(group)
    await watcher.drain()
    replies = [m.pk async for m in Message.objects.filter(role="assistant")]
    assert len(replies) == 2
    assert all(any(f.startswith(f"+t{pk}:") for f in watcher.frames) for pk in replies)
    assert not any(SECRET_KEY_VALUE in f for f in watcher.frames)
    await watcher.close()
    await owner.close()


async def test_an_outsider_cannot_open_the_socket(user, other_user):
    group = await database_sync_to_async(make_compare)(other_user)
    ok, _ = await open_group(user, group.pk)
    assert not ok


async def test_a_member_removed_from_the_team_is_cut_off(upstream, user, other_user):
    @database_sync_to_async
    def prepare():
        team = lab_with(other_user, user, Membership.Role.MEMBER)
        return team, make_compare(other_user, team=team)

    team, group = await prepare()
    ok, socket = await open_group(user, group.pk)
    assert ok
    await socket.drain()
    await database_sync_to_async(team.memberships.filter(user=user).delete)()
    await socket.send(action="send", text="Still here?")
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "no longer have access" in frame
    await asyncio.sleep(0.1)
    assert upstream.requests == []


async def test_an_image_goes_to_every_column_in_its_own_wire_format(
    upstream, user, api_key, settings, tmp_path
):
    from tests.test_images import image_bytes, upload

    settings.MEDIA_ROOT = tmp_path / "media"

    @database_sync_to_async
    def prepare():
        upload(client_for(user), image_bytes("PNG"))
        from playground.chat.models import Attachment

        return make_compare(user), Attachment.objects.get().pk

    group, image = await prepare()
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="What is this?", attachment=[str(image)])
    await socket.until(lambda f: 'id="prompt"' in f or "composer-error" in f)
    await finish(group)
    assert len(upstream.requests) == 2
    chat = next(r.body for r in upstream.requests if r.path.endswith("completions"))
    parts = chat["messages"][-1]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    messages = next(r.body for r in upstream.requests if r.path.endswith("/messages"))
    assert messages["messages"][-1]["content"][1]["type"] == "image"
    await socket.close()


async def test_an_attachment_id_past_any_row_id_is_refused_not_a_crash(upstream, user, api_key):
    """An id too large for the database's integers (no row has one) is an image that is not
    there: the send is refused and says so. SQLite raised OverflowError from the query, which
    ended the send without a word."""
    group = await database_sync_to_async(make_compare)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Look", attachment=[str(2**64)])
    refused = await socket.until(lambda f: "composer-error" in f or 'id="prompt"' in f)
    assert "no longer available" in refused
    assert not await Message.objects.filter(conversation__group=group).aexists()
    await socket.close()


async def test_rerun_in_a_column_repeats_that_columns_request(upstream, user, api_key):
    group = await database_sync_to_async(make_compare)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Once")
    await socket.until(lambda f: 'id="prompt"' in f)
    await finish(group)
    second = await Message.objects.filter(
        conversation__group=group, conversation__position=1, role="assistant"
    ).afirst()
    await socket.send(action="rerun", message_id=second.pk)
    replies = Message.objects.filter(conversation_id=second.conversation_id, role="assistant")
    async with asyncio.timeout(5):
        while await replies.acount() < 2:
            await asyncio.sleep(0.02)
    await finish(group)
    assert [m.status async for m in replies] == ["complete", "complete"]
    assert [r.path for r in upstream.requests][-1] == "/v1/messages"
    await socket.close()


async def test_a_rerun_whose_socket_is_cancelled_while_its_rows_are_written_still_runs(
    upstream, user, api_key, monkeypatch
):
    """The tab closes while a column's re-run is being written: the server cancels the busy
    consumer, but the rows are written all the same, so the run starts and its reply ends,
    rather than staying "streaming" until the stale sweep."""
    from tests.test_turn_start import hold_reply_row, settled_reply

    group = await database_sync_to_async(make_compare)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Once")
    await socket.until(lambda f: 'id="prompt"' in f)
    await finish(group)
    first = await Message.objects.filter(
        conversation__group=group, conversation__position=0, role="assistant"
    ).aget()
    entered, gate = hold_reply_row(monkeypatch)
    await socket.send(action="rerun", message_id=first.pk)
    assert await asyncio.to_thread(entered.wait, 5)
    await socket.communicator.disconnect(timeout=0.1)
    assert socket.communicator.future.cancelled()  # not a clean disconnect: cancelled
    gate.set()
    column = await Conversation.objects.aget(pk=first.conversation_id)
    again = await settled_reply(column)
    assert again.pk != first.pk
    assert again.status == Message.Status.COMPLETE
    assert again.text == "tok0 tok1 tok2 tok3 tok4"
    assert runs._active == {}


async def test_a_stop_pressed_while_the_columns_are_written_stops_every_column(
    upstream, user, api_key
):
    upstream.default = Behaviour(n_tokens=100, interval=0.05)  # five seconds each
    columns = [setup.ColumnSetup(MODEL)] * 6
    group = await database_sync_to_async(make_compare)(user, columns=columns)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Go")
    await socket.send(action="stop")  # before most columns (perhaps any) are written
    replies = Message.objects.filter(conversation__group=group, role="assistant")
    async with asyncio.timeout(4):
        while await replies.acount() < 6 or await replies.filter(status="streaming").aexists():
            await asyncio.sleep(0.05)
    assert {m.status async for m in replies} == {"stopped"}
    await socket.close()


def test_a_column_can_start_from_a_prompt_version_of_its_space(user, other_user):
    from playground.prompts.models import Prompt

    prompt = Prompt.objects.create(owner=user, name="greeter")
    version = prompt.add_version(
        user,
        system_prompt="Greet warmly.",
        messages=[{"role": "user", "content": "Hi"}],
        model=MODEL,
        wire_format="responses",
        params={"temperature": 0.3, "top_p": 0.8},
    )
    templated = prompt.add_version(
        user, system_prompt="Greet {{name}}.", messages=[], model=MODEL, params={}
    )
    client = client_for(user)
    form = client.get("/compare/new/").content.decode()
    assert f'<option value="{version.pk}">greeter v1</option>' in form
    response = client.post(
        "/compare/new/",
        {
            "columns": "2",
            "title": "From the library",
            "c1-model": MODEL,
            "c1-prompt_version": str(version.pk),
            "c1-params": "temperature = 0.9",
            "c2-model": MODEL,
        },
    )
    group = RunGroup.objects.get()
    first = group.conversations.get(position=0)
    assert (first.system_prompt, first.wire_format) == ("Greet warmly.", "responses")
    assert first.params == {"temperature": 0.9, "top_p": 0.8}  # the column's own value wins
    assert group.spec["columns"][0]["prompt_version"] == version.pk
    assert "From the prompt greeter v1" in client.get(response.url).content.decode()
    # Someone else's version is refused by name; one with variables is taken (the compare's
    # Variables panel fills them in), but not as a sweep's base, which sends as written.
    data = {"columns": "2", "c1-model": MODEL, "c2-model": MODEL}
    client.post("/compare/new/", {**data, "c1-prompt_version": str(templated.pk)})
    assert RunGroup.objects.count() == 2
    with pytest.raises(setup.SetupError, match="has variables"):
        setup.plan_sweep(
            setup.ColumnSetup(MODEL, prompt_version=templated.pk),
            [("temperature", "0, 1")],
            0,
            "Hi",
            user=user,
        )
    theirs = Prompt.objects.create(owner=other_user, name="private")
    hidden = theirs.add_version(other_user, system_prompt="Secret", messages=[], model=MODEL)
    page = client.post("/compare/new/", {**data, "c1-prompt_version": str(hidden.pk)})
    assert "Column 1: No such prompt version." in page.content.decode()
    assert RunGroup.objects.count() == 2


async def test_a_send_from_a_columns_own_page_shows_in_the_compare(
    upstream, user, api_key, connect
):
    upstream.default = Behaviour(tokens=["Side", " door"], interval=0.02)
    group = await database_sync_to_async(make_compare)(user)
    column = await group.conversations.aget(position=0)
    ok, compare = await open_group(user, group.pk)
    await compare.drain()
    ok, playground = await connect(user, column.pk)
    await playground.drain()
    await playground.send_prompt("Through the playground")
    await playground.until(lambda f: "status-complete" in f)
    await finish(group)
    await compare.drain()
    redrawn = [
        f
        for f in compare.frames
        if f'id="column-list-{column.pk}" class="column-list" hx-swap-oob="true"' in f
    ]
    assert "Through the playground" in redrawn[0]
    reply = await Message.objects.filter(conversation=column, role="assistant").alast()
    done = [f for f in compare.frames if f'id="msg-{reply.pk}"' in f and "status-complete" in f]
    assert done and "Side door" in done[-1]
    await compare.close()
    await playground.close()


async def test_a_column_continued_in_the_playground_leaves_an_open_compare_page(
    upstream, user, api_key, connect
):
    """Once a column continues in the playground, the compare page still open shows it as
    moved out and no longer draws its new turns (it used to keep relaying them)."""
    upstream.default = Behaviour(tokens=["Side", " door"], interval=0.02)
    group = await database_sync_to_async(make_compare)(user)
    column = await group.conversations.aget(position=0)
    ok, compare = await open_group(user, group.pk)
    await compare.drain()
    url = f"/compare/{group.pk}/columns/{column.pk}/continue/"
    response = await database_sync_to_async(lambda: client_for(user).post(url))()
    assert response.status_code == 302
    left = await compare.until(lambda f: f'id="col-{column.pk}"' in f)
    assert "continued in the playground" in left and f'href="/c/{column.pk}/"' in left
    assert "column-list" not in left
    ok, playground = await connect(user, column.pk)
    await playground.drain()
    await playground.send_prompt("Through the playground")
    await playground.until(lambda f: "status-complete" in f)
    await runs.wait((await Message.objects.filter(conversation=column).alast()).pk)
    await compare.drain()
    assert not [f for f in compare.frames if "Through the playground" in f or "Side" in f]
    await compare.close()
    await playground.close()


async def test_a_column_deleted_from_its_own_page_is_not_said_to_continue(user, connect):
    """A column's conversation deleted (from its page) leaves the group too: the open compare
    page says it was deleted, with no link to a conversation that is gone."""
    group = await database_sync_to_async(make_compare)(user)
    column = await group.conversations.aget(position=0)
    ok, compare = await open_group(user, group.pk)
    await compare.drain()
    url = f"/c/{column.pk}/delete/"
    response = await database_sync_to_async(lambda: client_for(user).post(url))()
    assert response.status_code == 302
    left = await compare.until(lambda f: f'id="col-{column.pk}"' in f)
    assert "was deleted" in left
    assert "continued in the playground" not in left and f'href="/c/{column.pk}/"' not in left
    await compare.close()


async def test_a_regeneration_on_a_columns_own_page_leaves_the_compare_socket_open(
    upstream, user, api_key, connect
):
    """A sibling branch's frame for the column's page (its sidebar row, no streaming rows)
    is nothing the compare page draws: it used to end its socket with an IndexError."""
    group = await database_sync_to_async(make_compare)(user)
    column = await group.conversations.aget(position=0)
    ok, compare = await open_group(user, group.pk)
    await compare.drain()
    ok, playground = await connect(user, column.pk)
    await playground.drain()
    await playground.send_prompt("Through the playground")
    await playground.until(lambda f: "status-complete" in f)
    await finish(group)
    reply = await Message.objects.filter(conversation=column, role="assistant").alast()
    await playground.send(action="regenerate", message_id=reply.pk)
    await playground.until(lambda f: "status-complete" in f and f'id="msg-{reply.pk}"' not in f)
    await finish(group)
    await compare.drain()  # raises what the compare consumer raised
    assert await Message.objects.filter(conversation=column, role="assistant").acount() == 2
    await compare.close()
    await playground.close()


async def test_a_rerun_in_the_compare_shows_on_the_columns_own_page_as_a_new_branch(
    upstream, user, api_key, connect
):
    """A re-run is a sibling of the reply it repeats: the column's own page draws its branch
    again, as after a re-run there, instead of appending the new reply under the old one."""
    group = await database_sync_to_async(make_compare)(user)
    column = await group.conversations.aget(position=0)
    ok, compare = await open_group(user, group.pk)
    await compare.drain()
    await compare.send(action="send", text="Once")
    await compare.until(lambda f: 'id="prompt"' in f)
    await finish(group)
    first = await Message.objects.filter(conversation=column, role="assistant").aget()
    ok, playground = await connect(user, column.pk)
    await playground.drain()
    await compare.send(action="rerun", message_id=first.pk)
    await playground.until(lambda f: "status-complete" in f and f'id="msg-{first.pk}"' not in f)
    await finish(group)
    second = await Message.objects.filter(conversation=column, role="assistant").alast()
    assert second.pk != first.pk
    # Whatever the page drew last of the new reply was a whole branch without the old one.
    drawn = [f for f in playground.frames if f'id="msg-{second.pk}"' in f]
    assert 'hx-swap-oob="beforeend"' not in drawn[0]
    assert f'id="msg-{first.pk}"' not in drawn[0]
    await compare.close()
    await playground.close()


async def test_a_column_refused_as_its_rows_are_written_sends_nothing(
    upstream, user, api_key, monkeypatch
):
    """The rows of every column are written in one transaction: a column refused there (its
    conversation moved on since it was read) leaves no row in any column, and the upstream
    requests already begun for the others are closed."""
    from playground.compare import engine

    upstream.default = Behaviour(n_tokens=50, interval=0.05)
    columns = [setup.ColumnSetup(MODEL)] * 3
    group = await database_sync_to_async(make_compare)(user, columns=columns)
    real_write, calls, abandoned = engine.write_turn, [], []

    def write_turn(prepared, who, **options):
        calls.append(prepared.conversation.pk)
        if len(calls) == 2:
            raise engine.TurnError("The conversation changed while you sent: send again.")
        return real_write(prepared, who, **options)

    real_abandon = runs.Run.abandon

    async def abandon(run):
        abandoned.append(run.request.conversation_id)
        await real_abandon(run)

    monkeypatch.setattr(engine, "write_turn", write_turn)
    monkeypatch.setattr(runs.Run, "abandon", abandon)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="All or none")
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "Column 2: The conversation changed while you sent" in frame
    assert "Nothing was sent." in frame
    assert not await Message.objects.filter(conversation__group=group).aexists()
    ids = [pk async for pk in group.conversations.values_list("pk", flat=True)]
    assert sorted(abandoned) == sorted(ids)  # every begun upstream request was closed
    await socket.close()


def compare_with_a_templated_version(user):
    from playground.prompts.models import Prompt

    prompt = Prompt.objects.create(owner=user, name="support")
    version = prompt.add_version(
        user, system_prompt="You answer for {{company}}.", messages=[], model=MODEL, params={}
    )
    columns = [setup.ColumnSetup(MODEL, prompt_version=version.pk), setup.ColumnSetup(MODEL)]
    group = setup.create_compare(user, None, "Variables", setup.plan_columns(columns, user=user))
    return group, version


async def test_columns_from_a_prompt_version_fill_its_variables_in_and_record_the_version(
    upstream, user, api_key
):
    from playground.prompts.models import PromptRun

    upstream.default = Behaviour(tokens=["Done."])
    group, version = await database_sync_to_async(compare_with_a_templated_version)(user)
    page = await database_sync_to_async(lambda: client_for(user).get(f"/compare/{group.pk}/"))()
    html = page.content.decode()
    assert 'id="compare-variables"' in html and 'name="var:company"' in html

    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    # An undefined variable (in the system prompt, or in the message) blocks the send.
    await socket.send(action="send", text="About {{ticket}}", **{"var:company": "Acme"})
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "{{ticket}}" in frame and "nothing was sent" in frame
    assert upstream.requests == [] and not await Message.objects.aexists()

    await socket.send(
        action="send", text="About {{ticket}}", **{"var:company": "Acme", "var:ticket": "42"}
    )
    await socket.until(lambda f: "composer-sent" in f or 'id="prompt"' in f)
    await finish(group)
    bodies = sorted(
        (r.body["messages"][0]["content"], r.body["messages"][-1]["content"])
        for r in upstream.requests
    )
    # The version's column gets its system prompt filled in; both get the filled-in message.
    assert ("You answer for Acme.", "About 42") in bodies
    assert sum(1 for _, text in bodies if text == "About 42") == 2
    runs_ = [r async for r in PromptRun.objects.select_related("message__conversation")]
    assert len(runs_) == 1
    (run,) = runs_
    assert run.version_id == version.pk
    assert run.variables == {"company": "Acme", "ticket": "42"}
    assert run.message.conversation.position == 0 and run.message.text == "Done."
    # The column keeps its template for the next send; the panel remembers the values.
    column = await Conversation.objects.aget(pk=run.message.conversation_id)
    assert column.system_prompt == "You answer for {{company}}."
    page = await database_sync_to_async(lambda: client_for(user).get(f"/compare/{group.pk}/"))()
    assert ">Acme</textarea>" in page.content.decode()
    # History's prompt-version filter finds the compare's reply.
    history = await database_sync_to_async(
        lambda: client_for(user).get(f"/review/?prompt_version={version.pk}")
    )()
    assert "Variables · column 1" in history.content.decode()
    await socket.close()


@pytest.mark.parametrize("char", ["\x00", "\ud800"])
async def test_a_compare_send_holding_a_nul_or_lone_surrogate_is_refused(
    char, upstream, user, api_key
):
    # The rows of every column failed to save (PostgreSQL keeps no NUL, no database a lone
    # surrogate) after the requests had gone upstream.
    group, version = await database_sync_to_async(compare_with_a_templated_version)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="About it", **{"var:company": f"Ac{char}me"})
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "The value of {{company}} holds a " in frame and "nothing was sent" in frame
    await socket.send(action="send", text=f"About{char} it", **{"var:company": "Acme"})
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "The message holds a " in frame and "nothing was sent" in frame
    assert upstream.requests == [] and not await Message.objects.aexists()
    await socket.close()


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"var:na\ud800me": 5}, "{{na\\ud800me}} must be text"),
        ({"var:na\ud800me": "Acme\x00"}, "{{na\\ud800me}} holds a NUL character"),
        ({"result:c\ud800": 5, "action": "tool_results", "column": 0}, "result:c\\ud800"),
    ],
)
async def test_an_error_naming_a_field_holding_a_lone_surrogate_can_still_be_sent(
    fields, said, upstream, user, api_key
):
    # A hand-made field name is echoed in the error, and a frame is UTF-8, which holds no
    # lone surrogate: the server could not send the error at all.
    group = await database_sync_to_async(make_compare)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(**{"action": "send", "text": "Hi", **fields})
    frame = await socket.until(lambda f: said in html.unescape(f.encode().decode()))
    assert "composer-error" in frame
    assert upstream.requests == [] and not await Message.objects.aexists()
    await socket.close()


# The send's cost: what a column adds to its time to first token (bench/compare.py)


def test_a_columns_new_rows_are_drawn_once_for_both_pages_as_each_page_draws_them(user, api_key):
    """Each new message's row is rendered once (contexts.message_html) and goes into both
    frames: the playground's (for a socket on the column's own page) and the compare
    page's. Both are what the pages' own templates draw."""
    from django.template.loader import render_to_string

    from playground.compare import contexts, engine

    group = make_compare(user)
    prepared = engine.prepare_columns(group, user, text="Hi <both>", attachment_ids=[])
    for n, (column, _) in enumerate(prepared):
        column.run.channel = f"test.channel{n}"
    written = engine.write_columns(prepared, user)
    assert len(written) == 2
    for turn, event in written:
        prompt, reply = turn.messages
        assert event["html"] == render_to_string(
            "chat/playground.html#appended", {"transcript": turn.messages}
        )
        column = contexts._column(turn.conversation, [reply])
        assert event["compare_html"] == render_to_string(
            "compare/group.html#column-redrawn", {"col": {**column, "messages": turn.messages}}
        ).replace(' class="column-list" hx-swap-oob="true"', ' hx-swap-oob="beforeend"', 1)
        assert "Hi &lt;both&gt;" in event["compare_html"]
        assert f'id="text-{reply.pk}"' in event["compare_html"]
        assert reply.run_channel == turn.run.channel != ""


async def test_a_send_takes_two_trips_to_the_database_thread_and_reads_access_in_the_first(
    upstream, user, other_user, monkeypatch
):
    """A send reads the sender's access again from the database (a role lowered without any
    signal still refuses it) in the same trip as its columns' preparation: two trips in all
    before the columns stream (prepare, write), none of its own for the check."""
    from playground.compare import consumers, engine

    @database_sync_to_async
    def prepare():
        team = lab_with(other_user, user, Membership.Role.MEMBER)
        return make_compare(other_user, team=team)

    group = await prepare()
    ok, socket = await open_group(user, group.pk)
    assert ok
    await socket.drain()
    trips = []

    def counting(module):
        real = module.database_sync_to_async

        def wrapper(fn, *args, **kwargs):
            trips.append(getattr(fn, "__name__", repr(fn)))
            return real(fn, *args, **kwargs)

        monkeypatch.setattr(module, "database_sync_to_async", wrapper)

    counting(consumers)
    counting(engine)
    await socket.send(action="send", text="Two trips")
    await socket.until(lambda f: "composer-sent" in f or 'id="prompt"' in f)
    await finish(group)  # the rows exist once the composer is cleared
    # (A column that finished is then drawn again, member_html: after the send.)
    assert trips[:2] == ["prepare", "write_columns"]
    assert "check_group_access" not in trips and "write_columns" not in trips[2:]
    assert await Message.objects.filter(conversation__group=group).acount() == 4
    # Lowered to viewer with no signal (no revocation): the kept decision still says
    # "may run", the send's own read says otherwise, and nothing goes upstream.
    sent = len(upstream.requests)
    await Membership.objects.filter(user=user).aupdate(role=Membership.Role.VIEWER)
    await socket.send(action="send", text="Not any more")
    assert "watch this compare but not run it" in await socket.until(
        lambda f: "composer-error" in f
    )
    await asyncio.sleep(0.1)
    assert len(upstream.requests) == sent
    assert await Message.objects.filter(conversation__group=group).acount() == 4
    await socket.close()


def test_a_send_reads_its_columns_their_prompt_versions_and_the_run_count_in_one_query(
    user, api_key
):
    """read_columns: the columns in order, whether any comes from a prompt version, and the
    user's streaming replies, in one statement (not three)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from playground.compare import contexts, engine

    columns = [setup.ColumnSetup(MODEL)] * 3
    group = make_compare(user, columns=columns)
    found, from_versions, running = engine.read_columns(group, user)
    assert [c.pk for c in found] == [c.pk for c in contexts.members(group)]
    assert [c.params for c in found] == [c.params for c in contexts.members(group)]
    assert (from_versions, running) == (False, 0)
    with CaptureQueriesContext(connection) as queries:
        prepared = engine.prepare_columns(group, user, text="Count", attachment_ids=[])
    assert len(prepared) == 3
    first, *rest = [q["sql"] for q in queries.captured_queries]
    assert "prompts_promptsession" in first and "COUNT(" in first
    assert not [s for s in rest if "prompts_promptsession" in s or "COUNT(" in s]
    assert not [s for s in rest if s.startswith('SELECT "chat_conversation"')]


def test_a_compare_from_prompt_versions_is_known_as_such_by_the_one_query(user):
    from playground.compare import engine

    group, _ = compare_with_a_templated_version(user)
    _, from_versions, running = engine.read_columns(group, user)
    assert bool(from_versions) is True
    assert running == 0


def test_a_repeated_column_keeps_its_prompt_version(user):
    # "Repeat column 1" runs column 1's setup: when that is a prompt version, the version's.
    from playground.prompts.models import Prompt

    prompt = Prompt.objects.create(owner=user, name="greeter")
    version = prompt.add_version(
        user,
        system_prompt="Greet warmly.",
        messages=[{"role": "user", "content": "Hi"}],
        model="aimlapi:google/gemma-3n-e4b-it",
        params={"top_p": 0.8},
    )
    client_for(user).post(
        "/compare/new/",
        {
            "columns": "2",
            "c1-model": MODEL,
            "c1-prompt_version": str(version.pk),
            "repeat": "2",
            "vary_seed": "on",
        },
    )
    group = RunGroup.objects.get()
    columns = list(group.conversations.order_by("position"))
    assert [(c.system_prompt, c.model) for c in columns] == [
        ("Greet warmly.", "aimlapi:google/gemma-3n-e4b-it")
    ] * 2
    assert [c.params for c in columns] == [{"top_p": 0.8, "seed": 1}, {"top_p": 0.8, "seed": 2}]
    assert [c["prompt_version"] for c in group.spec["columns"]] == [version.pk] * 2


def test_a_prompt_version_that_is_not_a_number_is_ignored_like_none(user):
    # "²".isdigit() is true, but int() refuses it: it must read as no version, as "abc" does.
    for raw in ("abc", "²"):
        response = client_for(user).post(
            "/compare/new/",
            {"columns": "2", "c1-model": MODEL, "c2-model": MODEL, "c1-prompt_version": raw},
        )
        assert response.status_code == 302, response.content.decode()[:200]
    assert RunGroup.objects.count() == 2
