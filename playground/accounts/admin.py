from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from playground.accounts.models import ApiKey, Budget, Membership, Team


class MembershipInline(admin.TabularInline[Membership, Team]):
    model = Membership
    extra = 1


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin[Team]):
    inlines = [MembershipInline]


# Everything about a key but its secret, and none of it editable.
KEY_FIELDS = ("provider", "user", "team", "last_four", "created", "last_used")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    """Keys can be seen to exist and be deleted here; never read or edited."""

    list_display = fields = readonly_fields = KEY_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin[Budget]):
    """Site admins set personal-space defaults and per-user overrides here too (no team)."""

    list_display = (
        "team",
        "user",
        "each_member",
        "monthly_cost",
        "daily_messages",
        "updated",
        "updated_by",
    )
    readonly_fields = ("updated_by",)

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: bool) -> None:
        obj.updated_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)
