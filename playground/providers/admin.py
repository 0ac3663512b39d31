from __future__ import annotations

from django.contrib import admin

from playground.providers.models import CustomEndpoint


@admin.register(CustomEndpoint)
class CustomEndpointAdmin(admin.ModelAdmin[CustomEndpoint]):
    list_display = ["name", "slug", "base_url", "requires_key"]
