"""docs/permissions.md, walked: every row of the table, for every role, over the door the
table names (HTTP or WebSocket). The table is read from the document itself, so changing a
rule means changing the written table, and the other way round."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone

from playground.accounts.models import ApiKey, Budget, Invitation, Membership, Team
from playground.chat import runs
from playground.chat.models import Conversation, Message, Preset, RunGroup
from playground.experiments.models import Dataset, DatasetRow, Experiment, ExperimentRun, Item
from playground.review.models import (
    Annotation,
    Comment,
    Label,
    Mention,
    QueueItem,
    ReviewQueue,
    ReviewStatus,
    ShareLink,
)

pytestmark = [pytest.mark.django_db(transaction=True)]

TABLE = Path(__file__).resolve().parents[1] / "docs" / "permissions.md"
MODEL = "empiriolabs:gemma-4-e4b"
TEAM_KEY = "sk-team-PLAINTEXT-never-shown-4321"
OUTSIDER = "not a member"
DUMMY_TASKS = "django_tasks.backends.dummy.DummyBackend"


def read_table() -> list[tuple[str, str, str, bool]]:
    """(key, door, role, allowed) for every cell of the table."""
    lines = [line for line in TABLE.read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    roles = header[3:]
    cells = []
    for line in lines[2:]:
        row = [cell.strip() for cell in line.strip("|").split("|")]
        key = re.fullmatch(r"`(\w+)`", row[1])
        assert key, f"a row of {TABLE.name} without a `key`: {line}"
        for role, mark in zip(roles, row[3:], strict=True):
            assert mark in "✓✗", f"{key[1]}/{role}: {mark!r} is neither ✓ nor ✗"
            cells.append((key[1], row[2], role, mark == "✓"))
    return cells


@dataclass
class World:
    team: Team
    actor: User
    founder: User  # another owner: the actor is never the last one
    mate: User  # a plain member, for role changes and removal
    shared: Conversation  # started by the founder
    reply: Message  # a finished reply in it, to re-run
    preset: Preset
    invitation: Invitation
    personal: Conversation  # the actor's own, to move in
    client: Client


def build_world(role: str) -> World:
    def account(name: str) -> User:
        return User.objects.create_user(name)  # no password: hashing one costs ~0.2 s

    actor, founder, mate = account("actor"), account("founder"), account("mate")
    account("newbie")
    team = Team.create(name="Lab", owner=founder)
    team.add_member(mate, Membership.Role.MEMBER)
    if role != OUTSIDER:
        team.add_member(actor, role)
    ApiKey.store(provider="empiriolabs", plaintext=TEAM_KEY, team=team)
    shared = Conversation.objects.create(owner=founder, team=team, model=MODEL, title="Shared")
    prompt = Message.objects.create(
        conversation=shared, role=Message.Role.USER, text="Hello", created_by=founder
    )
    body = {"model": "gemma-4-e4b", "messages": [{"role": "user", "content": "Hello"}]}
    reply = Message.objects.create(
        conversation=shared,
        parent=prompt,
        role=Message.Role.ASSISTANT,
        text="Earlier answer",
        model=MODEL,
        request_body={**body, "stream": True},
        created_by=founder,
    )
    preset = Preset.objects.create(
        owner=founder, team=team, name="Team preset", model=MODEL, system_prompt="From preset"
    )
    invitation, _ = Invitation.create(team, "member", by=team.memberships.get(user=founder))
    personal = Conversation.objects.create(owner=actor, model=MODEL, title="Mine")
    client = Client()
    client.force_login(actor)
    return World(team, actor, founder, mate, shared, reply, preset, invitation, personal, client)


# HTTP: each returns whether the action took effect (never only the status code).


def http_open(w: World) -> bool:
    response = w.client.get(f"/c/{w.shared.pk}/")
    return response.status_code == 200 and b"Earlier answer" in response.content


def http_settings(w: World) -> bool:
    data = {"model": MODEL, "system_prompt": "Changed"}
    w.client.post(f"/c/{w.shared.pk}/settings/", data, headers={"HX-Request": "true"})
    return Conversation.objects.get(pk=w.shared.pk).system_prompt == "Changed"


def http_rename(w: World) -> bool:
    w.client.post(f"/c/{w.shared.pk}/rename/", {"title": "Renamed"})
    return Conversation.objects.get(pk=w.shared.pk).title == "Renamed"


def http_new_conversation(w: World) -> bool:
    w.client.post("/space/", {"space": w.team.pk})
    w.client.post("/c/new/")
    return Conversation.objects.filter(team=w.team, owner=w.actor).exists()


def http_move_in(w: World) -> bool:
    w.client.post(f"/c/{w.personal.pk}/move/", {"team": w.team.pk})
    return Conversation.objects.get(pk=w.personal.pk).team_id == w.team.pk


def http_delete_others(w: World) -> bool:
    w.client.post(f"/c/{w.shared.pk}/delete/")
    return not Conversation.objects.filter(pk=w.shared.pk).exists()


def http_preset_save(w: World) -> bool:
    data = {"preset_name": "Saved", "model": MODEL}
    w.client.post(f"/c/{w.shared.pk}/presets/", data, headers={"HX-Request": "true"})
    return Preset.objects.filter(team=w.team, name="Saved").exists()


def http_preset_load(w: World) -> bool:
    url = f"/c/{w.shared.pk}/presets/{w.preset.pk}/load/"
    w.client.post(url, headers={"HX-Request": "true"})
    return Conversation.objects.get(pk=w.shared.pk).system_prompt == "From preset"


def http_preset_change(w: World) -> bool:
    url = f"/c/{w.shared.pk}/presets/{w.preset.pk}/rename/"
    w.client.post(url, {"name": "Renamed preset"}, headers={"HX-Request": "true"})
    return Preset.objects.get(pk=w.preset.pk).name == "Renamed preset"


def http_team_page(w: World) -> bool:
    response = w.client.get(f"/teams/{w.team.pk}/")
    return response.status_code == 200 and b"founder" in response.content


def http_key_last_four(w: World) -> bool:
    pages = [w.client.get(f"/c/{w.shared.pk}/"), w.client.get(f"/teams/{w.team.pk}/")]
    # Whatever the role: the key itself is on no page.
    assert not any(TEAM_KEY.encode() in page.content for page in pages)
    return all(page.status_code == 200 and "••••4321" in page.content.decode() for page in pages)


def http_add_member(w: World) -> bool:
    w.client.post(f"/teams/{w.team.pk}/members/", {"username": "newbie", "role": "member"})
    return w.team.memberships.filter(user__username="newbie").exists()


def http_invite(w: World) -> bool:
    w.client.post(f"/teams/{w.team.pk}/invitations/", {"role": "viewer"})
    return Invitation.objects.filter(team=w.team, role="viewer").exists()


def http_revoke_invite(w: World) -> bool:
    w.client.post(f"/teams/{w.team.pk}/invitations/{w.invitation.pk}/revoke/")
    return Invitation.objects.get(pk=w.invitation.pk).state == "revoked"


def _set_role(w: World, user: User, role: str) -> bool:
    membership = w.team.memberships.get(user=user)
    w.client.post(f"/teams/{w.team.pk}/members/{membership.pk}/role/", {"role": role})
    return w.team.memberships.get(user=user).role == role


def http_change_role(w: World) -> bool:
    return _set_role(w, w.mate, "viewer")


def http_make_owner(w: World) -> bool:
    return _set_role(w, w.mate, "owner")


def http_demote_owner(w: World) -> bool:
    return _set_role(w, w.founder, "admin")


def http_remove_member(w: World) -> bool:
    membership = w.team.memberships.get(user=w.mate)
    w.client.post(f"/teams/{w.team.pk}/members/{membership.pk}/remove/")
    return not w.team.memberships.filter(user=w.mate).exists()


def http_leave(w: World) -> bool:
    was_member = w.team.memberships.filter(user=w.actor).exists()
    w.client.post(f"/teams/{w.team.pk}/leave/")
    return was_member and not w.team.memberships.filter(user=w.actor).exists()


def http_team_key(w: World) -> bool:
    data = {"provider": "empiriolabs", "key": "sk-replaced-team-key-9999"}
    w.client.post(f"/teams/{w.team.pk}/keys/", data)
    return ApiKey.objects.get(team=w.team).last_four == "9999"


def http_usage_own(w: World) -> bool:
    response = w.client.get(f"/teams/{w.team.pk}/usage/")
    return response.status_code == 200 and b'id="usage-total"' in response.content


def http_usage_members(w: World) -> bool:
    Message.objects.filter(pk=w.reply.pk).update(team=w.team)  # the founder's reply
    pages = [
        w.client.get(f"/teams/{w.team.pk}/usage/").content.decode(),
        w.client.get(f"/teams/{w.team.pk}/usage/member.csv").content.decode(),
    ]
    return all("founder" in page for page in pages)


def http_budget(w: World) -> bool:
    w.client.post(f"/teams/{w.team.pk}/budgets/", {"monthly_cost": "5"})
    return Budget.objects.filter(team=w.team).exists()


def _experiment(w: World) -> Experiment:
    dataset = Dataset.objects.create(owner=w.founder, team=w.team, name="Cases", columns=["q"])
    DatasetRow.objects.create(dataset=dataset, position=0, variables={"q": "Hello"})
    variant = {"label": "A", "model": MODEL, "params": {}, "system_prompt": ""}
    return Experiment.objects.create(
        owner=w.founder,
        team=w.team,
        name="Team experiment",
        dataset=dataset,
        prompt="{{q}}",
        variants=[variant],
    )


def _run(w: World) -> ExperimentRun:
    experiment = _experiment(w)
    group = RunGroup.objects.create(kind=RunGroup.Kind.EXPERIMENT, owner=w.founder, team=w.team)
    run = ExperimentRun.objects.create(
        experiment=experiment,
        number=1,
        group=group,
        dataset=experiment.dataset,
        spec={"name": "x", "prompt": "{{q}}", "variants": experiment.variants, "checks": []},
        started_by=w.founder,
    )
    Item.objects.create(
        run=run, row=experiment.dataset.rows.get(), variant=0, position=0, endpoint="empiriolabs"
    )
    return run


def http_experiment_open(w: World) -> bool:
    run = _run(w)
    pages = [
        w.client.get(f"/experiments/{run.experiment_id}/"),
        w.client.get(f"/experiments/runs/{run.pk}/"),
        w.client.get(f"/experiments/runs/{run.pk}/export.json"),
    ]
    return all(p.status_code == 200 for p in pages) and b"Team experiment" in pages[0].content


def http_experiment_change(w: World) -> bool:
    experiment = _experiment(w)
    data = {
        "name": "Renamed experiment",
        "dataset": experiment.dataset_id,
        "prompt": "{{q}}?",
        "variants": MODEL,
        "checks": "",
        "repeats": 1,
        "rows": "",
    }
    w.client.post("/space/", {"space": w.team.pk})
    w.client.post(f"/experiments/{experiment.pk}/", data)
    return Experiment.objects.get(pk=experiment.pk).name == "Renamed experiment"


def http_experiment_run(w: World) -> bool:
    experiment = _experiment(w)
    with override_settings(TASKS={"default": {"BACKEND": DUMMY_TASKS}}):
        w.client.post(f"/experiments/{experiment.pk}/run/")
    return ExperimentRun.objects.filter(experiment=experiment).exists()


def http_experiment_stop(w: World) -> bool:
    run = _run(w)
    w.client.post(f"/experiments/runs/{run.pk}/stop/")
    return ExperimentRun.objects.get(pk=run.pk).status != "running"


def http_dataset_change(w: World) -> bool:
    dataset = _experiment(w).dataset
    w.client.post(f"/experiments/datasets/{dataset.pk}/rows/", {"variables": '{"q": "Added"}'})
    return DatasetRow.objects.filter(variables={"q": "Added"}).exists()


def _team_group(w: World, kind: str = "compare") -> RunGroup:
    """A compare (or sweep) the founder started in the team: two columns or two cells."""
    from playground.compare import setup

    if kind == "sweep":
        column = setup.ColumnSetup(MODEL)
        spec, cells = setup.plan_sweep(column, [("temperature", "0, 1")], 0, "Hello")
        return setup.create_sweep(w.founder, w.team, "Grid", spec, cells)
    columns = setup.plan_columns([setup.ColumnSetup(MODEL), setup.ColumnSetup(MODEL)])
    group = setup.create_compare(w.founder, w.team, "Duel", columns)
    Message.objects.create(
        conversation=group.conversations.first(), role=Message.Role.ASSISTANT, text="Column said"
    )
    return group


def http_compare_open(w: World) -> bool:
    group = _team_group(w)
    response = w.client.get(f"/compare/{group.pk}/")
    return response.status_code == 200 and b"Column said" in response.content


def http_compare_new(w: World) -> bool:
    w.client.post("/space/", {"space": w.team.pk})
    w.client.post("/compare/new/", {"columns": "2", "c1-model": MODEL, "c2-model": MODEL})
    return RunGroup.objects.filter(team=w.team, owner=w.actor).exists()


def http_compare_continue(w: World) -> bool:
    group = _team_group(w)
    column = group.conversations.first()
    w.client.post(f"/compare/{group.pk}/columns/{column.pk}/continue/")
    return Conversation.objects.get(pk=column.pk).group_id is None


def http_compare_delete_own(w: World) -> bool:
    from playground.compare import setup

    columns = setup.plan_columns([setup.ColumnSetup(MODEL), setup.ColumnSetup(MODEL)])
    group = setup.create_compare(w.actor, w.team, "Mine", columns)
    w.client.post(f"/compare/{group.pk}/delete/")
    return not RunGroup.objects.filter(pk=group.pk).exists()


def http_compare_delete_others(w: World) -> bool:
    group = _team_group(w)
    w.client.post(f"/compare/{group.pk}/delete/")
    return not RunGroup.objects.filter(pk=group.pk).exists()


def http_read_review(w: World) -> bool:
    Annotation.objects.create(message=w.reply, author=w.founder, thumbs=1)
    Comment.objects.create(message=w.reply, author=w.founder, text="Founder says so")
    response = w.client.get(f"/review/m/{w.reply.pk}/")
    return response.status_code == 200 and b"Founder says so" in response.content


def http_annotate(w: World) -> bool:
    url = f"/review/m/{w.reply.pk}/annotate/"
    w.client.post(url, {"score": "3"}, headers={"HX-Request": "true"})
    return Annotation.objects.filter(message=w.reply, author=w.actor, score=3).exists()


def http_comment(w: World) -> bool:
    url = f"/review/m/{w.reply.pk}/comment/"
    w.client.post(url, {"text": "@mate have a look"}, headers={"HX-Request": "true"})
    return Mention.objects.filter(user=w.mate, comment__author=w.actor).exists()


def http_review_status(w: World) -> bool:
    url = f"/review/c/{w.shared.pk}/status/"
    w.client.post(url, {"status": "approved"}, headers={"HX-Request": "true"})
    return ReviewStatus.objects.filter(conversation=w.shared, status="approved").exists()


def http_bulk_status(w: World) -> bool:
    w.client.post("/review/bulk/", {"c": [w.shared.pk], "status": "flagged"})
    return ReviewStatus.objects.filter(conversation=w.shared, status="flagged").exists()


def http_labels_read(w: World) -> bool:
    Label.objects.create(team=w.team, owner=w.founder, name="Hallucinated", colour="#dc2626")
    response = w.client.get(f"/review/labels/team/{w.team.pk}/")
    return response.status_code == 200 and b"Hallucinated" in response.content


def http_labels_manage(w: World) -> bool:
    w.client.post(f"/review/labels/team/{w.team.pk}/", {"name": "Terse", "colour": "#f59e0b"})
    return Label.objects.filter(team=w.team, name="Terse").exists()


def http_share_create(w: World) -> bool:
    url = f"/review/c/{w.shared.pk}/share/"
    w.client.post(url, {"expires": "never"})
    w.client.post(f"{url}?message={w.reply.pk}", {"expires": "1d"})
    made = ShareLink.objects.filter(conversation=w.shared, created_by=w.actor).count()
    assert made in (0, 2), "a link of the conversation but not of its reply, or the other way"
    return made == 2


def http_share_revoke(w: World) -> bool:
    from playground.review import sharing

    link, _ = sharing.create(w.founder, w.shared)
    page = w.client.get("/review/shared/").content.decode()
    listed = f"/review/shared/{link.pk}/revoke/" in page
    w.client.post(f"/review/shared/{link.pk}/revoke/")
    revoked = ShareLink.objects.get(pk=link.pk).revoked is not None
    assert listed == revoked, "the Shared links page lists what one may not revoke, or hides it"
    return revoked


def _queue(w: World, reviewer: User | None = None) -> ReviewQueue:
    """A queue of the team made by the founder, with the shared reply given to `reviewer`."""
    queue = ReviewQueue.objects.create(team=w.team, owner=w.founder, name="Team queue")
    if reviewer is not None:
        queue.reviewers.add(reviewer)
        QueueItem.objects.create(queue=queue, message=w.reply, reviewer=reviewer, position=1)
    return queue


def http_queue_view(w: World) -> bool:
    response = w.client.get(f"/review/queues/{_queue(w, w.mate).pk}/")
    return response.status_code == 200 and b'data-reviewer="mate"' in response.content


def http_queue_create(w: World) -> bool:
    data = {"space": w.team.pk, "name": "From History", "reviewer": w.mate.pk}
    w.client.post("/review/queues/new/", data)
    return ReviewQueue.objects.filter(name="From History", items__reviewer=w.mate).exists()


def http_queue_delete(w: World) -> bool:
    queue = _queue(w, w.mate)
    w.client.post(f"/review/queues/{queue.pk}/delete/")
    return not ReviewQueue.objects.filter(pk=queue.pk).exists()


def http_queue_reassign(w: World) -> bool:
    queue = _queue(w, w.mate)
    w.client.post(f"/review/queues/{queue.pk}/reassign/", {"from": w.mate.pk, "to": w.founder.pk})
    return QueueItem.objects.filter(queue=queue, reviewer=w.founder).exists()


def http_queue_reviewer(w: World) -> bool:
    founder = Client()
    founder.force_login(w.founder)
    data = {"space": w.team.pk, "name": "For the actor", "reviewer": w.actor.pk}
    founder.post("/review/queues/new/", data)
    return ReviewQueue.objects.filter(reviewers=w.actor, items__reviewer=w.actor).exists()


def http_queue_step(w: World) -> bool:
    # Assigned directly, whatever the role: the step itself must check.
    queue = _queue(w, w.actor)
    url = f"/review/queues/{queue.pk}/review/1/"
    shown = w.client.get(url).status_code == 200
    w.client.post(url, {"action": "score", "score": "4"})
    w.client.post(url, {"action": "approve"})
    scored = Annotation.objects.filter(message=w.reply, author=w.actor, score=4).exists()
    done = QueueItem.objects.filter(queue=queue, done_by=w.actor).exists()
    assert shown == scored == done, "a step half allowed"
    return done


# Prompts (playground/prompts)


def _team_prompt(w: World, *, protected: bool = False):
    from playground.prompts.models import Prompt

    prompt = Prompt.objects.create(owner=w.founder, team=w.team, name="team-prompt")
    version = prompt.add_version(w.founder, model=MODEL, system_prompt="Hello {{name}}")
    prompt.add_version(w.founder, model=MODEL, system_prompt="Hi {{name}}")
    label = prompt.set_label("production", version, w.founder)
    if protected:
        prompt.protect_label(label, True, w.founder)
    return prompt


def http_prompt_read(w: World) -> bool:
    prompt = _team_prompt(w)
    pages = [
        w.client.get(f"/prompts/{prompt.pk}/"),
        w.client.get(f"/prompts/{prompt.pk}/v/1/"),
        w.client.get(f"/prompts/{prompt.pk}/diff/?a=1&b=2"),
    ]
    return all(p.status_code == 200 and b"team-prompt" in p.content for p in pages)


def http_prompt_new(w: World) -> bool:
    from playground.prompts.models import Prompt

    w.client.post("/space/", {"space": w.team.pk})
    data = {"name": "made", "model": MODEL, "message_role": "user", "message_content": "Hi"}
    w.client.post("/prompts/new/", data)
    return Prompt.objects.filter(team=w.team, name="made").exists()


def http_prompt_version(w: World) -> bool:
    prompt = _team_prompt(w)
    w.client.post(f"/prompts/{prompt.pk}/v/1/restore/")
    return prompt.versions.count() == 3


def http_prompt_label(w: World) -> bool:
    prompt = _team_prompt(w)
    w.client.post(f"/prompts/{prompt.pk}/labels/", {"name": "production", "version": "2"})
    return prompt.labels.get(name="production").version.number == 2


def http_prompt_protect(w: World) -> bool:
    prompt = _team_prompt(w)
    label = prompt.labels.get()
    w.client.post(f"/prompts/{prompt.pk}/labels/{label.pk}/protect/", {"protected": "1"})
    return prompt.labels.get().protected


def http_prompt_protected_move(w: World) -> bool:
    prompt = _team_prompt(w, protected=True)
    w.client.post(f"/prompts/{prompt.pk}/labels/", {"name": "production", "version": "2"})
    return prompt.labels.get(name="production").version.number == 2


def http_prompt_open(w: World) -> bool:
    prompt = _team_prompt(w)
    w.client.post(f"/prompts/{prompt.pk}/v/2/open/")
    return Conversation.objects.filter(
        owner=w.actor, team=w.team, prompt_session__isnull=False
    ).exists()


def http_prompt_rename(w: World) -> bool:
    from playground.prompts.models import Prompt

    prompt = _team_prompt(w)
    w.client.post(f"/prompts/{prompt.pk}/rename/", {"name": "renamed"})
    return Prompt.objects.get(pk=prompt.pk).name == "renamed"


def http_prompt_delete(w: World) -> bool:
    from playground.prompts.models import Prompt

    prompt = _team_prompt(w)
    w.client.post(f"/prompts/{prompt.pk}/delete/")
    return not Prompt.objects.visible_to(w.founder).filter(pk=prompt.pk).exists()


def http_prompt_protected_delete(w: World) -> bool:
    from playground.prompts.models import Prompt

    prompt = _team_prompt(w, protected=True)
    w.client.post(f"/prompts/{prompt.pk}/delete/")
    return not Prompt.objects.visible_to(w.founder).filter(pk=prompt.pk).exists()


def http_prompt_api(w: World) -> bool:
    prompt = _team_prompt(w)
    page = w.client.post("/prompts/tokens/", {"name": "bot", "space": str(w.team.pk)})
    shown = re.search(r'id="new-token" value="(pgp_[^"]+)"', page.content.decode())
    if shown is None:
        return False
    response = Client().get(
        f"/api/prompts/{prompt.name}?label=production",
        headers={"Authorization": f"Bearer {shown[1]}"},
    )
    return response.status_code == 200 and response.json()["version"] == 1


# WebSocket


async def _open_group(w: World, kind: str = "compare"):
    from channels.testing import WebsocketCommunicator

    from playground.asgi import application
    from tests.conftest import ORIGIN, Socket, session_cookie

    group = await database_sync_to_async(_team_group)(w, kind)
    cookie = await database_sync_to_async(session_cookie)(w.actor)
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, f"/ws/groups/{group.pk}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    socket = Socket(communicator)
    if connected:
        await socket.drain()
    return group, connected, socket


async def ws_compare_watch(w: World, connect) -> bool:
    _, ok, socket = await _open_group(w)
    seen = ok and any("Column said" in frame for frame in socket.frames)
    await socket.close()
    return seen


async def ws_compare_send(w: World, connect) -> bool:
    group, ok, socket = await _open_group(w)
    if not ok:
        return False
    await socket.send(action="send", text="To every column")
    await socket.until(lambda f: 'id="prompt"' in f or "composer-error" in f)
    for pk in [m.pk async for m in Message.objects.filter(conversation__group=group)]:
        await runs.wait(pk)
    sent = Message.objects.filter(conversation__group=group, text="To every column")
    await socket.close()
    return await sent.acount() == 2


async def ws_sweep_start(w: World, connect) -> bool:
    from playground.compare import drivers, engine

    group, ok, socket = await _open_group(w, "sweep")
    if not ok:
        return False
    await socket.send(action="start")
    await socket.until(lambda f: "sweep-status" in f or "composer-error" in f)
    started = drivers.is_running(group.pk)
    await engine.wait_sweep(group.pk)
    await socket.close()
    return started


async def ws_compare_stop(w: World, connect) -> bool:
    """As `stop`: allowed means the stop reached the column's run channel."""
    layer = get_channel_layer()
    run_channel = await layer.new_channel()
    group, ok, socket = await _open_group(w)
    if not ok:
        return False
    await Message.objects.acreate(
        conversation=await group.conversations.alast(),
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=MODEL,
        run_channel=run_channel,
        checkpoint_at=timezone.now(),
        created_by=w.founder,
    )
    await socket.send(action="stop")
    try:
        async with asyncio.timeout(1.0):
            while (await layer.receive(run_channel))["type"] != "run.stop":
                pass
    except TimeoutError:
        return False
    finally:
        await socket.close()
    return True


async def ws_watch(w: World, connect) -> bool:
    ok, socket = await connect(w.actor, w.shared.pk)
    if not ok:
        return False
    return "Earlier answer" in await socket.until(lambda f: "transcript" in f)


async def _finished(socket) -> str:
    return await socket.until(lambda f: "status-complete" in f or "composer-error" in f)


async def ws_send(w: World, connect) -> bool:
    ok, socket = await connect(w.actor, w.shared.pk)
    if not ok:
        return False
    await socket.drain()
    await socket.send_prompt("From the actor")
    await _finished(socket)
    assert not any(TEAM_KEY in frame for frame in socket.frames)
    return await Message.objects.filter(created_by=w.actor, text="From the actor").aexists()


async def ws_rerun(w: World, connect) -> bool:
    ok, socket = await connect(w.actor, w.shared.pk)
    if not ok:
        return False
    await socket.drain()
    await socket.send(action="rerun", message_id=w.reply.pk)
    await _finished(socket)
    return await Message.objects.filter(created_by=w.actor, role="assistant").aexists()


async def ws_stop(w: World, connect) -> bool:
    """A run's stop channel is listened to here: allowed means the stop reached the run."""
    layer = get_channel_layer()
    run_channel = await layer.new_channel()
    await Message.objects.acreate(
        conversation=w.shared,
        parent=w.reply,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=MODEL,
        run_channel=run_channel,
        checkpoint_at=timezone.now(),
        created_by=w.founder,
    )
    ok, socket = await connect(w.actor, w.shared.pk)
    if not ok:
        return False
    await socket.drain()
    await socket.send(action="stop")
    try:
        async with asyncio.timeout(1.0):
            while (await layer.receive(run_channel))["type"] != "run.stop":
                pass  # the socket's snapshot request comes first
    except TimeoutError:
        return False
    return True


def _sibling(w: World) -> Message:
    """A second reply beside the world's, made the shown one: something to switch and diff."""
    sibling = Message.objects.create(
        conversation=w.shared,
        parent_id=w.reply.parent_id,
        role=Message.Role.ASSISTANT,
        text="Later answer",
        model=MODEL,
        request_body={**w.reply.request_body, "temperature": 1.5},
        created_by=w.founder,
    )
    Conversation.objects.filter(pk=w.shared.pk).update(active_leaf=sibling)
    return sibling


def http_diff(w: World) -> bool:
    sibling = _sibling(w)
    response = w.client.get("/review/diff/", {"a": w.reply.pk, "b": sibling.pk})
    page = response.content.decode()
    marked = "<del>Earlier</del>" in page and "<ins>Later</ins>" in page
    return response.status_code == 200 and marked


async def ws_edit(w: World, connect) -> bool:
    ok, socket = await connect(w.actor, w.shared.pk)
    if not ok:
        return False
    await socket.drain()
    await socket.send(action="edit", message_id=w.reply.parent_id, text="Edited by the actor")
    await _finished(socket)
    return await Message.objects.filter(
        created_by=w.actor, role="user", text="Edited by the actor", parent=None
    ).aexists()


async def ws_regenerate(w: World, connect) -> bool:
    ok, socket = await connect(w.actor, w.shared.pk)
    if not ok:
        return False
    await socket.drain()
    await socket.send(action="regenerate", message_id=w.reply.pk)
    await _finished(socket)
    return await Message.objects.filter(
        created_by=w.actor, role="assistant", parent_id=w.reply.parent_id
    ).aexists()


async def ws_switch(w: World, connect) -> bool:
    await database_sync_to_async(_sibling)(w)
    ok, socket = await connect(w.actor, w.shared.pk)
    if not ok:
        return False
    await socket.drain()
    await socket.send(action="switch", message_id=w.reply.pk)
    await socket.drain(0.3)
    shared = await Conversation.objects.aget(pk=w.shared.pk)
    return shared.active_leaf_id == w.reply.pk


HTTP: dict[str, Callable[[World], bool]] = {
    name.removeprefix("http_"): fn for name, fn in globals().items() if name.startswith("http_")
}
WEBSOCKET: dict[str, Callable[[World, Any], Awaitable[bool]]] = {
    name.removeprefix("ws_"): fn for name, fn in globals().items() if name.startswith("ws_")
}
CELLS = read_table()
# Every row is walked and every walker has a row: a new rule cannot go untested or unwritten.
assert {k for k, door, *_ in CELLS if door == "HTTP"} == set(HTTP)
assert {k for k, door, *_ in CELLS if door == "WebSocket"} == set(WEBSOCKET)


@pytest.mark.parametrize(
    ("key", "door", "role", "allowed"),
    CELLS,
    ids=[f"{key}-{role.replace(' ', '_')}" for key, _, role, _ in CELLS],
)
async def test_the_permission_table(key, door, role, allowed, upstream, connect):
    world = await database_sync_to_async(build_world)(role)
    if door == "HTTP":
        done = await database_sync_to_async(HTTP[key])(world)
    else:
        done = await WEBSOCKET[key](world, connect)
    assert done is allowed, f"{role} {'may' if allowed else 'may not'} {key}"
