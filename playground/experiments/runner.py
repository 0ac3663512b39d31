"""Starting, stopping and re-checking experiment runs (what the views call)."""

from __future__ import annotations

import contextlib
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction

from playground.chat import runs
from playground.chat.models import Conversation, Message, RunGroup
from playground.experiments import checks, datasets, progress, worker
from playground.experiments.models import (
    EndpointGate,
    Experiment,
    ExperimentRun,
    Item,
)
from playground.providers import catalog


class RunError(Exception):
    pass


def max_items() -> int:
    return int(settings.PLAYGROUND_EXPERIMENTS["MAX_ITEMS"])


def too_large(rows: int, variants: int, repeats: int) -> str | None:
    """Why a run of this size is refused, or None. Rows, variants and repeats are each
    capped, but a run writes one item (and later a conversation) per row × variant × repeat,
    in one transaction: their product is capped too."""
    count, cap = rows * variants * repeats, max_items()
    if count <= cap:
        return None
    parts = " × ".join(
        f"{n:,} {word}{'' if n == 1 else 's'}"
        for n, word in ((rows, "row"), (variants, "variant"), (repeats, "repeat"))
    )
    return f"{parts} make {count:,} items; a run makes at most {cap:,}."


def start(experiment: Experiment, user) -> ExperimentRun:
    """A new run of the experiment as it is now: its items written, its drain tasks queued
    once the transaction commits (a worker must find the items)."""
    from playground.experiments.tasks import drain_run

    rows = list(experiment.dataset.rows.all())
    if experiment.row_positions:
        wanted = set(experiment.row_positions)
        rows = [r for r in rows if r.position in wanted]
    if not rows:
        raise RunError("The dataset has no rows to run.")
    if not experiment.variants:
        raise RunError("Add a variant first.")
    # Before anything is written; here too, as the dataset may have grown since the save.
    problem = too_large(len(rows), len(experiment.variants), experiment.repeats)
    if problem:
        raise RunError(problem)
    endpoints = []
    for variant in experiment.variants:
        try:
            endpoints.append(catalog.get_model(variant["model"]).provider.slug)
        except catalog.UnknownModel:
            raise RunError(f"The model {variant['model']} is no longer configured.") from None
    spec: dict[str, Any] = {
        "name": experiment.name,
        "prompt": experiment.prompt,
        "variants": experiment.variants,
        "checks": experiment.checks,
        "repeats": experiment.repeats,
    }
    with transaction.atomic():
        last = experiment.runs.order_by("-number").values_list("number", flat=True).first()
        number = (last or 0) + 1
        group = RunGroup.objects.create(
            kind=RunGroup.Kind.EXPERIMENT,
            owner=user,
            team_id=experiment.team_id,
            title=f"{experiment.name} · run {number}"[:200],
            spec={"experiment": experiment.pk, "run": number},
        )
        run = ExperimentRun.objects.create(
            experiment=experiment,
            number=number,
            group=group,
            dataset=experiment.dataset,
            spec=spec,
            started_by=user,
        )
        items = []
        position = 0
        for row in rows:
            for v, endpoint in enumerate(endpoints):
                for r in range(experiment.repeats):
                    items.append(
                        Item(
                            run=run,
                            row=row,
                            variant=v,
                            repeat=r,
                            position=position,
                            endpoint=endpoint,
                        )
                    )
                    position += 1
        Item.objects.bulk_create(items, batch_size=500)
        for endpoint in set(endpoints):
            EndpointGate.objects.get_or_create(endpoint=endpoint)
        tasks = int(settings.PLAYGROUND_EXPERIMENTS["TASKS_PER_RUN"])
        transaction.on_commit(lambda: [drain_run.enqueue(run.pk) for _ in range(tasks)])
    return run


def stop(run: ExperimentRun) -> None:
    """Stop the whole run: nothing pending starts, and every reply in flight is stopped
    through chat.runs.stop() (its upstream request closed), in whatever process it runs."""
    updated = ExperimentRun.objects.filter(pk=run.pk, status=ExperimentRun.Status.RUNNING).update(
        status=ExperimentRun.Status.STOPPING
    )
    if updated:
        with contextlib.suppress(Exception):  # the workers' lease loops stop them too
            runs.stop_sync(Conversation.objects.filter(group_id=run.group_id))
    # Pending items, and those whose worker is gone (lease passed): nobody would end them.
    # Nothing left running (or the workers are gone): the run ends here.
    worker.reap(run.pk)
    progress.announce(run.pk)


def recheck(run: ExperimentRun) -> int:
    """Every check but the judge, again, on the saved replies; no model is called. The
    judge's verdicts stay as they were. The number of cells re-checked."""
    spec = run.spec
    count = 0
    items = Item.objects.filter(run=run, status=Item.Status.DONE).select_related("row", "message")
    for item in items:
        if item.message is None:
            continue
        verdicts = async_to_sync(worker.cell_verdicts)(
            item, item.message, spec, "", None, judge=False
        )
        Item.objects.filter(pk=item.pk).update(verdicts=verdicts, passed=checks.overall(verdicts))
        count += 1
    progress.announce(run.pk)
    return count


def set_checks(run: ExperimentRun, experiment: Experiment) -> None:
    """Re-checking with the experiment's current checks (not only the run's own)."""
    spec = dict(run.spec)
    spec["checks"] = experiment.checks
    ExperimentRun.objects.filter(pk=run.pk).update(spec=spec)
    run.spec = spec


def reply_row(message: Message) -> dict[str, str]:
    """A dataset row from a saved reply: its prompt as `input`, its text as expected."""
    prompt = message.parent.text if message.parent_id and message.parent else ""
    return {"input": prompt, "expected": message.text}


__all__ = [
    "RunError",
    "datasets",
    "max_items",
    "recheck",
    "reply_row",
    "start",
    "stop",
    "too_large",
]
