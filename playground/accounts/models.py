from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from playground.accounts import crypto

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


class TeamError(Exception):
    """A team change that was refused; the message says why, for the person who asked."""


class TeamQuerySet(models.QuerySet["Team"]):
    def visible_to(self, user: User | AnonymousUser) -> TeamQuerySet:
        """The teams `user` belongs to, in any role. Start every team lookup here."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(memberships__user=user)


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    members: models.ManyToManyField[User, Membership] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )

    objects = TeamQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def create(cls, *, name: str, owner: User) -> Team:
        """A new team with `owner` as its first (owner) member."""
        name = " ".join(name.split())
        if not name:
            raise TeamError("Give the team a name.")
        if len(name) > 100:
            raise TeamError("A team name has at most 100 characters.")
        with transaction.atomic():
            if cls.objects.filter(name__iexact=name).exists():
                raise TeamError(f"There is already a team called {name}.")
            team = cls.objects.create(name=name)
            Membership.objects.create(team=team, user=owner, role=Membership.Role.OWNER)
        return team

    def membership_of(self, user: User | AnonymousUser) -> Membership | None:
        if not user.is_authenticated:
            return None
        return self.memberships.filter(user=user).first()

    def add_member(self, user: User, role: str) -> Membership:
        """Add `user` in `role`. Saved through the model, so membership signals fire."""
        if not user.is_active:
            raise TeamError(f"{user.get_username()}'s account is deactivated.")
        with transaction.atomic():
            if self.memberships.filter(user=user).exists():
                raise TeamError(f"{user.get_username()} is already a member of {self.name}.")
            return Membership.objects.create(team=self, user=user, role=role)

    def _owners_besides(self, membership: Membership) -> int:
        """The team's other owners who can still sign in: a deactivated owner cannot act for
        the team, so counting one would let it be left with no owner at all."""
        # Locked, so two owners demoting each other at once cannot both succeed (the
        # memberships only: `of` keeps the joined user rows unlocked).
        owners = (
            self.memberships.select_for_update(of=("self",))
            .filter(role=Membership.Role.OWNER, user__is_active=True)
            .exclude(pk=membership.pk)
        )
        return len(owners)


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"
        VIEWER = "viewer"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(auto_now_add=True, null=True)

    class Meta:
        # No default ordering: ordering by username would join the user table into every
        # membership check, and those run on each socket message.
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    @property
    def rank(self) -> int:
        return ROLE_RANK[self.role]

    @property
    def is_owner(self) -> bool:
        return self.role == self.Role.OWNER

    def can_run(self) -> bool:
        """Send, stop, re-run, change settings, save presets: every role but viewer."""
        return self.role != self.Role.VIEWER

    def can_manage(self) -> bool:
        """Add and remove members, invite, change roles, save the team's keys."""
        return self.rank >= ROLE_RANK[self.Role.ADMIN]

    def may_assign(self, role: str) -> bool:
        """Only an owner makes owners; an admin hands out admin and below."""
        return self.can_manage() and (role != self.Role.OWNER or self.is_owner)

    def may_change(self, other: Membership) -> bool:
        """An admin changes admins, members and viewers; only an owner touches an owner."""
        return self.can_manage() and (not other.is_owner or self.is_owner)

    def set_role(self, role: str, *, by: Membership) -> None:
        if role not in self.Role.values:
            raise TeamError("Pick one of the roles: owner, admin, member, viewer.")
        if not (by.may_change(self) and by.may_assign(role)):
            raise TeamError(f"As {by.get_role_display().lower()} you cannot do that.")
        with transaction.atomic():
            if self.is_owner and role != self.Role.OWNER and not self.team._owners_besides(self):
                raise TeamError(
                    "The team's last owner cannot be demoted: make another owner first."
                )
            self.role = role
            self.save(update_fields=["role"])  # save(), not update(): the signals must fire

    def remove(self, *, by: Membership) -> None:
        """Remove this member (or, with by=self, leave). Deleted through the model so the
        access signals fire and the member's open sockets are cut off."""
        leaving = by.pk == self.pk
        if not leaving and not by.may_change(self):
            raise TeamError(f"As {by.get_role_display().lower()} you cannot remove {self.user}.")
        with transaction.atomic():
            if self.is_owner and not self.team._owners_besides(self):
                raise TeamError(
                    "The team's last owner cannot leave or be removed: make another owner first."
                )
            self.delete()


ROLE_RANK: dict[str, int] = {
    Membership.Role.VIEWER: 0,
    Membership.Role.MEMBER: 1,
    Membership.Role.ADMIN: 2,
    Membership.Role.OWNER: 3,
}


def token_hash(token: str) -> str:
    """Invitation tokens are stored as their SHA-256: a copy of the database invites nobody.
    A plain hash suffices, as the token is 256 random bits, not a password."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class InvitationQuerySet(models.QuerySet["Invitation"]):
    def pending(self) -> InvitationQuerySet:
        return self.filter(
            used_at__isnull=True, revoked_at__isnull=True, expires__gt=timezone.now()
        )


class Invitation(models.Model):
    """A one-time link that makes whoever opens it (logged in) a member in `role`."""

    LIFETIME = timedelta(days=7)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    role = models.CharField(max_length=10, choices=Membership.Role.choices)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"invitation to {self.team} as {self.role}"

    @classmethod
    def create(cls, team: Team, role: str, *, by: Membership) -> tuple[Invitation, str]:
        """The invitation and its token. The token is returned once and never stored."""
        if role not in Membership.Role.values:
            raise TeamError("Pick one of the roles: owner, admin, member, viewer.")
        if not by.may_assign(role):
            raise TeamError(f"As {by.get_role_display().lower()} you cannot invite an {role}.")
        token = secrets.token_urlsafe(32)  # 256 bits
        invitation = cls.objects.create(
            team=team,
            role=role,
            token_hash=token_hash(token),
            created_by=by.user,
            expires=timezone.now() + cls.LIFETIME,
        )
        return invitation, token

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.used_at:
            return "used"
        if self.expires <= timezone.now():
            return "expired"
        return "pending"

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])

    @classmethod
    def find(cls, token: str) -> Invitation | None:
        if not token or len(token) > 100:
            return None
        return cls.objects.select_related("team").filter(token_hash=token_hash(token)).first()

    def accept(self, user: User) -> Membership:
        """Make `user` a member; the link works once. Refusals say why."""
        with transaction.atomic():
            state = self.state
            if state != "pending":
                raise TeamError(f"This invitation is {state}: ask for a new one.")
            if self.team.memberships.filter(user=user).exists():
                raise TeamError(f"You are already a member of {self.team.name}.")
            # A link carries its maker's right to invite: a maker since removed (or demoted
            # below the role it gives) must not come back, or let anyone in, through it.
            maker = None
            if self.created_by_id is not None:
                maker = self.team.memberships.filter(user_id=self.created_by_id).first()
            if maker is None or not maker.may_assign(self.role):
                raise TeamError(
                    "Whoever made this invitation can no longer invite: ask for a new one."
                )
            # Claimed with a conditional update on the row as it is now, not as read above:
            # two people opening the link at once cannot both join, and a link revoked or
            # expired meanwhile lets nobody in.
            claimed = (
                Invitation.objects.pending()
                .filter(pk=self.pk)
                .update(used_at=timezone.now(), used_by=user)
            )
            if not claimed:
                now = Invitation.objects.filter(pk=self.pk).first()  # gone with its team?
                state = now.state if now is not None else "pending"
                state = state if state != "pending" else "no longer valid"
                raise TeamError(f"This invitation is {state}: ask for a new one.")
            return self.team.add_member(user, self.role)


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_user(self, user: User | AnonymousUser) -> ApiKeyQuerySet:
        if not user.is_authenticated:
            return self.none()  # an anonymous user owns no keys
        return self.filter(user=user)


class ApiKey(models.Model):
    """A provider API key, encrypted at rest; only the last four characters are ever shown."""

    provider = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    ciphertext = models.TextField(editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    last_used = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, team__isnull=True)
                | Q(user__isnull=True, team__isnull=False),
                name="apikey_one_owner",
            ),
            models.UniqueConstraint(
                fields=["provider", "user"], condition=Q(user__isnull=False), name="user_key"
            ),
            models.UniqueConstraint(
                fields=["provider", "team"], condition=Q(team__isnull=False), name="team_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} key …{self.last_four}"

    __repr__ = __str__

    @classmethod
    @sensitive_variables("plaintext")
    def store(
        cls,
        *,
        provider: str,
        plaintext: str,
        user: User | AnonymousUser | None = None,
        team: Team | None = None,
    ) -> ApiKey:
        """Save (or replace) the key for this provider and owner, encrypted."""
        if user is not None and not user.is_authenticated:
            raise ValueError("an anonymous user cannot own an API key")
        plaintext = plaintext.strip()
        key, _ = cls.objects.update_or_create(
            provider=provider,
            user=user,
            team=team,
            defaults={"ciphertext": crypto.encrypt(plaintext), "last_four": plaintext[-4:]},
        )
        return key

    def reveal(self) -> str:
        """The plaintext, for the outbound request only. Raises crypto.KeyDecryptionError."""
        return crypto.decrypt(self.ciphertext)

    def rotate(self) -> None:
        self.ciphertext = crypto.rotate(self.ciphertext)
        self.save(update_fields=["ciphertext"])


class Budget(models.Model):
    """A monthly cost budget and/or a daily message cap.

    team + no user: the team's total; team + user: that member's share in the team; team +
    each_member: the share of every member without a row of their own; no team + no user:
    the site's default for every personal space; no team + user: that user's personal space
    (overrides the default). Empty limits mean no limit."""

    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="budgets",
    )
    monthly_cost = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="USD per month"
    )
    daily_messages = models.PositiveIntegerField(null=True, blank=True)
    each_member = models.BooleanField(default=False)
    updated = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            # One row per scope; Coalesce makes the NULLs (no team, no user) compare equal.
            models.UniqueConstraint(
                Coalesce("team", Value(0)),
                Coalesce("user", Value(0)),
                "each_member",
                name="one_budget_per_scope",
            ),
            models.CheckConstraint(
                condition=Q(each_member=False) | Q(team__isnull=False, user__isnull=True),
                name="each_member_budget_is_a_teams",
            ),
        ]

    def __str__(self) -> str:
        where = self.team.name if self.team_id and self.team else "personal spaces"
        whom = "each member" if self.each_member else self.user or "everyone"
        return f"budget for {whom} in {where}"

    @classmethod
    def set(
        cls,
        *,
        team: Team | None,
        user: User | None,
        monthly_cost: Decimal | None,
        daily_messages: int | None,
        by: User,
        each_member: bool = False,
    ) -> Budget | None:
        """Save the limits for a scope; with neither limit, the scope has no budget."""
        rows = cls.objects.filter(team=team, user=user, each_member=each_member)
        if monthly_cost is None and daily_messages is None:
            rows.delete()
            return None
        budget, _ = rows.update_or_create(
            team=team,
            user=user,
            each_member=each_member,
            defaults={
                "monthly_cost": monthly_cost,
                "daily_messages": daily_messages,
                "updated_by": by,
            },
        )
        return budget
