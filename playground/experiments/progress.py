"""A run's progress: counts, ETA and cost so far, and how the page hears of changes.

With Redis as the channel layer, workers tell the run's group after every item and the page's
socket (consumers.py) redraws the progress and the cells that changed. Without it the worker's
in-memory layer reaches no other process, so the page polls (POLL_INTERVAL) instead."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone

from playground.chat.models import Message
from playground.experiments.models import ExperimentRun, Item

log = logging.getLogger(__name__)


def group_name(run_id: int) -> str:
    return f"experiment-run-{run_id}"


def live() -> bool:
    """Whether workers can reach the page's process through the channel layer."""
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return "channels_redis" in backend


def announce(run_id: int) -> None:
    """Tell the run's watchers that something changed; never fails the caller."""
    if not live():
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group_name(run_id), {"type": "experiment.progress"})
    except Exception as exc:
        log.warning("experiment run %s: progress not announced: %r", run_id, exc)


@dataclass
class Progress:
    total: int
    done: int
    running: int
    failed: int
    stopped: int
    remaining: int
    passed: int
    cost: Decimal
    eta: timedelta | None
    status: str

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.stopped

    @property
    def percent(self) -> int:
        return round(100 * self.finished / self.total) if self.total else 100


def of(run: ExperimentRun) -> Progress:
    counts = dict(
        Item.objects.filter(run=run)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    passed = Item.objects.filter(run=run, passed=True).count()
    cost = Message.objects.filter(conversation__group_id=run.group_id).aggregate(c=Sum("cost"))[
        "c"
    ] or Decimal(0)
    total = sum(counts.values())
    done = counts.get(Item.Status.DONE, 0)
    failed = counts.get(Item.Status.FAILED, 0)
    stopped = counts.get(Item.Status.STOPPED, 0)
    running = counts.get(Item.Status.RUNNING, 0)
    pending = counts.get(Item.Status.PENDING, 0)
    finished = done + failed + stopped
    eta = None
    if run.active and finished and pending + running:
        elapsed = timezone.now() - run.created
        eta = elapsed / finished * (pending + running)
    return Progress(
        total=total,
        done=done,
        running=running,
        failed=failed,
        stopped=stopped,
        remaining=pending + running,
        passed=passed,
        cost=cost,
        eta=eta,
        status=run.status,
    )
