"""Prompts: named, versioned templates in a space, labels that point at versions, the record of
which version and values a reply came from, and personal access tokens for the read API.

A version is immutable: `PromptVersion.save()` refuses an update, and "saving a change" is
`Prompt.add_version()`, which numbers the new version after the newest. A label is the only
thing that moves, and every move is kept (`LabelMove`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Max, Q
from django.utils import timezone

from playground.accounts.models import Membership

NAME_MAX = 100
LABEL_MAX = 50


class PromptError(Exception):
    """A change to a prompt that was refused; the message says why, for the person who asked."""


class PromptQuerySet(models.QuerySet["Prompt"]):
    def visible_to(self, user, *, deleted: bool = False) -> PromptQuerySet:
        """Own personal prompts plus those of the user's teams (any role). Start every lookup
        here, as for conversations. A deleted (archived) prompt is left out unless
        `deleted=True`: only History asks for those, to filter replies by their versions."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        reachable = self.filter(Q(owner=user, team__isnull=True) | Q(team__memberships__user=user))
        if not deleted:
            reachable = reachable.filter(deleted__isnull=True)
        return reachable.distinct()

    def in_space(self, team_id: int | None) -> PromptQuerySet:
        """One space's prompts: a team's, or (None) the personal ones."""
        if team_id is None:
            return self.filter(team__isnull=True)
        return self.filter(team_id=team_id)


class Prompt(models.Model):
    """A named prompt in a space: its owner's personal space, or a team. The name is what the
    read API asks for (`/api/prompts/<name>`), so it is unique within its space."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="prompts"
    )
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="prompts"
    )
    name = models.CharField(max_length=NAME_MAX)
    description = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    # Set when a prompt whose versions replies recorded is deleted: see delete_by().
    deleted = models.DateTimeField(null=True, blank=True)

    objects = PromptQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        # A deleted (archived) prompt gives its name up: a new prompt may take it.
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"],
                condition=Q(team__isnull=True, deleted__isnull=True),
                name="prompt_name",
            ),
            models.UniqueConstraint(
                fields=["team", "name"],
                condition=Q(team__isnull=False, deleted__isnull=True),
                name="team_prompt_name",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def _membership(self, user) -> Membership | None:
        if self.team_id is None or not user.is_authenticated:
            return None
        return Membership.objects.filter(team_id=self.team_id, user=user).first()

    def can_edit(self, user) -> bool:
        """Save versions, make and move labels: a personal prompt's owner; in a team, every
        role but viewer (the role decides, not who created it)."""
        if self.team_id is None:
            return user.pk == self.owner_id
        membership = self._membership(user)
        return bool(membership and membership.can_run())

    def can_admin(self, user) -> bool:
        """Protect labels and move protected ones: a personal prompt's owner; in a team, its
        owners and admins."""
        if self.team_id is None:
            return user.pk == self.owner_id
        membership = self._membership(user)
        return bool(membership and membership.can_manage())

    def has_protected_label(self) -> bool:
        return self.labels.filter(protected=True).exists()

    def can_change_name(self, user) -> bool:
        """Rename or delete: as can_edit, but a prompt with a protected label only for the
        space's admins. The read API finds a prompt by name, so renaming or deleting it moves
        what `?label=production` answers just as moving that label would."""
        if not self.can_edit(user):
            return False
        return self.can_admin(user) or not self.has_protected_label()

    def _check_name_change(self, user, doing: str) -> None:
        if not self.can_edit(user):
            raise PromptError(f"Viewers can read the team's prompts but not {doing} them.")
        if not self.can_change_name(user):
            raise PromptError(
                f"{self.name} has a protected label: only the team's owners and admins {doing} it."
            )

    def rename(self, name: str, user) -> None:
        """Give the prompt a new name, unique in its space. The read API answers to the new
        name only: apps fetching the old one get a 404 and must be told."""
        name = clean_prompt_name(name)
        self._check_name_change(user, "rename")
        if name == self.name:
            return
        clash = Prompt.objects.in_space(self.team_id).filter(name=name, deleted__isnull=True)
        if self.team_id is None:
            clash = clash.filter(owner_id=self.owner_id)
        if clash.exclude(pk=self.pk).exists():
            raise PromptError(f"There is already a prompt named {name} in this space.")
        try:
            with transaction.atomic():
                Prompt.objects.filter(pk=self.pk).update(name=name, updated=timezone.now())
        except IntegrityError:  # taken between the check and the write
            raise PromptError(f"There is already a prompt named {name} in this space.") from None
        self.name = name

    def replies_count(self) -> int:
        return PromptRun.objects.filter(version__prompt=self).count()

    def delete_by(self, user) -> bool:
        """Delete the prompt for `user` (PromptError if they may not). True if it was
        archived rather than removed.

        Replies record the version they came from (PromptRun), and History filters by it.
        So a prompt that replies came from is archived: it leaves the library, the read API,
        the pickers and every playground it was opened in (its PromptSessions go, so those
        conversations are plain chats with the template text), and gives its name up; its
        versions stay, so the replies keep their record and History still filters by them
        (listed as deleted); an experiment variant that pinned one of them still runs it.
        A prompt no reply came from is removed with its versions, labels and their history
        (an experiment variant that pinned one then fails its items, saying so: see
        experiments/worker.py). Either way the replies' text is untouched."""
        self._check_name_change(user, "delete")
        with transaction.atomic():
            if not PromptRun.objects.filter(version__prompt=self).exists():
                self.delete()
                return False
            PromptSession.objects.filter(version__prompt=self).delete()
            VariableValues.objects.filter(prompt=self).delete()
            self.deleted = timezone.now()
            self.save(update_fields=["deleted", "updated"])
        return True

    def latest_version(self) -> PromptVersion | None:
        return self.versions.order_by("-number").first()

    def add_version(self, user, **fields: Any) -> PromptVersion:
        """A new version numbered after the newest: the only way a prompt changes. The row
        lock on the prompt makes two saves at once get two numbers, not a clash."""
        with transaction.atomic():
            Prompt.objects.select_for_update().filter(pk=self.pk).first()
            newest = self.versions.aggregate(n=Max("number"))["n"] or 0
            version = PromptVersion(prompt=self, number=newest + 1, created_by=user, **fields)
            version.full_clean(exclude=["prompt", "created_by"])
            version.save()
            Prompt.objects.filter(pk=self.pk).update(updated=timezone.now())
        return version

    def set_label(self, name: str, version: PromptVersion, user) -> PromptLabel:
        """Point the label `name` at `version` (making the label if it is new) and record the
        move. A protected label moves only for the space's admins."""
        name = clean_label_name(name)
        if version.prompt_id != self.pk:
            raise PromptError("That version belongs to another prompt.")
        if not self.can_edit(user):
            raise PromptError("Viewers can read the team's prompts but not move labels.")
        with transaction.atomic():
            label = self.labels.select_for_update().filter(name=name).first()
            if label is not None and label.protected and not self.can_admin(user):
                raise PromptError(
                    f"The label {name} is protected: only the team's owners and admins move it."
                )
            if label is None:
                label = PromptLabel.objects.create(
                    prompt=self, name=name, version=version, updated_by=user
                )
                LabelMove.objects.create(label=label, to_version=version, moved_by=user)
            elif label.version_id != version.pk:
                moved_from = label.version
                label.version, label.updated_by = version, user
                label.save(update_fields=["version", "updated_by", "updated"])
                LabelMove.objects.create(
                    label=label, from_version=moved_from, to_version=version, moved_by=user
                )
        return label

    def protect_label(self, label: PromptLabel, protected: bool, user) -> None:
        if label.prompt_id != self.pk:
            raise PromptError("That label belongs to another prompt.")
        if not self.can_admin(user):
            raise PromptError("Only the team's owners and admins protect labels.")
        if label.protected != protected:
            label.protected = protected
            label.save(update_fields=["protected", "updated"])


# fullmatch, never match with `$`: `$` also matches before a trailing newline ("a\n").
LABEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
PROMPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def clean_label_name(name: str) -> str:
    name = name.strip().lower()
    if not name or len(name) > LABEL_MAX or not LABEL_NAME.fullmatch(name):
        raise PromptError(
            f"A label is 1-{LABEL_MAX} lowercase letters, digits, '.', '_' or '-'"
            " (like production or staging)."
        )
    return name


def clean_prompt_name(name: str) -> str:
    """Names go in the read API's URL, so they are URL-safe: letters, digits, '.', '_', '-'."""
    name = name.strip()
    if not name or len(name) > NAME_MAX or not PROMPT_NAME.fullmatch(name):
        raise PromptError(
            f"A prompt name is 1-{NAME_MAX} letters, digits, '.', '_' or '-'"
            " (it goes in the read API's URL), like support-reply."
        )
    return name


class PromptVersion(models.Model):
    """One immutable version: templates with {{variables}} (see variables.py), the model or
    endpoint model (a catalog key, as on a conversation), the parameters as the playground
    stores them, the tools and the response format."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    system_prompt = models.TextField(blank=True)
    # [{"role": "user" | "assistant", "content": "template text"}, ...]; the last user one is
    # the message a playground send fills in.
    messages = models.JSONField(default=list, blank=True)
    model = models.CharField(max_length=200)
    wire_format = models.CharField(max_length=20, blank=True)
    params = models.JSONField(default=dict, blank=True)
    tools = models.JSONField(default=list, blank=True)
    response_format = models.JSONField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)  # what changed, like a commit message
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["prompt", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "number"], name="prompt_version_number")
        ]

    def __str__(self) -> str:
        return f"{self.prompt.name} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PromptError("A prompt version never changes: save a new version instead.")
        super().save(*args, **kwargs)

    def all_params(self) -> dict[str, Any]:
        """The parameters with tools and response format folded in, as the playground's
        parameter panel and the request body hold them."""
        merged = dict(self.params)
        if self.tools:
            merged["tools"] = self.tools
        if self.response_format:
            merged["response_format"] = self.response_format
        return merged


class PromptLabel(models.Model):
    """A name (production, staging, ...) that points at one version of its prompt."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=LABEL_MAX)
    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="labels")
    # Only the space's admins (a personal prompt: its owner) move a protected label.
    protected = models.BooleanField(default=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["prompt", "name"], name="prompt_label")]

    def __str__(self) -> str:
        return f"{self.prompt.name}@{self.name}"


class LabelMove(models.Model):
    """One move of a label: who pointed it from which version to which, and when."""

    label = models.ForeignKey(PromptLabel, on_delete=models.CASCADE, related_name="moves")
    from_version = models.ForeignKey(
        PromptVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    to_version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="+")
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    moved = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-moved", "-id"]


class PromptRun(models.Model):
    """Which prompt version and variable values a reply came from. Kept here, keyed to the
    reply, because chat must not import prompts (DESIGN.md arrows); History filters through
    the reverse lookup `Message.prompt_run`."""

    message = models.OneToOneField(
        "chat.Message",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="prompt_run",
    )
    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="runs")
    variables = models.JSONField(default=dict, blank=True)
    # The templates were changed in the playground before sending: the reply is not the
    # version's own, only derived from it.
    edited = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)


class PromptSession(models.Model):
    """A conversation opened from a prompt version ("Open in playground"): its page shows the
    Variables panel for that version."""

    conversation = models.OneToOneField(
        "chat.Conversation",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="prompt_session",
    )
    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="sessions")
    created = models.DateTimeField(auto_now_add=True)


class VariableValues(models.Model):
    """The values a user last filled in for a prompt's variables, to fill the panel again."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    values = models.JSONField(default=dict, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "prompt"], name="prompt_variable_values")
        ]


# -- personal access tokens -------------------------------------------------------------------

TOKEN_PREFIX = "pgp_"
TOKEN_BYTES = 32
SCOPE_PROMPTS_READ = "prompts:read"
SCOPES = {SCOPE_PROMPTS_READ: "Read prompts"}


def hash_token(token: str) -> str:
    """Tokens are stored as their SHA-256: 256 random bits need no slow password hash, and a
    copy of the database reads nothing."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class AccessTokenQuerySet(models.QuerySet["AccessToken"]):
    def live(self) -> AccessTokenQuerySet:
        return self.filter(revoked__isnull=True, user__is_active=True)


class AccessToken(models.Model):
    """A personal access token: made on the account page, shown once, stored hashed. It acts
    for its user in one space (personal, or one team the user still belongs to) and only for
    its scope: reading prompts."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens"
    )
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters after the prefix, so a list can tell tokens apart.
    hint = models.CharField(max_length=8, editable=False)
    scope = models.CharField(max_length=40, default=SCOPE_PROMPTS_READ)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    objects = AccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({TOKEN_PREFIX}{self.hint}…)"

    @classmethod
    def issue(cls, user, *, name: str, team=None) -> tuple[AccessToken, str]:
        """A new token and its plaintext, which is never stored and cannot be shown again."""
        secret = secrets.token_urlsafe(TOKEN_BYTES)
        plaintext = TOKEN_PREFIX + secret
        token = cls.objects.create(
            user=user,
            team=team,
            name=name,
            token_hash=hash_token(plaintext),
            hint=secret[:6],
        )
        return token, plaintext

    def revoke(self) -> None:
        if self.revoked is None:
            self.revoked = timezone.now()
            self.save(update_fields=["revoked"])
