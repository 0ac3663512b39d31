from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.views.decorators.debug import sensitive_variables

from playground.accounts import crypto

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    members: models.ManyToManyField[User, Membership] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )

    def __str__(self) -> str:
        return self.name


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

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership")]

    def can_run(self) -> bool:
        return self.role != self.Role.VIEWER


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
