from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from playground.accounts.models import Membership
from playground.chat import liveness, plainsql
from playground.providers.specs import CHAT, FORMAT_LABELS

FORMAT_CHOICES = list(FORMAT_LABELS.items())


class ConversationQuerySet(models.QuerySet):
    def visible_to(self, user) -> ConversationQuerySet:
        """Own personal conversations plus those of the user's teams. Start every lookup here.

        A team conversation is reached through the membership alone: its creator loses it on
        leaving the team, like anyone else."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(
            Q(owner=user, team__isnull=True) | Q(team__memberships__user=user)
        ).distinct()

    def abandoned_by(self, user, before: datetime) -> ConversationQuerySet:
        """The user's conversations that never got a message and were last touched before
        `before`: opened with "New conversation" and left. The sidebar hides them (no title:
        it comes with the first message), so nothing else would ever remove them. One with
        any message, or a title its owner gave it, is never among them."""
        return self.filter(owner=user, title="", updated__lt=before, messages__isnull=True)

    def in_space(self, team_id: int | None) -> ConversationQuerySet:
        """One space's conversations: a team's, or (None) the personal ones."""
        if team_id is None:
            return self.filter(team__isnull=True)
        return self.filter(team_id=team_id)

    def older_than(self, updated: datetime, pk: int) -> ConversationQuerySet:
        """The rows after (updated, pk) in the newest-first order: a keyset page boundary.
        Ties in `updated` are broken by id, as `Meta.ordering` breaks them."""
        return self.filter(Q(updated__lt=updated) | Q(updated=updated, pk__lt=pk))


class RunGroupQuerySet(models.QuerySet):
    def visible_to(self, user) -> RunGroupQuerySet:
        """As for conversations: the user's personal groups plus those of their teams."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(
            Q(owner=user, team__isnull=True) | Q(team__memberships__user=user)
        ).distinct()

    def deletable_by(self, user) -> RunGroupQuerySet:
        """The groups `user` may delete (RunGroup.may_delete), in one query: History asks for
        a whole page's at once."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        roles = Membership.Role
        runs_in_team = Q(
            team__memberships__user=user,
            team__memberships__role__in=[roles.OWNER, roles.ADMIN, roles.MEMBER],
        )
        manages_team = Q(
            team__memberships__user=user,
            team__memberships__role__in=[roles.OWNER, roles.ADMIN],
        )
        return self.filter(
            Q(owner=user, team__isnull=True) | (Q(owner=user) & runs_in_team) | manages_team
        ).distinct()


class RunGroup(models.Model):
    """Conversations started together: a compare's columns, a sweep's cells, an experiment
    run's items. Each member is an ordinary conversation (`Conversation.group`), made by the
    one run engine, so review, export, usage and budgets see its replies like any other; the
    sidebar lists only plain chats, History lists everything. What a kind needs beyond this
    (a sweep's grid, an experiment's dataset) lives in its own app, keyed to the group."""

    class Kind(models.TextChoices):
        COMPARE = "compare", "Compare"
        SWEEP = "sweep", "Sweep"
        EXPERIMENT = "experiment", "Experiment"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="run_groups"
    )
    team = models.ForeignKey(
        "accounts.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="run_groups",
    )
    title = models.CharField(max_length=200, blank=True)
    # The setup it was started with (columns, grid axes, ...), as its kind's app wrote it.
    spec = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = RunGroupQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["team", "owner", "-created"], name="rungroup_space")]

    def __str__(self) -> str:
        return self.title or f"{self.get_kind_display()} {self.pk}"

    def may_delete(self, user) -> bool:
        """Delete the group with its conversations: a personal group's owner; in a team, the
        member who started it while they may still run there, and the team's owners and
        admins (who tidy up after anyone). Viewers delete nothing."""
        if self.team_id is None:
            return user.pk == self.owner_id
        membership = Membership.objects.filter(team_id=self.team_id, user=user).first()
        if membership is None:
            return False
        return membership.can_manage() or (user.pk == self.owner_id and membership.can_run())


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    team = models.ForeignKey(
        "accounts.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="conversations",
    )
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200)
    # The wire format its requests go in (providers/formats.py); Chat Completions by default.
    wire_format = models.CharField(max_length=20, choices=FORMAT_CHOICES, default=CHAT)
    system_prompt = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    # Set for a compare column, a sweep cell or an experiment item (RunGroup); its place in it.
    group = models.ForeignKey(
        RunGroup,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="conversations",
    )
    position = models.PositiveIntegerField(default=0)
    # The end of the branch the transcript shows and the next send continues; None (or a
    # message since deleted): the newest message's branch. Set by every turn and by ‹ ›.
    active_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated", "-id"]

    def __str__(self) -> str:
        return self.display_title

    @property
    def display_title(self) -> str:
        return self.title or "New conversation"

    def can_run(self, user) -> bool:
        """Sending, stopping and changing: a personal conversation's owner; in a team
        conversation, a member who is not a viewer (the role decides, not who created it)."""
        if self.team_id is None:
            return user.pk == self.owner_id
        membership = Membership.objects.filter(team_id=self.team_id, user=user).first()
        return bool(membership and membership.can_run())

    def move_to(self, team, user) -> None:
        """Move a personal conversation into a team. Only its owner, and only into a team
        where they may run: the move hands the conversation (and its images) to the team."""
        from playground.accounts.models import TeamError

        if self.team_id is not None:
            raise TeamError("This conversation already belongs to a team.")
        if self.owner_id != user.pk:
            raise TeamError("Only the conversation's owner can move it.")
        membership = team.membership_of(user)
        if membership is None or not membership.can_run():
            raise TeamError(f"You cannot start conversations in {team.name}.")
        self.team = team
        self.save(update_fields=["team", "updated"])
        # Replies carry their space, so usage and budgets need no join: they move along. Not
        # imported ones (no created_by): they spent nothing here, in either space.
        self.messages.exclude(role=Message.Role.ASSISTANT, created_by=None).update(team=team)

    def title_from(self, text: str) -> None:
        if not self.title:
            first_line = " ".join(text.split())
            self.title = first_line[:60] + ("…" if len(first_line) > 60 else "")


# What the sweep writes under a reply it marks interrupted, by what it knows of the cause.
# (A shutdown saves its replies itself, with runs.RESTARTED.)
PROCESS_GONE = (
    "The server process writing this reply stopped before it finished. "
    "The text saved until then is kept."
)
NO_PROGRESS = (
    "This reply stopped making progress (its server process stopped or lost the database) "
    "and was marked interrupted. The text saved until then is kept."
)


class MessageQuerySet(models.QuerySet):
    def stale(self) -> MessageQuerySet:
        """Streaming messages whose run stopped checkpointing: its process died or hangs."""
        return self.filter(
            status=Message.Status.STREAMING, checkpoint_at__lt=Message.stale_cutoff()
        )

    def mark_stale_interrupted(self) -> int:
        """Mark interrupted the replies whose runs are gone: known gone when their liveness
        key expired (Redis mode, after ALIVE_TTL), presumed gone when they saved nothing for
        STALE_AFTER. Each gets the message that is true for how it was found."""
        run = settings.PLAYGROUND_RUN
        now = timezone.now()
        quiet = self.filter(
            status=Message.Status.STREAMING, checkpoint_at__lt=Message.suspect_cutoff(now)
        )
        # Called on every page view and send: one read, so the usual case (nothing stale)
        # never takes SQLite's write lock.
        found = list(quiet.values_list("pk", "checkpoint_at")[:200])
        if not found:
            return 0
        stale_cutoff = now - timedelta(seconds=run["STALE_AFTER"])
        presumed = [pk for pk, at in found if at < stale_cutoff]
        gone = liveness.gone([pk for pk, at in found if at >= stale_cutoff])
        marked = 0
        for ids, error in ((gone, PROCESS_GONE), (presumed, NO_PROGRESS)):
            if ids:
                # Still streaming: a run that saved meanwhile keeps its own status.
                marked += Message.objects.filter(
                    pk__in=ids, status=Message.Status.STREAMING
                ).update(status=Message.Status.INTERRUPTED, error=error)
        return marked

    async def amark_stale_interrupted(self) -> int:
        return await sync_to_async(self.mark_stale_interrupted)()


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # Replies and edits form a tree, so regenerating keeps the old branch.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    content_parts = models.JSONField(default=list, blank=True)
    attachments: models.ManyToManyField[Attachment, Any] = models.ManyToManyField(
        "Attachment", blank=True, related_name="messages"
    )
    reasoning = models.TextField(blank=True)
    # Messages format: a {"chars": n, "signature": s} per thinking block, in order; block i is
    # the next n characters of `reasoning`. Sent back with a turn that called tools, as the
    # Messages API requires (a thinking block, with its signature, before the tool_use).
    thinking_signatures = models.JSONField(default=list, blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    tool_call_id = models.CharField(max_length=200, blank=True)
    logprobs = models.JSONField(null=True, blank=True)
    reasoning_ms = models.FloatField(null=True, blank=True)
    # For structured output: {"valid": bool, "path": "$.a[0]", "message": "..."}.
    schema_check = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    finish_reason = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    # Warnings shown under a reply that still finished: lines skipped, the size cap reached.
    notes = models.JSONField(default=list, blank=True)
    # The provider's id for the reply (x-request-id, else the chunks' id): for its support.
    response_id = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True)
    # request_body is always saved in Chat Completions shape; this is the format it was sent
    # in, so View code and Re-run use the same one.
    wire_format = models.CharField(max_length=20, choices=FORMAT_CHOICES, default=CHAT)
    request_body = models.JSONField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    cost = models.DecimalField(max_digits=10, decimal_places=6, null=True, blank=True)
    # From `usage`, as columns: the Usage page and budgets sum them in SQL.
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    # The conversation's space (None: personal), copied onto each reply so usage and budget
    # aggregates read one indexed table, without a join. None on an imported reply, in any
    # space: it was paid for where it ran, so no Usage page or budget here counts it
    # (review/imports.py).
    team = models.ForeignKey(
        "accounts.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,  # the (team, created) index below serves lookups by team
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Which key paid for this reply, so usage can be attributed: the key's id (kept when the
    # key is deleted, hence no foreign key), whose it was and its last four. Never the key.
    key_id = models.PositiveBigIntegerField(null=True, blank=True)
    key_owner = models.CharField(max_length=4, blank=True)  # "team", "user" or "" (none)
    key_last_four = models.CharField(max_length=4, blank=True)
    # The channel the run listens on for stop and snapshot requests, from any process.
    run_channel = models.CharField(max_length=200, blank=True)
    checkpoint_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = MessageQuerySet.as_manager()
    # Not a column: "‹ 2 / 3 ›" among its siblings, set where a transcript is drawn.
    branch_nav: dict[str, Any] | None = None

    class Meta:
        ordering = ["created", "id"]
        indexes = [
            models.Index(fields=["status", "checkpoint_at"]),
            # Usage and budgets: a space's replies in a date range. Covering (every column
            # the Usage page sums is in it), so the aggregate never reads the rows, whose
            # text and saved request make them large; updated once per reply, at its end.
            models.Index(
                fields=[
                    "team",
                    "created",
                    "role",
                    "model",
                    "created_by",
                    "input_tokens",
                    "output_tokens",
                    "cost",
                    "ttft_ms",
                ],
                name="message_team_usage",
            ),  # fmt: skip
            # One person's replies in a date range: personal usage, personal budgets.
            models.Index(fields=["created_by", "created"], name="message_user_created"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"

    @staticmethod
    def suspect_cutoff(now: datetime | None = None) -> datetime:
        """A streaming reply not checkpointed since then may have lost its run: ask the
        liveness keys (Redis mode, after ALIVE_TTL) or, without them, presume it (STALE_AFTER)."""
        run = settings.PLAYGROUND_RUN
        quiet_for = run["ALIVE_TTL"] if liveness.enabled() else run["STALE_AFTER"]
        return (now or timezone.now()) - timedelta(seconds=min(quiet_for, run["STALE_AFTER"]))

    @staticmethod
    def stale_cutoff() -> datetime:
        """A streaming reply not checkpointed since then has lost its run."""
        return timezone.now() - timedelta(seconds=settings.PLAYGROUND_RUN["STALE_AFTER"])

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING

    @property
    def awaits_tool_results(self) -> bool:
        return (
            self.role == self.Role.ASSISTANT
            and self.status == self.Status.COMPLETE
            and bool(self.tool_calls)
        )

    def token_view(self) -> list[dict]:
        """Each generated token with its probability and alternatives, for shading."""
        tokens = []
        for entry in self.logprobs or []:
            if not isinstance(entry, dict):
                continue
            logprob = _logprob(entry.get("logprob"))
            probability = math.exp(logprob) if logprob is not None else 0.0
            # Saved as the upstream sent them: anything but a list has no alternatives.
            tops = entry.get("top_logprobs")
            alternatives = [
                {"token": alt.get("token", ""), "percent": _percent(alt.get("logprob"))}
                for alt in (tops if isinstance(tops, list) else [])
                if isinstance(alt, dict) and alt.get("token") != entry.get("token")
            ]
            tokens.append(
                {
                    "token": entry.get("token", ""),
                    "percent": _percent(logprob),
                    "bucket": min(9, int(probability * 10)),
                    "alternatives": alternatives,
                }
            )
        return tokens


def _logprob(value: Any) -> float | None:
    """A usable log-probability, or None. The upstream's numbers are not trusted: text or NaN
    would break int(), and anything above 709 overflows math.exp; a probability is at most 1,
    so a positive logprob is clamped to 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    if math.isnan(value):
        return None
    return min(value, 0.0)


def _percent(logprob: Any) -> str:
    logprob = _logprob(logprob)
    if logprob is None:
        return "?"
    return f"{math.exp(logprob) * 100:.1f}"


class PresetQuerySet(models.QuerySet):
    def visible_to(self, user) -> PresetQuerySet:
        """Own personal presets plus those of the user's teams. Start every lookup here."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(
            Q(owner=user, team__isnull=True) | Q(team__memberships__user=user)
        ).distinct()

    def in_space(self, team_id: int | None) -> PresetQuerySet:
        if team_id is None:
            return self.filter(team__isnull=True)
        return self.filter(team_id=team_id)


class Preset(models.Model):
    """A named model + parameters + system prompt that can be loaded again; it belongs to a
    space, like conversations: its owner's personal space, or a team."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="presets"
    )
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="presets"
    )
    name = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    system_prompt = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = PresetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"], condition=Q(team__isnull=True), name="preset_name"
            ),
            models.UniqueConstraint(
                fields=["team", "name"], condition=Q(team__isnull=False), name="team_preset_name"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def can_change(self, user) -> bool:
        """Rename or delete: a personal preset's owner; in a team, anyone who may run."""
        if self.team_id is None:
            return user.pk == self.owner_id
        membership = Membership.objects.filter(team_id=self.team_id, user=user).first()
        return bool(membership and membership.can_run())


class LastSettings(models.Model):
    """The settings a user last used, so a new conversation starts from them."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="last_settings"
    )
    model = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    system_prompt = models.TextField(blank=True)
    wire_format = models.CharField(max_length=20, choices=FORMAT_CHOICES, default=CHAT)
    updated = models.DateTimeField(auto_now=True)

    @staticmethod
    def _wanted(conversation: Conversation) -> dict[str, Any]:
        return {
            "model": conversation.model,
            "params": conversation.params,
            "system_prompt": conversation.system_prompt,
            "wire_format": conversation.wire_format,
        }

    @classmethod
    def remember(cls, user, conversation: Conversation) -> None:
        wanted = cls._wanted(conversation)
        saved = cls.objects.filter(user=user).values(*wanted).first()
        if saved != wanted:  # one read on every send; a write only when they changed
            cls.objects.update_or_create(user=user, defaults=wanted)

    @classmethod
    def remember_now(cls, user, conversation: Conversation) -> None:
        """remember() inside a transaction that writes anyway: one UPDATE instead of a read
        and, when they changed, a write."""
        wanted = cls._wanted(conversation)
        if not plainsql.update(cls, {"user_id": user.pk}, {**wanted, "updated": timezone.now()}):
            cls.objects.create(user=user, **wanted)


class AttachmentQuerySet(models.QuerySet):
    def visible_to(self, user) -> AttachmentQuerySet:
        """Your own uploads, and images in conversations you can see."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        seen = Conversation.objects.visible_to(user)
        return self.filter(Q(owner=user) | Q(messages__conversation__in=seen)).distinct()


class Attachment(models.Model):
    """An image under the media root, named by its content hash."""

    objects = AttachmentQuerySet.as_manager()

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    file = models.FileField(upload_to="attachments/")
    sha256 = models.CharField(max_length=64, db_index=True)
    content_type = models.CharField(max_length=50)
    size = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)
