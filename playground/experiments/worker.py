"""Running an experiment's items inside a tasks-framework worker (`manage.py db_worker`).

A drain task (tasks.py) calls drain(): its slots claim items from the database (the slots
freed together in one transaction) and run each as an ordinary turn through chat.services
and chat.runs, the code a chat send uses, so every cell is a saved reply. Several workers
drain the same run; the database decides who gets what:

- A claim locks the run's row and the endpoint's gate row (EndpointGate) in one transaction,
  counts the endpoint's items running under a live lease across all runs and workers, and
  takes the next pending items (as many as slots asked) only below the endpoint's
  concurrency and this worker's share of it. No item is taken twice.
- A claim is a lease, renewed every few seconds while the worker lives. A worker killed
  mid-item stops renewing; once the lease has passed, another worker takes the item again,
  with the dead attempt's rows removed, so the item still ends with exactly one reply.
  The second loss marks it failed: an item that kills its worker is not tried forever.
- A reply that ends rate-limited (429, after the client's own retries) puts the item back
  with a growing not-before time.
- Stop: the page sets the run to stopping and calls chat.runs.stop() (which reaches this
  process directly when Redis carries the channel layer); the lease loop sees the status
  too and calls the same stop() here, for the embedded in-memory layer.
- A stopping run ends by itself (reap()): its items whose worker died (lease passed) end
  stopped, not retried, and the run ends stopped once nothing runs. A worker's lease loop
  does it while the worker lives, and its drain waits for the other workers' items to end
  or their leases to pass first; with no worker left, the run page does it when opened
  (pages.run_context: the page, its poll and its socket).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from playground.chat import budgets, runs, services
from playground.chat.models import Conversation, Message
from playground.experiments import checks, datasets, progress
from playground.experiments.models import (
    Drainer,
    EndpointGate,
    ExperimentRun,
    Item,
    lease_expiry,
)
from playground.providers import catalog, params
from playground.providers.specs import JSON_OUTPUT, JSON_SCHEMA

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # the first, and one retry after a worker died holding it
IDLE_PAUSE = 0.25  # seconds between claims while every slot of an endpoint is busy
MAX_IDLE_PAUSE = 2.0
MAX_SLOTS = 32
RATE_LIMITED = ("Rate limited", "(429)")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def drain(run_id: int) -> int:
    """Run the run's items until none is left to claim; the number this call ran."""
    me = worker_id()
    slots = await sync_to_async(_slots)(run_id)
    if not slots:
        return 0
    stopping = asyncio.Event()
    await Drainer.objects.aupdate_or_create(
        run_id=run_id, worker=me, defaults={"seen": timezone.now()}
    )
    lease = asyncio.create_task(_lease_loop(run_id, me, stopping), name=f"experiment-lease-{me}")
    claims = _Claims(run_id, me)
    try:
        done = await asyncio.gather(*(_slot(claims, stopping) for _ in range(slots)))
        await _settle(run_id)
    finally:
        lease.cancel()
        await asyncio.gather(lease, return_exceptions=True)
        await Drainer.objects.filter(run_id=run_id, worker=me).adelete()
    await sync_to_async(finish_if_done)(run_id)
    return sum(done)


async def _settle(run_id: int) -> None:
    """A stopping run whose items another worker holds: wait (the lease loop renewing and
    reaping) until they end or their leases pass and are reaped, so a worker killed while
    holding them does not leave the run stopping. Bounded: a live worker whose item will not
    end keeps renewing, and ends the run itself when it does."""
    pause = _lease_pause()
    deadline = asyncio.get_running_loop().time() + 2 * settings.PLAYGROUND_EXPERIMENTS["LEASE"]
    while asyncio.get_running_loop().time() < deadline:
        if not await sync_to_async(_held)(run_id):
            return
        await asyncio.sleep(pause)


def _held(run_id: int) -> bool:
    """Whether a stopping run still has items running."""
    return ExperimentRun.objects.filter(
        pk=run_id,
        status=ExperimentRun.Status.STOPPING,
        items__status=Item.Status.RUNNING,
    ).exists()


def _lease_pause() -> float:
    return max(0.2, min(1.0, settings.PLAYGROUND_EXPERIMENTS["LEASE"] / 3))


def _slots(run_id: int) -> int:
    endpoints = set(
        Item.objects.filter(run_id=run_id).order_by().values_list("endpoint", flat=True).distinct()
    )
    gates = EndpointGate.objects.filter(endpoint__in=endpoints)
    return min(MAX_SLOTS, sum(g.limit for g in gates))


class _Claims:
    """One worker's claims, shared by its slots: the slots asking at the same time (those
    whose items ended together, as items of one length do) are served by one trip to the
    database thread, instead of each queueing there behind the others with its own claim."""

    def __init__(self, run_id: int, me: str) -> None:
        self.run_id = run_id
        self.me = me
        self.waiting: list[asyncio.Future[Item | None]] = []
        self.serving: asyncio.Task | None = None

    async def next(self) -> Item | None:
        """An item for the calling slot, claimed under the gates; None if none may run now."""
        future: asyncio.Future[Item | None] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        if self.serving is None or self.serving.done():
            self.serving = asyncio.create_task(self._serve())
        return await future

    async def _serve(self) -> None:
        while self.waiting:
            await asyncio.sleep(0)  # the slots ending in this same turn of the loop join in
            asking, self.waiting = self.waiting, []
            try:
                items = await sync_to_async(claim_many)(self.run_id, self.me, len(asking))
            except BaseException as exc:
                for future in asking:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for future in asking:
                if not future.done():
                    future.set_result(items.pop(0) if items else None)
                # A slot gone meanwhile (cancelled): its item's lease passes and another
                # worker retries it, as after a killed worker.


async def _slot(claims: _Claims, stopping: asyncio.Event) -> int:
    run_id, me = claims.run_id, claims.me
    ran = 0
    pause = IDLE_PAUSE
    while not stopping.is_set():
        item = await claims.next()
        if item is None:
            if not await sync_to_async(_work_left)(run_id):
                return ran
            # An idle slot asks less and less often: a slot freed in this worker claims at
            # once in its own loop, so only another worker's leftovers wait for this one.
            await asyncio.sleep(pause)
            pause = min(MAX_IDLE_PAUSE, pause * 2)
            continue
        pause = IDLE_PAUSE
        try:
            await run_item(item, me, stopping)
        except Exception:
            log.exception("experiment item %s failed", item.pk)
            await _end(item, me, Item.Status.FAILED, error="The playground failed on this item.")
        ran += 1
    return ran


def _work_left(run_id: int) -> bool:
    """Items that may still need this worker: pending ones (waiting for a slot or a backoff)
    and running ones whose lease may yet pass (their worker may be dead)."""
    run = ExperimentRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
    if run != ExperimentRun.Status.RUNNING:
        return False
    return Item.objects.filter(
        run_id=run_id, status__in=[Item.Status.PENDING, Item.Status.RUNNING]
    ).exists()


def claim(run_id: int, me: str) -> Item | None:
    """The next item this worker may run, now marked running under its lease; or None."""
    items = claim_many(run_id, me, 1)
    return items[0] if items else None


def claim_many(run_id: int, me: str, wanted: int) -> list[Item]:
    """Up to `wanted` items this worker may run, marked running under its lease in one
    transaction, within each endpoint's concurrency and this worker's share of it, and
    within the budgets with the run's replies in flight counted (_Budget)."""
    now = timezone.now()
    taken: list[int] = []
    with transaction.atomic():
        run = (
            ExperimentRun.objects.select_for_update(of=("self",))
            .select_related("group", "started_by")
            .filter(pk=run_id)
            .first()
        )
        if run is None or run.status != ExperimentRun.Status.RUNNING:
            return []
        budget = _Budget.of(run, now)
        ready = Q(status=Item.Status.PENDING) & (
            Q(not_before__isnull=True) | Q(not_before__lte=now)
        )
        abandoned = Q(status=Item.Status.RUNNING, lease_until__lt=now)
        candidates = Item.objects.filter(run_id=run_id).filter(ready | abandoned)
        endpoints = sorted(set(candidates.order_by().values_list("endpoint", flat=True)))
        alive = now - timedelta(seconds=settings.PLAYGROUND_EXPERIMENTS["LEASE"])
        drainers = max(1, Drainer.objects.filter(run_id=run_id, seen__gte=alive).count())
        for endpoint in endpoints:
            if len(taken) >= wanted or (budget is not None and budget.full):
                break
            gate = EndpointGate.objects.select_for_update().get(endpoint=endpoint)
            running = Item.objects.filter(
                endpoint=endpoint, status=Item.Status.RUNNING, lease_until__gte=now
            )
            free = gate.limit - running.count()
            # This worker's share of the endpoint's slots, among the run's live workers.
            share = math.ceil(gate.limit / drainers) - running.filter(worker=me).count()
            room = min(free, share, wanted - len(taken))
            if room <= 0:
                continue
            for item in candidates.filter(endpoint=endpoint).order_by("position")[: room + 4]:
                if room <= 0 or (budget is not None and not budget.admits(item)):
                    break
                if item.status == Item.Status.RUNNING and not _take_back(item):
                    if budget is not None:
                        budget.release(item)  # failed here, not run: it spends nothing
                    continue
                item.status = Item.Status.RUNNING
                item.attempts += 1
                item.worker = me
                item.lease_until = lease_expiry()
                item.started = now
                item.save(update_fields=["status", "attempts", "worker", "lease_until", "started"])
                taken.append(item.pk)
                room -= 1
        if not taken:
            return []
        # Everything run_item() reads, in this same trip to the database thread.
        chosen = Item.objects.select_related("row", "run__group", "run__started_by")
        return list(chosen.filter(pk__in=taken).order_by("position"))


class _Budget:
    """The budgets on a run's sender in its space, with the run's replies in flight counted:
    a claim takes an item only if its cell (its reply and its judges' replies) fits beside
    them.

    budgets.check() (services.prepare_turn, before each item's request and each judge's)
    counts what is recorded: a reply once it is written, its cost once it ends. The items of
    a run start several at a time, each checked before the others count, so a run could go
    over a budget by up to its concurrency; and a judge asked while another item's reply
    still streamed went over by its own price. A claim holds the run's row (the claims of
    all its workers take turns), so it reserves each running item's cell at its prices: its
    reply at its variant's, and each judge at its model's, each a message until it is
    written and its price until it ends (a judge not asked yet, or refused, until the item
    ends). An item that does not fit waits while replies are in flight (they may end
    cheaper, or fail); with none in flight it is taken, and prepare_turn refuses its reply
    or its judge with the budget's message. Not reserved: other runs or chats of the space at
    the same time (each checked alone, as any send), and a re-judge (rejudge(), which asks one
    judge at a time when a budget applies)."""

    def __init__(
        self, found: list[budgets.Limit], prices: list[Decimal], judges: list[Decimal]
    ) -> None:
        self.limits, self.prices = found, prices
        self.judges = judges  # each judge's price, in the order a cell asks them
        self.cost = Decimal(0)
        self.messages = 0
        self.in_flight = 0
        self.full = False

    @classmethod
    def of(cls, run: ExperimentRun, now: Any) -> _Budget | None:
        """None when no budget applies (no query then: budgets.limits() reads its cache)."""
        if run.started_by is None:
            return None
        found = budgets.limits(run.started_by, run.group.team_id)
        if not found:
            return None
        judges = [_price(c["model"]) for c in run.spec.get("checks") or [] if c["kind"] == "judge"]
        budget = cls(found, [_price(v["model"]) for v in run.spec["variants"]], judges)
        live = list(
            Item.objects.filter(run_id=run.pk, status=Item.Status.RUNNING, lease_until__gte=now)
            .values_list("variant", "message__status", "position", "started", "conversation_id")
            .order_by()
        )
        asked = _judges_asked(run, live) if judges else {}
        for variant, reply, position, _, _ in live:
            if reply is None or reply == Message.Status.STREAMING:
                budget._reserve(budget.prices[variant], messages=int(reply is None))
            if reply not in (None, Message.Status.STREAMING, Message.Status.COMPLETE):
                continue  # the reply failed or stopped: no judge is asked
            answers = asked.get(position, [])
            for price, answer in zip(judges, answers, strict=False):
                if answer is None or answer == Message.Status.STREAMING:
                    budget._reserve(price, messages=int(answer is None))
            for price in judges[len(answers) :]:
                budget._reserve(price, messages=1)
        return budget

    def _reserve(self, cost: Decimal, *, messages: int) -> None:
        self.cost += cost
        self.messages += messages
        self.in_flight += 1

    def _cell(self, item: Item) -> tuple[Decimal, int]:
        """What an item not started yet may spend: its reply and every judge's."""
        return self.prices[item.variant] + sum(self.judges, Decimal(0)), 1 + len(self.judges)

    def release(self, item: Item) -> None:
        """An item admits() reserved for that the claim then did not start."""
        cost, messages = self._cell(item)
        self.cost -= cost
        self.messages -= messages
        self.in_flight -= 1

    def admits(self, item: Item) -> bool:
        """Whether the item may start now; if so its cell is reserved, else the run is full."""
        cost, messages = self._cell(item)
        over = any(
            limit.would_exceed(
                cost,
                reserved_cost=self.cost,
                reserved_messages=self.messages,
                messages=messages,
            )
            for limit in self.limits
        )
        if over and self.in_flight:
            self.full = True
            return False
        self._reserve(cost, messages=messages)
        return True


def _judges_asked(run: ExperimentRun, live: list[tuple]) -> dict[int, list[str | None]]:
    """For each running item whose reply is complete (being judged), by position: the judges
    asked in this attempt, in order, each as its answer's status (None: not written yet, or
    the judge was refused). A judge's conversation is at its item's position in the run's
    group (_judge_conversation); one made before the item was claimed is an earlier
    attempt's (a worker lost while judging)."""
    judged = {
        position: (started, own)
        for _, reply, position, started, own in live
        if reply == Message.Status.COMPLETE
    }
    if not judged:
        return {}
    answer = Message.objects.filter(
        conversation=OuterRef("pk"), role=Message.Role.ASSISTANT
    ).values("status")[:1]
    asked: dict[int, list[str | None]] = {}
    conversations = (
        Conversation.objects.filter(group_id=run.group_id, position__in=list(judged))
        .annotate(answer=Subquery(answer))
        .order_by("pk")
        .values_list("pk", "position", "created", "answer")
    )
    for pk, position, created, status in conversations:
        started, own = judged[position]
        if pk != own and (started is None or created >= started):
            asked.setdefault(position, []).append(status)
    return asked


def _price(model_key: str) -> Decimal:
    """A completed reply's price, as services.within_budget checks it."""
    try:
        return catalog.get_model(model_key).cost(completed=True) or Decimal(0)
    except catalog.UnknownModel:
        return Decimal(0)  # the item fails when it starts


def _take_back(item: Item) -> bool:
    """An item whose worker stopped renewing its lease: try it once more, from a clean
    conversation; after a second loss, fail it. True if it may run again."""
    if item.conversation_id is not None:
        Message.objects.filter(conversation_id=item.conversation_id).delete()
    if item.attempts >= MAX_ATTEMPTS:
        item.status = Item.Status.FAILED
        item.error = "The worker running this item stopped twice; not tried again."
        item.message = None
        item.passed = False  # failed, as _end_now() marks a failed item
        item.finished = timezone.now()
        item.save(update_fields=["status", "error", "message", "passed", "finished"])
        transaction.on_commit(lambda: progress.announce(item.run_id))
        return False
    log.warning("experiment item %s: its worker %s is gone, trying again", item.pk, item.worker)
    item.message = None
    item.save(update_fields=["message"])
    return True


async def _lease_loop(run_id: int, me: str, stopping: asyncio.Event) -> None:
    """Renew this worker's leases; on a stopped run, stop its replies in this process and
    reap the items of workers that died holding them."""
    pause = _lease_pause()
    while True:
        await asyncio.sleep(pause)
        try:
            mine = Item.objects.filter(run_id=run_id, worker=me, status=Item.Status.RUNNING)
            await mine.aupdate(lease_until=lease_expiry())
            await Drainer.objects.filter(run_id=run_id, worker=me).aupdate(seen=timezone.now())
            run = await ExperimentRun.objects.filter(pk=run_id).afirst()
            if run is None or not run.active or run.status == ExperimentRun.Status.STOPPING:
                stopping.set()
                if run is not None:
                    await runs.stop(Conversation.objects.filter(group_id=run.group_id))
                if run is not None and run.status == ExperimentRun.Status.STOPPING:
                    await sync_to_async(reap)(run_id)
        except Exception:
            log.exception("experiment run %s: renewing leases failed", run_id)


async def run_item(item: Item, me: str, stopping: asyncio.Event | None = None) -> None:
    run = item.run
    spec = run.spec
    variant = spec["variants"][item.variant]
    if run.started_by is None:
        await _end(item, me, Item.Status.FAILED, error="The person who started the run is gone.")
        return
    user = run.started_by
    channel = await runs.channel_layer().new_channel()
    if stopping is not None and stopping.is_set():  # stopped since the claim: send nothing
        await _end(item, me, Item.Status.STOPPED)
        return
    try:
        prepared, prompt, version = await sync_to_async(_prepare)(
            spec, variant, item, user, channel
        )
    except ValueError as exc:  # a prompt version's variable with no value in this row
        await _end(item, me, Item.Status.FAILED, error=str(exc))
        return
    except services.TurnError as exc:  # a budget, a missing key, a model gone
        await _end(item, me, Item.Status.FAILED, error=str(exc))
        return
    except params.InvalidParams as exc:
        await _end(item, me, Item.Status.FAILED, error=f"Invalid parameters: {exc.errors}")
        return
    # As a chat send does: the upstream request goes out while the rows are written.
    reply_run = runs.begin(prepared.run)
    try:
        turn = await sync_to_async(_write)(prepared, user, item, me, version)
    except BaseException as exc:
        await reply_run.abandon()
        if not isinstance(exc, services.TurnError):
            raise
        await _end(item, me, Item.Status.FAILED, error=str(exc))
        return
    reply_run.request = turn.run
    await reply_run.main()
    reply = await Message.objects.aget(pk=turn.run.message_id)
    limited = reply.status == Message.Status.ERROR and any(s in reply.error for s in RATE_LIMITED)
    if limited and await sync_to_async(_back_off)(item, me):
        return
    status: str = Item.Status.FAILED
    if reply.status == Message.Status.COMPLETE:
        status = Item.Status.DONE
    elif reply.status == Message.Status.STOPPED:
        status = Item.Status.STOPPED
    verdicts: list[dict[str, Any]] = []
    if status == Item.Status.DONE:
        verdicts = await cell_verdicts(item, reply, spec, prompt, user, judge=True)
    await _end(item, me, status, error=reply.error, verdicts=verdicts)


def _prepare(
    spec: dict[str, Any], variant: dict[str, Any], item: Item, user, channel: str
) -> tuple[services.PreparedTurn, str, Any]:
    """The item's turn checked and built (services.prepare_turn: budgets, key, parameters),
    with its message and prompt version, in one trip to the database thread (each trip
    waits in its queue behind the other slots')."""
    prompt, system_prompt, version = _prompt_of(spec, variant, item)
    prepared = services.prepare_turn(
        _conversation_for(item),
        user,
        text=prompt,
        model_key=variant["model"],
        system_prompt=system_prompt,
        channel=channel,
        values=dict(variant.get("params") or {}),
        wire_format=variant.get("wire_format") or None,
    )
    return prepared, prompt, version


def _write(
    prepared: services.PreparedTurn, user, item: Item, me: str, version: Any
) -> services.Turn:
    """The turn's rows, the item's reply and the reply's prompt version, in one trip."""
    turn = services.write_turn(prepared, user, batch=True)
    Item.objects.filter(pk=item.pk, worker=me).update(message_id=turn.run.message_id)
    if version is not None:
        _record_version(turn.run.message_id, version, item.row.variables)
    return turn


def resolve_prompt(spec: dict[str, Any], variant: dict[str, Any]) -> str:
    """The user message template of a variant without a prompt version: the experiment's."""
    return str(variant.get("prompt") or spec["prompt"])


def _prompt_of(spec: dict[str, Any], variant: dict[str, Any], item: Item) -> tuple[str, str, Any]:
    """The user message and system prompt for this row, and the prompt version they came
    from (None: the experiment's own template). A version's missing variable: ValueError."""
    version_pk = variant.get("prompt_version")
    if not version_pk:
        text = datasets.render_prompt(resolve_prompt(spec, variant), item.row.variables)
        return text, variant.get("system_prompt", ""), None
    from playground.prompts import library
    from playground.prompts.models import PromptVersion

    version = PromptVersion.objects.filter(pk=version_pk).first()
    if version is None:
        raise ValueError("The prompt version of this variant was deleted.")
    rendered = library.render(version, item.row.variables)
    text = rendered.messages[-1]["content"] if rendered.messages else ""
    if not rendered.messages:  # a system-prompt-only version: the experiment's message
        text = datasets.render_prompt(spec["prompt"], item.row.variables)
    return text, rendered.system_prompt, version


def _record_version(message_id: int, version: Any, variables: dict[str, str]) -> None:
    """The reply shows (and History filters by) the prompt version it came from."""
    from playground.prompts import library

    message = Message.objects.get(pk=message_id)
    library.record_reply(message, version, variables)


def _conversation_for(item: Item) -> Conversation:
    """The item's conversation in the run's group: new, or the one of a retried attempt."""
    if item.conversation_id is not None:
        conversation = Conversation.objects.filter(pk=item.conversation_id).first()
        if conversation is not None:
            return conversation
    run = item.run
    spec = run.spec
    conversation = Conversation.objects.create(
        owner_id=_owner(run),
        team_id=run.group.team_id,
        group_id=run.group_id,
        position=item.position,
        model=spec["variants"][item.variant]["model"],
        title=f"{spec['name']} · row {item.row.position + 1} · {item.variant + 1}"[:200],
    )
    Item.objects.filter(pk=item.pk).update(conversation=conversation)
    item.conversation = conversation
    return conversation


def _owner(run: ExperimentRun) -> int:
    assert run.started_by_id is not None  # run_item() ended items of a run without one
    return run.started_by_id


def _back_off(item: Item, me: str) -> bool:
    """Put a rate-limited item back, to be claimed after a pause; False when it was
    rate-limited too often (it fails)."""
    if item.rate_limited >= settings.PLAYGROUND_EXPERIMENTS["RATE_LIMIT_RETRIES"]:
        return False
    pause = min(60.0, 2.0 ** (item.rate_limited + 1))
    with transaction.atomic():
        if item.conversation_id:
            Message.objects.filter(conversation_id=item.conversation_id).delete()
        Item.objects.filter(pk=item.pk, worker=me, status=Item.Status.RUNNING).update(
            status=Item.Status.PENDING,
            worker="",
            lease_until=None,
            message=None,
            attempts=item.attempts - 1,  # a 429 is the provider's pacing, not a lost worker
            rate_limited=item.rate_limited + 1,
            not_before=timezone.now() + timedelta(seconds=pause),
        )
    return True


async def cell_verdicts(
    item: Item, reply: Message, spec: dict[str, Any], prompt: str, user, *, judge: bool
) -> list[dict[str, Any]]:
    """Every check's verdict on a saved reply; the judge's only with judge=True (else the
    verdict it gave before is kept)."""
    out = output_of(reply, item.row.expected)
    verdicts = []
    previous = {v.get("check"): v for v in item.verdicts or []}
    for index, check in enumerate(spec.get("checks") or []):
        if check["kind"] == "judge":
            if judge:
                verdict = await run_judge(item, check, prompt, reply.text, user)
            else:
                kept = previous.get(index)
                if kept is None or kept.get("kind") != "judge":  # checks changed: not its own
                    kept = _undecided(index, "not judged yet")
                verdicts.append(kept)
                continue
        else:
            verdict = checks.evaluate(check, out)
        verdicts.append({"check": index, **verdict.as_dict()})
    return verdicts


def _undecided(index: int, reason: str) -> dict[str, Any]:
    return {"check": index, "kind": "judge", "passed": None, "reason": reason, "score": None}


def output_of(reply: Message, expected: str) -> checks.Output:
    return checks.Output(
        text=reply.text,
        expected=expected,
        ttft_ms=reply.ttft_ms,
        total_ms=reply.total_ms,
        output_tokens=reply.output_tokens,
        cost=reply.cost,
    )


async def run_judge(
    item: Item, check: dict[str, Any], prompt: str, reply: str, user
) -> checks.Verdict:
    """Ask the judge model through the run engine: its question and answer are a
    conversation of the run's group like any other (usage and budgets count it)."""
    try:
        model = catalog.get_model(check["model"])
    except catalog.UnknownModel:
        return checks.Verdict("judge", None, f"the judge model {check['model']} is gone")
    values: dict[str, Any] = {}
    if model.supports(JSON_SCHEMA):
        schema = checks.judge_schema(check)
        values["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": schema, "strict": True},
        }
    elif model.supports(JSON_OUTPUT):
        values["response_format"] = {"type": "json_object"}
    question = checks.judge_prompt(check, prompt, reply, item.row.expected)
    conversation = await sync_to_async(_judge_conversation)(item, model.key, user.pk)
    channel = await runs.channel_layer().new_channel()
    try:
        turn = await sync_to_async(services.start_turn)(
            conversation,
            user,
            text=question,
            model_key=model.key,
            system_prompt="",
            channel=channel,
            values=values,
            batch=True,
        )
    except (services.TurnError, params.InvalidParams) as exc:
        return checks.Verdict("judge", None, f"the judge could not run: {exc}")
    await runs.Run(turn.run).main()
    answer = await Message.objects.aget(pk=turn.run.message_id)
    if answer.status != Message.Status.COMPLETE:
        return checks.Verdict("judge", None, f"the judge failed: {answer.error or answer.status}")
    return checks.read_judge(check, answer.text)


def _judge_conversation(item: Item, model_key: str, owner_id: int) -> Conversation:
    """The judge's turn, sent by `owner_id` (who started the run, or asked to re-judge)."""
    run = item.run
    return Conversation.objects.create(
        owner_id=owner_id,
        team_id=run.group.team_id,
        group_id=run.group_id,
        position=item.position,
        model=model_key,
        title=f"Judge · row {item.row.position + 1} · {item.variant + 1}",
    )


async def _end(
    item: Item,
    me: str,
    status: str,
    *,
    error: str = "",
    verdicts: list[dict[str, Any]] | None = None,
) -> None:
    await sync_to_async(_end_now)(item, me, status, error, verdicts or [])


def _end_now(item: Item, me: str, status: str, error: str, verdicts: list[dict[str, Any]]) -> None:
    """The item's last write and the page's nudge, in one trip to the database thread. A
    stopped item has no verdict (passed None): the user stopped it, it did not fail."""
    passed: bool | None = False
    if status == Item.Status.DONE:
        passed = checks.overall(verdicts)
    elif status == Item.Status.STOPPED:
        passed = None
    Item.objects.filter(pk=item.pk, worker=me, status=Item.Status.RUNNING).update(
        status=status,
        error=error[:2000],
        verdicts=verdicts,
        passed=passed,
        lease_until=None,
        finished=timezone.now(),
    )
    progress.announce(item.run_id)


def finish_if_done(run_id: int) -> None:
    """Mark the run done (or stopped) once no item is pending or running."""
    left = Item.objects.filter(
        run_id=run_id, status__in=[Item.Status.PENDING, Item.Status.RUNNING]
    ).exists()
    if left:
        return
    run = ExperimentRun.objects.filter(pk=run_id).first()
    if run is None or not run.active:
        return
    final = (
        ExperimentRun.Status.STOPPED
        if run.status == ExperimentRun.Status.STOPPING
        else ExperimentRun.Status.DONE
    )
    ExperimentRun.objects.filter(pk=run_id, status=run.status).update(
        status=final, finished=timezone.now()
    )
    progress.announce(run_id)


def reap(run_id: int) -> bool:
    """End what a stopping run leaves behind: its pending items and those whose worker is
    gone (lease passed) end stopped, never retried; once nothing runs the run ends stopped,
    as runner.stop() ends it. The run's row is locked first, as a claim locks it, so several
    workers (and pages) reaping at once end each item and the run once. True if the run
    ended here."""
    now = timezone.now()
    with transaction.atomic():
        run = ExperimentRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status != ExperimentRun.Status.STOPPING:
            return False
        gone = Q(status=Item.Status.PENDING) | Q(status=Item.Status.RUNNING, lease_until__lt=now)
        reaped = (
            Item.objects.filter(run_id=run_id)
            .filter(gone)
            .update(status=Item.Status.STOPPED, lease_until=None, finished=now)
        )
        left = Item.objects.filter(
            run_id=run_id, status__in=[Item.Status.PENDING, Item.Status.RUNNING]
        ).exists()
        ended = not left and bool(
            ExperimentRun.objects.filter(pk=run_id, status=ExperimentRun.Status.STOPPING).update(
                status=ExperimentRun.Status.STOPPED, finished=now
            )
        )
        if reaped or ended:
            transaction.on_commit(lambda: progress.announce(run_id))
    if reaped:
        log.warning("experiment run %s: %s items of gone workers stopped", run_id, reaped)
    return ended


async def rejudge(run_id: int, user_id: int) -> int:
    """The judge checks again on every finished cell's saved reply (the judge model is
    called; the cells' models are not), sent by `user_id`; the number of cells judged.
    Several cells at once, as a run's items; one at a time when a budget applies."""
    from django.contrib.auth import get_user_model

    run = await ExperimentRun.objects.select_related("group").aget(pk=run_id)
    user = await get_user_model().objects.filter(pk=user_id, is_active=True).afirst()
    spec = run.spec
    judges = [(i, c) for i, c in enumerate(spec.get("checks") or []) if c["kind"] == "judge"]
    if user is None or not judges:
        return 0
    items = [
        i
        async for i in Item.objects.filter(run=run, status=Item.Status.DONE)
        .exclude(message=None)
        .select_related("row", "message", "run__group")
    ]
    limit = await sync_to_async(_slots)(run_id)
    if await sync_to_async(budgets.limits)(user, run.group.team_id):
        # Each judge is checked as it starts against what is recorded (no claim reserves
        # these): one at a time, each is checked with the ones before it counted.
        limit = 1
    gate = asyncio.Semaphore(max(1, limit))

    async def judge(item: Item) -> None:
        assert item.message is not None
        variant = spec["variants"][item.variant]
        try:
            prompt, _, _ = await sync_to_async(_prompt_of)(spec, variant, item)
        except ValueError:
            return
        async with gate:
            verdicts = {v.get("check"): v for v in item.verdicts or []}
            for index, check in judges:
                verdict = await run_judge(item, check, prompt, item.message.text, user)
                verdicts[index] = {"check": index, **verdict.as_dict()}
        ordered = [verdicts[k] for k in sorted(verdicts, key=lambda k: k or 0)]
        await Item.objects.filter(pk=item.pk).aupdate(
            verdicts=ordered, passed=checks.overall(ordered)
        )

    await asyncio.gather(*(judge(i) for i in items))
    await sync_to_async(progress.announce)(run_id)
    return len(items)
