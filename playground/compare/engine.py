"""Sending to a group's conversations through the one run engine.

A compare send is one prepare_turn() per column (reads only; any refusal refuses the whole
send, so no column runs alone), then every column's upstream request goes out at once
(runs.begin), then every column's rows are written in one transaction (write_turn each),
then every run starts. A sweep runs its cells the same way, a few at a time, from a task of the
server process: like a run, it is not the socket's, so closing the tab changes nothing.

Both count against the per-user run cap (PLAYGROUND_RUN["MAX_RUNS_PER_USER"]) and the budgets
(chat/budgets.py) before anything is sent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.views.decorators.debug import sensitive_variables

from playground.accounts.models import ApiKey
from playground.chat import budgets, runs, shutdown
from playground.chat.models import Conversation, Message, RunGroup
from playground.chat.services import (
    PreparedTurn,
    Turn,
    TurnError,
    get_model,
    prepare_turn,
    resolve_api_key,
    write_turn,
)
from playground.compare import contexts, drivers
from playground.prompts import library
from playground.prompts import variables as syntax
from playground.prompts.models import PromptSession, PromptVersion

log = logging.getLogger(__name__)

ATTEMPTS_AT_CAP = 120  # a sweep cell waits up to a minute for a free run slot, then fails


def streaming_count(user) -> int:
    return Message.objects.filter(created_by=user, status=Message.Status.STREAMING).count()


def check_capacity(user, wanted: int, running: int | None = None) -> None:
    """TurnError unless `wanted` more replies fit under the user's run cap. `running`: the
    user's replies streaming, if the caller read them already."""
    limit = settings.PLAYGROUND_RUN["MAX_RUNS_PER_USER"]
    if wanted > limit:
        raise TurnError(
            f"This needs {wanted} replies at once; you may have {limit} streaming. "
            "Use fewer columns."
        )
    if running is None:
        running = streaming_count(user)
    if running + wanted > limit:
        raise TurnError(
            f"This needs {wanted} replies at once and {running} of yours are streaming "
            f"already (at most {limit}): stop some or wait for them."
        )


def check_budget(user, team_id: int | None, conversations: list[Conversation]) -> None:
    """The whole send against the budgets: six columns cost six runs."""
    total = Decimal(0)
    for conversation in conversations:
        total += get_model(conversation.model).cost(completed=True) or Decimal(0)
    try:
        budgets.check(user, team_id, total)
    except budgets.BudgetExceeded as exc:
        raise TurnError(str(exc)) from None


@dataclass(frozen=True)
class FromVersion:
    """A column set up from a prompt version: what its reply records (a PromptRun), and the
    system prompt template the column keeps once its send is written with the filled-in text."""

    version: PromptVersion
    variables: dict[str, str]
    system_template: str
    edited: bool


def _fill_in(
    columns: list[Conversation], text: str, values: dict[str, str], *, read: bool = True
) -> tuple[str, list[tuple[str, FromVersion | None]]]:
    """The message, and each column's system prompt, with the Variables panel's values filled
    in where columns come from prompt versions (the message too then: one message for all).
    TurnError naming every variable without a value: nothing is sent. `read=False`: the
    caller knows that no column comes from a prompt version, so none is looked up."""
    found = PromptSession.objects.filter(conversation__in=columns) if read else None
    sessions = {
        s.conversation_id: s.version
        for s in (found.select_related("version__prompt") if found is not None else ())
    }
    filled: list[tuple[str, FromVersion | None]] = []
    if not sessions:
        return text, [(c.system_prompt, None) for c in columns]
    templates = [text] + [c.system_prompt for c in columns if c.pk in sessions]
    try:
        rendered = iter(syntax.render_all(templates, values))
    except syntax.UndefinedVariables as exc:
        raise TurnError(str(exc)) from None
    filled_text = next(rendered)
    for conversation in columns:
        version = sessions.get(conversation.pk)
        if version is None:
            filled.append((conversation.system_prompt, None))
            continue
        used = {n: values[n] for n in syntax.names_in_all([text, conversation.system_prompt])}
        edited = (
            conversation.system_prompt != version.system_prompt
            or conversation.model != version.model
            or conversation.params != version.all_params()
        )
        filled.append(
            (next(rendered), FromVersion(version, used, conversation.system_prompt, edited))
        )
    return filled_text, filled


def read_columns(group: RunGroup, user) -> tuple[list[Conversation], bool, int]:
    """The group's columns in order (contexts.members), whether any comes from a prompt
    version, and how many of the user's replies are streaming: one query.

    Plain SQL, built once per process: the three queries the ORM built for these cost a
    send more CPU (about 3 ms) than six columns' requests took to build."""
    sql = _columns_sql(connection.vendor)
    streaming = Message.Status.STREAMING.value
    columns = list(Conversation.objects.raw(sql, [user.pk, streaming, group.pk]))
    # The two figures come as extra attributes of every row (the same count on each).
    from_versions = any(getattr(c, "from_version") for c in columns)  # noqa: B009
    running = int(getattr(columns[0], "running")) if columns else 0  # noqa: B009
    return columns, from_versions, running


@functools.cache
def _columns_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    table = quote(Conversation._meta.db_table)
    columns = ", ".join(f"c.{quote(f.column)}" for f in Conversation._meta.concrete_fields)
    sessions = quote(PromptSession._meta.db_table)
    session_column = quote(PromptSession._meta.get_field("conversation").column)
    messages = quote(Message._meta.db_table)
    created_by = quote(Message._meta.get_field("created_by").column)
    status = quote(Message._meta.get_field("status").column)
    group = quote(Conversation._meta.get_field("group").column)
    position = quote(Conversation._meta.get_field("position").column)
    pk = quote(Conversation._meta.pk.column)
    return (
        f"SELECT {columns},"
        f" EXISTS(SELECT 1 FROM {sessions} s WHERE s.{session_column} = c.{pk})"
        f" AS {quote('from_version')},"
        f" (SELECT COUNT(*) FROM {messages} WHERE {created_by} = %s AND {status} = %s)"
        f" AS {quote('running')}"
        f" FROM {table} c WHERE c.{group} = %s ORDER BY c.{position}, c.{pk}"
    )


@sensitive_variables("keys", "prepared")
def prepare_columns(
    group: RunGroup,
    user,
    *,
    text: str,
    attachment_ids: list[int],
    channels: list[str] | None = None,
    values: dict[str, str] | None = None,
) -> list[tuple[PreparedTurn, FromVersion | None]]:
    """Every column's send, checked and built; TurnError (nothing sent) if any is refused.
    `values`: the Variables panel's, for the columns set up from prompt versions.
    `channels`: each column's run channel; None: "" until the caller sets each
    `prepared.run.channel` (send_to_columns, once it knows how many columns there are)."""
    columns, from_versions, running = read_columns(group, user)
    if not columns:
        raise TurnError("Every column of this compare continued in the playground.")
    if channels is None:
        channels = [""] * len(columns)
    if len(channels) < len(columns):
        raise ValueError("one channel per column")
    filled_text, filled = _fill_in(columns, text, values or {}, read=from_versions)
    check_capacity(user, len(columns), running)
    check_budget(user, group.team_id, columns)
    keys: dict[str, tuple[str | None, ApiKey | None]] = {}  # one read per provider
    prepared = []
    for conversation, channel, (system_prompt, source) in zip(
        columns, channels, filled, strict=False
    ):
        provider = get_model(conversation.model).provider
        if provider.slug not in keys:
            keys[provider.slug] = resolve_api_key(user, conversation, provider)
        turn = prepare_turn(
            conversation,
            user,
            text=filled_text,
            model_key=conversation.model,
            system_prompt=system_prompt,
            channel=channel,
            values=conversation.params,
            attachment_ids=attachment_ids,
            wire_format=conversation.wire_format,
            paid_by=keys[provider.slug],
        )
        prepared.append((turn, source))
    return prepared


def write_columns(
    prepared: list[tuple[PreparedTurn, FromVersion | None]], user
) -> list[tuple[Turn, dict[str, Any]]]:
    """Every column's rows in one transaction (all or none), then each column's frame for
    its watchers. A column from a prompt version keeps its system prompt template and its
    reply records the version and the values (History filters by them). TurnError naming
    the column if any is refused: then nothing was saved."""
    turns = []
    with transaction.atomic():
        for index, (column, source) in enumerate(prepared):
            try:
                turn = write_turn(column, user, remember=False)
            except TurnError as exc:
                where = f"Column {index + 1}: " if len(prepared) > 1 else ""
                raise TurnError(f"{where}{exc} Nothing was sent.") from exc
            if source is not None:
                library.record_reply(
                    turn.messages[-1], source.version, source.variables, edited=source.edited
                )
                if turn.conversation.system_prompt != source.system_template:
                    Conversation.objects.filter(pk=turn.conversation.pk).update(
                        system_prompt=source.system_template
                    )
                    turn.conversation.system_prompt = source.system_template
            turns.append(turn)
        remembered: dict[int, dict[str, str]] = {}  # the panel's values, by prompt
        for _, source in prepared:
            if source is not None:
                remembered.setdefault(source.version.prompt_id, {}).update(source.variables)
        for prompt_id, used in remembered.items():
            library.remember_values(user, prompt_id, used)
    return [(turn, contexts.append_event(turn, RunGroup.Kind.COMPARE)) for turn in turns]


class NoAccess(TurnError):
    """The sender may no longer see the group (send_to_columns' `authorize`): nothing sent."""


async def send_to_columns(
    group: RunGroup,
    user,
    *,
    text: str,
    attachment_ids: list[int],
    layer,
    values: dict[str, str] | None = None,
    authorize: Callable[[], RunGroup] | None = None,
) -> list[asyncio.Task]:
    """Send `text` (and images) to every column at once; the run tasks started.

    Three steps, whatever the number of columns: every column is checked and its request
    built (reads only, one thread hop); every column's upstream request goes out at once
    (runs.begin); every column's rows are written in one transaction and every column's new
    rows rendered (one more hop, one commit). Then the watchers get every column's new rows
    and every run starts. If any column is refused, at either step, no row is written and
    the upstream requests already begun are closed (Run.abandon): nothing is sent.

    `authorize`: the sender's access, read again from the database in the first hop (the
    group as it is now; NoAccess or TurnError refuse the send), so that checking it costs
    no hop of its own before the columns' requests can go out."""
    began = time.monotonic()

    def prepare() -> list[tuple[PreparedTurn, FromVersion | None]]:
        checked = authorize() if authorize is not None else group
        return prepare_columns(
            checked, user, text=text, attachment_ids=attachment_ids, values=values
        )

    prepared = await database_sync_to_async(prepare)()
    for column, _ in prepared:
        column.run.channel = await layer.new_channel()
    started = [runs.begin(p.run) for p, _ in prepared]
    try:
        written = await database_sync_to_async(write_columns)(prepared, user)
    except BaseException:
        await asyncio.gather(*(run.abandon() for run in started))
        raise
    # Every watcher gets the columns' new rows before any delta of theirs can follow.
    await asyncio.gather(
        *(
            layer.group_send(runs.group_name(event["conversation_id"]), event)
            for _, event in written
        )
    )
    tasks = [runs.start(turn.run, run) for (turn, _), run in zip(written, started, strict=True)]
    if drivers.stopped_at.get(group.pk, 0.0) > began:
        # Stop was pressed while the columns were being written: they started after it and
        # missed it. Said again to every column (stopping is one function).
        await runs.stop(Conversation.objects.filter(group_id=group.pk))
    return tasks


# Sweeps


def pending_cells(group: RunGroup) -> list[Conversation]:
    """Cells that never sent: a sweep started again (after a restart) runs only these."""
    return list(
        group.conversations.filter(messages__isnull=True).order_by("position", "pk").distinct()
    )


def start_sweep(group: RunGroup, user, layer, on_error: Callable[[str], Any]) -> bool:
    """Start the sweep's driver in this process unless one runs already. It is a task of
    the process, not of the socket that asked: the tab may close meanwhile."""
    if drivers.is_running(group.pk):
        return False
    task = asyncio.create_task(_drive(group, user, layer, on_error), name=f"sweep-{group.pk}")
    drivers.running[group.pk] = task
    drivers.stopping.discard(group.pk)

    def forget(_: asyncio.Task) -> None:
        drivers.running.pop(group.pk, None)
        drivers.stopping.discard(group.pk)

    task.add_done_callback(forget)
    return True


async def wait_sweep(group_id: int, timeout: float = 30.0) -> None:
    """Wait for this process's driver of a sweep to finish (tests)."""
    task = drivers.running.get(group_id)
    if task is not None:
        await asyncio.wait_for(asyncio.shield(task), timeout)


async def _drive(group: RunGroup, user, layer, on_error: Callable[[str], Any]) -> None:
    cells = await database_sync_to_async(pending_cells)(group)
    if not cells:
        return
    prompt = group.spec.get("prompt", "")
    slots = asyncio.Semaphore(drivers.concurrency())
    refused: list[str] = []

    async def one(cell: Conversation) -> None:
        async with slots:
            if refused or group.pk in drivers.stopping or shutdown.draining:
                # A budget ran out, Stop, or the server is shutting down: the cells after it
                # are not sent (they stay pending for the next Run sweep).
                return
            try:
                task = await _start_cell(cell, user, prompt, layer)
            except TurnError as exc:
                refused.append(f"{cell.title}: {exc}")
                return
            if task is not None:
                await asyncio.wait([task])

    try:
        await asyncio.gather(*(one(cell) for cell in cells))
    finally:
        if refused:
            await on_error(f"Not every cell ran. {refused[0]}")


async def _start_cell(cell: Conversation, user, prompt: str, layer) -> asyncio.Task | None:
    """Start one cell through the normal turn: prepare, begin, write, start. Waits for a
    free run slot while the user's other replies fill the cap. None: already started
    (another driver took it), or not started because the server is shutting down."""
    limit = settings.PLAYGROUND_RUN["MAX_RUNS_PER_USER"]
    for _ in range(ATTEMPTS_AT_CAP):
        if shutdown.draining:
            return None
        if await database_sync_to_async(streaming_count)(user) < limit:
            break
        await asyncio.sleep(0.5)
    # Checked and counted as a turn under way in one step (no await between): a shutdown
    # either sees this cell, waits for it to start its run and interrupts that, or this cell
    # sees the shutdown and stays pending.
    if shutdown.draining:
        return None
    with shutdown.turn_under_way():
        return await _write_cell(cell, user, prompt, layer)


async def _write_cell(cell: Conversation, user, prompt: str, layer) -> asyncio.Task | None:
    channel = await layer.new_channel()

    def prepare() -> PreparedTurn | None:
        if cell.messages.exists():
            return None
        check_budget(user, cell.team_id, [cell])
        return prepare_turn(
            cell,
            user,
            text=prompt,
            model_key=cell.model,
            system_prompt=cell.system_prompt,
            channel=channel,
            values=cell.params,
            wire_format=cell.wire_format,
        )

    prepared = await database_sync_to_async(prepare)()
    if prepared is None:
        return None
    run = runs.begin(prepared.run)

    def write() -> tuple[Turn, dict[str, Any]]:
        turn = write_turn(prepared, user, remember=False)
        return turn, contexts.append_event(turn, RunGroup.Kind.SWEEP)

    try:
        turn, event = await database_sync_to_async(write)()
    except BaseException:
        await run.abandon()
        raise
    await layer.group_send(runs.group_name(cell.pk), event)
    return runs.start(turn.run, run)
