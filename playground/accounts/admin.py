from __future__ import annotations

from django.contrib import admin

from playground.accounts.models import ApiKey, Membership, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    inlines = [MembershipInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys can be seen to exist and be deleted here; never read or edited."""

    list_display = ["provider", "user", "team", "last_four", "created", "last_used"]
    fields = ["provider", "user", "team", "last_four", "created", "last_used"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
