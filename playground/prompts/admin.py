from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from playground.prompts.models import AccessToken, Prompt

# Everything about a token but its hash, and none of it editable: revoke it here if need be.
TOKEN_FIELDS = ("name", "user", "team", "hint", "scope", "created", "last_used", "revoked")


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin[Prompt]):
    list_display = ("name", "owner", "team", "updated")


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin[AccessToken]):
    list_display = TOKEN_FIELDS
    fields = TOKEN_FIELDS
    readonly_fields = tuple(f for f in TOKEN_FIELDS if f != "revoked")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # made on the tokens page, where the plaintext is shown once
