"""Sweeps: one message over a grid of parameter values and seeds, each cell an ordinary
conversation of a run group, run a few at a time by a task of the server process."""

from __future__ import annotations

import asyncio
import html
import re

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from playground.accounts.models import Membership
from playground.chat.models import Conversation, Message, RunGroup
from playground.compare import drivers, engine, setup
from tests.test_compare import client_for, lab_with, open_group
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "empiriolabs:gemma-4-e4b"
GRID = {
    "title": "Heat",
    "c1-model": MODEL,
    "c1-wire_format": "chat",
    "c1-params": "max_tokens = 50",
    "prompt": "Name a colour",
    "axis1": "temperature",
    "values1": "0, 1.4",
    "axis2": "top_p",
    "values2": "0.9, 1.0",
    "seeds": "2",
}


def make_sweep(user, team=None, **fields) -> RunGroup:
    response = client_for(user).post("/compare/sweeps/new/", {**GRID, **fields})
    assert response.status_code == 302, response.content.decode()[:2000]
    return RunGroup.objects.latest("pk")


def test_a_two_by_two_by_two_sweep_makes_eight_cells(user):
    group = make_sweep(user)
    assert group.kind == "sweep" and group.spec["prompt"] == "Name a colour"
    cells = list(group.conversations.order_by("position"))
    assert len(cells) == 8
    assert [c.params for c in cells[:3]] == [
        {"max_tokens": 50, "temperature": 0.0, "top_p": 0.9, "seed": 1},
        {"max_tokens": 50, "temperature": 0.0, "top_p": 0.9, "seed": 2},
        {"max_tokens": 50, "temperature": 0.0, "top_p": 1.0, "seed": 1},
    ]
    assert cells[-1].params["temperature"] == 1.4 and cells[-1].params["seed"] == 2
    page = client_for(user).get(f"/compare/{group.pk}/").content.decode()
    assert page.count('<tr id="cell-') == 8
    assert "8 cells not run yet" in page and "temperature=0, top_p=0.9, seed=1" in page


def test_a_sweep_over_the_cap_is_refused_and_pointed_to_experiments(user):
    response = client_for(user).post(
        "/compare/sweeps/new/",
        {
            **GRID,
            "values1": "0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2",
            "values2": "0.5, 0.9, 1.0",
            "seeds": "3",
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "This sweep has 63 cells; a sweep runs at most 48" in page
    assert "experiment" in page
    assert not RunGroup.objects.exists() and not Conversation.objects.exists()


def test_a_value_out_of_range_names_its_cell(user):
    response = client_for(user).post("/compare/sweeps/new/", {**GRID, "values1": "0, 9"})
    assert response.status_code == 400
    assert "Cell temperature=9, top_p=0.9, seed=1: temperature" in response.content.decode()
    assert not RunGroup.objects.exists()


@pytest.mark.parametrize(("field", "named"), [("title", "The title"), ("prompt", "The message")])
def test_a_title_or_message_holding_a_nul_is_refused_and_saves_nothing(user, field, named):
    # PostgreSQL keeps no NUL in text or jsonb (the spec keeps the message): a 500 there.
    response = client_for(user).post("/compare/sweeps/new/", {**GRID, field: "Heat\x00"})
    assert response.status_code == 400
    assert f"{named} holds a NUL character (\\u0000), which cannot be stored." in (
        html.unescape(response.content.decode())
    )
    assert not RunGroup.objects.exists() and not Conversation.objects.exists()


def test_the_seed_is_swept_or_counted_not_both(user):
    response = client_for(user).post(
        "/compare/sweeps/new/", {**GRID, "axis2": "seed", "values2": "1, 2"}
    )
    assert "Sweep the seed or set a number of seeds, not both." in response.content.decode()


def test_differences_from_the_baseline_cell_are_marked(user):
    group = make_sweep(user, values2="", axis2="", seeds="0")
    first, second = group.conversations.order_by("position")
    Message.objects.create(conversation=first, role="assistant", text="Blue is calm.")
    Message.objects.create(conversation=second, role="assistant", text="Red is calm.")
    page = client_for(user).get(f"/compare/{group.pk}/").content.decode()
    assert 'class="baseline"' in page and 'class="differs"' in page
    assert "<ins>Red</ins>" in page and "−1 +1 words" in page
    assert '<code class="changed">temperature=1.4</code>' in page
    # Another baseline: the second cell; now the first one differs from it.
    page = client_for(user).get(f"/compare/{group.pk}/?baseline=1").content.decode()
    assert "<ins>Blue</ins>" in page


async def until_done(group: RunGroup, timeout: float = 20.0) -> int:
    """Wait for the sweep's driver; the most replies seen streaming at once."""
    most = 0
    streaming = Message.objects.filter(conversation__group=group, status="streaming")
    async with asyncio.timeout(timeout):
        while drivers.is_running(group.pk) or await streaming.aexists():
            most = max(most, await streaming.acount())
            await asyncio.sleep(0.01)
    return most


async def test_the_grid_runs_with_a_concurrency_limit_and_streams(
    upstream, user, api_key, settings
):
    settings.PLAYGROUND_COMPARE = {**settings.PLAYGROUND_COMPARE, "SWEEP_CONCURRENCY": 3}
    upstream.default = Behaviour(tokens=["Teal", " green"], interval=0.05)
    group = await database_sync_to_async(make_sweep)(user)
    ok, socket = await open_group(user, group.pk)
    assert ok
    await socket.drain()
    await socket.send(action="start")
    assert "Running: at most 3 cells at once" in await socket.until(lambda f: "sweep-status" in f)
    most = await until_done(group)
    assert 1 < most <= 3
    await socket.drain()
    replies = [
        m
        async for m in Message.objects.filter(conversation__group=group, role="assistant")
        .select_related("conversation")
        .order_by("conversation__position")
    ]
    assert len(replies) == 8 and {r.status for r in replies} == {"complete"}
    assert {r.text for r in replies} == {"Teal green"}
    sent = sorted(
        (r.body["temperature"], r.body["top_p"], r.body["seed"]) for r in upstream.requests
    )
    assert sent == sorted((t, p, s) for t in (0.0, 1.4) for p in (0.9, 1.0) for s in (1, 2))
    assert all(
        r.body["messages"] == [{"role": "user", "content": "Name a colour"}]
        for r in upstream.requests
    )
    for reply in replies:
        assert any(f.startswith(f"+t{reply.pk}:") for f in socket.frames)
        rows = [f for f in socket.frames if f'<tr id="cell-{reply.conversation_id}"' in f]
        assert "status-complete" in rows[-1]
    assert "Every cell has run." in [f for f in socket.frames if "sweep-status" in f][-1]
    # Started again, it has nothing left to run.
    await socket.send(action="start")
    assert "Every cell of this sweep has run." in await socket.until(
        lambda f: "composer-error" in f
    )
    await socket.close()


async def test_closing_the_tab_mid_sweep_loses_nothing_and_the_page_shows_it_all(
    upstream, user, api_key, settings
):
    settings.PLAYGROUND_COMPARE = {**settings.PLAYGROUND_COMPARE, "SWEEP_CONCURRENCY": 2}
    upstream.default = Behaviour(n_tokens=4, interval=0.03)
    group = await database_sync_to_async(make_sweep)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="start")
    await socket.until(lambda f: f.startswith("+t"))
    await socket.close()
    await until_done(group)
    statuses = [
        m.status async for m in Message.objects.filter(conversation__group=group, role="assistant")
    ]
    assert statuses == ["complete"] * 8
    page = await database_sync_to_async(lambda: client_for(user).get(f"/compare/{group.pk}/"))()
    html = page.content.decode()
    assert html.count("status-complete") == 8 and "Every cell has run." in html


async def test_stop_all_stops_the_running_cells_and_starts_no_more(
    upstream, user, api_key, settings
):
    settings.PLAYGROUND_COMPARE = {**settings.PLAYGROUND_COMPARE, "SWEEP_CONCURRENCY": 2}
    upstream.default = Behaviour(n_tokens=200, interval=0.05)
    group = await database_sync_to_async(make_sweep)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="start")
    await socket.until(lambda f: f.startswith("+t"))
    await socket.send(action="stop")
    await asyncio.sleep(0.2)
    await until_done(group)
    replies = Message.objects.filter(conversation__group=group, role="assistant")
    assert {m.status async for m in replies} == {"stopped"}
    assert await replies.acount() <= 2
    pending = await database_sync_to_async(engine.pending_cells)(group)
    assert len(pending) >= 6  # to be run later with Run sweep
    await socket.close()


async def test_the_run_cap_bounds_a_sweeps_concurrency(upstream, user, api_key, settings):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "MAX_RUNS_PER_USER": 2}
    upstream.default = Behaviour(n_tokens=3, interval=0.05)
    group = await database_sync_to_async(make_sweep)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="start")
    await socket.until(lambda f: "sweep-status" in f)
    assert await until_done(group) <= 2
    assert await Message.objects.filter(role="assistant", status="complete").acount() == 8
    await socket.close()


async def test_a_viewer_cannot_start_a_team_sweep(upstream, user, other_user):
    @database_sync_to_async
    def prepare():
        team = lab_with(other_user, user, Membership.Role.VIEWER)
        client = Client()
        client.force_login(other_user)
        client.post("/space/", {"space": team.pk})
        client.post("/compare/sweeps/new/", GRID)
        return RunGroup.objects.get(team=team)

    group = await prepare()
    ok, socket = await open_group(user, group.pk)
    assert ok
    await socket.drain()
    await socket.send(action="start")
    assert "not run it" in await socket.until(lambda f: "composer-error" in f)
    await asyncio.sleep(0.1)
    assert upstream.requests == [] and not drivers.is_running(group.pk)
    await socket.close()


def test_setup_refuses_a_sweep_without_a_parameter():
    with pytest.raises(setup.SetupError, match="at least one parameter"):
        setup.plan_sweep(setup.ColumnSetup(MODEL), [("", "")], 0, "Hi")


async def test_when_the_baseline_finishes_the_rows_are_redrawn_and_streaming_ones_catch_up(
    upstream, user, api_key, settings
):
    settings.PLAYGROUND_COMPARE = {**settings.PLAYGROUND_COMPARE, "SWEEP_CONCURRENCY": 2}
    slow = Behaviour(n_tokens=40, interval=0.02)
    upstream.script(Behaviour(tokens=["Blue"], interval=0.1), slow)
    upstream.default = Behaviour(tokens=["Blue"])
    group = await database_sync_to_async(make_sweep)(user, axis2="", values2="", seeds="0")
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="start")
    await socket.until(lambda f: "sweep-status" in f)  # the driver runs
    await until_done(group)
    await socket.drain()
    assert any('id="group-body" hx-swap-oob="true"' in f for f in socket.frames[1:])
    replies = [m async for m in Message.objects.filter(conversation__group=group, role="assistant")]
    long_one = next(m for m in replies if m.text == slow.text)
    assert shown_in_row(socket.frames, long_one.pk) == slow.text
    await socket.close()


def shown_in_row(frames: list[str], message_id: int) -> str:
    """What a sweep row shows of a reply: deltas appended, a redrawn row or a snapshot
    replacing it."""
    shown = ""
    redraw = re.compile(rf'id="text-{message_id}"(?: hx-swap-oob="innerHTML")?>(.*?)</div>', re.S)
    for frame in frames:
        if frame.startswith(f"+t{message_id}:"):
            shown += frame.split(":", 1)[1]
        for match in redraw.finditer(frame):
            shown = html.unescape(match.group(1))
    return shown


async def test_a_sweep_that_would_go_over_a_budget_is_refused_before_any_cell_runs(
    upstream, user, api_key
):
    from decimal import Decimal

    from playground.accounts.models import Budget

    @database_sync_to_async
    def prepare():
        # Eight cells at $0.03 each is $0.24: over a $0.20 budget.
        Budget.set(team=None, user=user, monthly_cost=Decimal("0.20"), daily_messages=None, by=user)
        return make_sweep(user)

    group = await prepare()
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="start")
    assert "budget" in await socket.until(lambda f: "composer-error" in f)
    await asyncio.sleep(0.1)
    assert upstream.requests == [] and not drivers.is_running(group.pk)
    assert not await Message.objects.filter(conversation__group=group).aexists()
    await socket.close()


async def test_a_shutdown_mid_sweep_interrupts_its_cells_and_starts_no_more(
    upstream, user, api_key, settings, monkeypatch
):
    """SIGTERM while a sweep runs: the running cells end interrupted, and the driver starts
    no further cell (its slots free up as the shutdown interrupts them), so none is left
    "streaming" once the process exits. The cells not started stay pending, as after Stop:
    Run sweep runs them once the server is back."""
    from playground.chat import runs, shutdown

    monkeypatch.setattr(shutdown, "draining", False)
    settings.PLAYGROUND_SHUTDOWN_GRACE = 0.2
    settings.PLAYGROUND_COMPARE = {**settings.PLAYGROUND_COMPARE, "SWEEP_CONCURRENCY": 2}
    upstream.default = Behaviour(n_tokens=400, interval=0.02)
    group = await database_sync_to_async(make_sweep)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="start")
    await socket.until(lambda f: f.startswith("+t"))
    replies = Message.objects.filter(conversation__group=group, role="assistant")
    try:
        await asyncio.wait_for(shutdown.drain(), 15)
        await asyncio.sleep(0.5)  # a driver still going would have started its next cells
        assert not await replies.filter(status="streaming").aexists()
        statuses = [m.status async for m in replies]
        assert 1 <= len(statuses) <= 2
        assert set(statuses) == {"interrupted"}
        assert not drivers.is_running(group.pk)
        pending = await database_sync_to_async(engine.pending_cells)(group)
        assert len(pending) == 8 - len(statuses)  # to be run later with Run sweep
    finally:
        drivers.cancel_sweep(group.pk)
        for run in list(runs._running.values()):
            run.interrupt()
        await engine.wait_sweep(group.pk)
        for message_id in list(runs._active):
            await runs.wait(message_id)
        await socket.close()
