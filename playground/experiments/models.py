"""Datasets (versioned), experiments, their runs and each run's items.

An item is one (dataset row, variant, repeat) of a run. Its reply is an ordinary conversation
in the run's RunGroup, made by the chat run engine (see worker.py); the item keeps which
worker holds it (a lease, renewed while it runs), each check's verdict, and the cell's figures.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from playground.accounts.models import Membership
from playground.chat.models import Conversation, Message, RunGroup


class SpaceQuerySet(models.QuerySet):
    def visible_to(self, user) -> Any:
        """Own personal objects plus those of the user's teams. Start every lookup here."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(
            Q(owner=user, team__isnull=True) | Q(team__memberships__user=user)
        ).distinct()

    def in_space(self, team_id: int | None) -> Any:
        if team_id is None:
            return self.filter(team__isnull=True)
        return self.filter(team_id=team_id)


def may_change(obj: Any, user) -> bool:
    """Change, run or stop: a personal object's owner; in a team, a member who may run
    (viewers watch). The role decides, never who created it."""
    if obj.team_id is None:
        return bool(user.pk == obj.owner_id)
    membership = Membership.objects.filter(team_id=obj.team_id, user=user).first()
    return bool(membership and membership.can_run())


class Dataset(models.Model):
    """Rows of template variables, with an optional expected output and notes per row.

    A version that a run used is never changed: editing it makes the next version (see
    edit_copy), and the experiments that followed it move to the new one."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    name = models.CharField(max_length=200)
    version = models.PositiveIntegerField(default=1)
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="next_versions"
    )
    # The variable names, in the order the upload gave them.
    columns = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = SpaceQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def can_change(self, user) -> bool:
        return may_change(self, user)

    @property
    def is_used(self) -> bool:
        return ExperimentRun.objects.filter(dataset=self).exists()

    def edit_copy(self) -> Dataset:
        """The dataset to write an edit into: itself while no run used it, else a new version
        (rows copied) that the experiments following this one move to."""
        if not self.is_used:
            return self
        with transaction.atomic():
            copy = Dataset.objects.create(
                owner=self.owner,
                team=self.team,
                name=self.name,
                version=self.version + 1,
                previous=self,
                columns=list(self.columns),
            )
            DatasetRow.objects.bulk_create(
                DatasetRow(
                    dataset=copy,
                    position=r.position,
                    variables=r.variables,
                    expected=r.expected,
                    notes=r.notes,
                )
                for r in self.rows.all()
            )
            Experiment.objects.filter(dataset=self).update(dataset=copy)
        return copy


class DatasetRow(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="rows")
    position = models.PositiveIntegerField()
    variables = models.JSONField(default=dict)
    expected = models.TextField(blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["position", "id"]
        indexes = [models.Index(fields=["dataset", "position"], name="datasetrow_order")]

    def __str__(self) -> str:
        return f"row {self.position + 1}"

    @property
    def variables_json(self) -> str:
        return json.dumps(self.variables, ensure_ascii=False)


class Experiment(models.Model):
    """Variants × a dataset (or some of its rows) × repeats, plus checks.

    `variants`: [{"label", "model", "params", "system_prompt", "wire_format",
    "prompt_version"}]; `checks`: [{"kind", ...}] as checks.py reads them. `prompt` is the
    user message template; its `{{names}}` come from each row."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    name = models.CharField(max_length=200)
    dataset = models.ForeignKey(Dataset, on_delete=models.RESTRICT, related_name="experiments")
    prompt = models.TextField()
    variants = models.JSONField(default=list)
    checks = models.JSONField(default=list, blank=True)
    repeats = models.PositiveSmallIntegerField(default=1)
    # Positions of the rows to run (a subset); empty: all rows.
    row_positions = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = SpaceQuerySet.as_manager()

    class Meta:
        ordering = ["-updated", "-id"]

    def __str__(self) -> str:
        return self.name

    def can_change(self, user) -> bool:
        return may_change(self, user)


class ExperimentRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        STOPPING = "stopping"
        STOPPED = "stopped"
        DONE = "done"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    group = models.OneToOneField(RunGroup, on_delete=models.CASCADE, related_name="experiment_run")
    dataset = models.ForeignKey(Dataset, on_delete=models.RESTRICT, related_name="runs")
    # What the run was started with (prompt, variants, checks, repeats): the experiment may
    # change afterwards, its runs do not.
    spec = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "number"], name="experimentrun_number")
        ]

    def __str__(self) -> str:
        return f"{self.experiment} run {self.number}"

    @property
    def active(self) -> bool:
        return self.status in (self.Status.RUNNING, self.Status.STOPPING)


class Item(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        STOPPED = "stopped"

    run = models.ForeignKey(ExperimentRun, on_delete=models.CASCADE, related_name="items")
    row = models.ForeignKey(DatasetRow, on_delete=models.RESTRICT, related_name="+")
    variant = models.PositiveSmallIntegerField()
    repeat = models.PositiveSmallIntegerField(default=0)
    position = models.PositiveIntegerField()
    # The provider slug of the variant's model: concurrency is counted per endpoint.
    endpoint = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    rate_limited = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)  # 429 backoff
    conversation = models.OneToOneField(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # [{"check": index, "kind", "passed": bool|None, "score": int|None, "reason"}]
    verdicts = models.JSONField(default=list, blank=True)
    passed = models.BooleanField(null=True)
    error = models.TextField(blank=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        indexes = [
            models.Index(fields=["run", "status", "position"], name="item_claim"),
            models.Index(fields=["endpoint", "status", "lease_until"], name="item_endpoint"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "row", "variant", "repeat"], name="item_unique_cell"
            )
        ]

    def __str__(self) -> str:
        return f"item {self.position} of {self.run}"


class Drainer(models.Model):
    """A worker draining a run, seen at its last lease renewal: an endpoint's slots are
    shared among the live ones, so a worker that started first does not keep them all."""

    run = models.ForeignKey(ExperimentRun, on_delete=models.CASCADE, related_name="drainers")
    worker = models.CharField(max_length=100)
    seen = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "worker"], name="drainer_unique")]

    def __str__(self) -> str:
        return self.worker


class EndpointGate(models.Model):
    """One row per endpoint (provider slug): its concurrency across all workers, and the row
    a claim locks, so two workers cannot both take the last free slot."""

    endpoint = models.CharField(max_length=100, unique=True)
    concurrency = models.PositiveSmallIntegerField(default=0)  # 0: the site default

    def __str__(self) -> str:
        return self.endpoint

    @property
    def limit(self) -> int:
        return self.concurrency or int(settings.PLAYGROUND_EXPERIMENTS["CONCURRENCY"])


def lease_expiry() -> Any:
    return timezone.now() + timedelta(seconds=settings.PLAYGROUND_EXPERIMENTS["LEASE"])
