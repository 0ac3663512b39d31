from __future__ import annotations

from django.contrib import admin
from django.db import models

from playground.providers.models import CustomEndpoint, EndpointModel


class EndpointModelInline(admin.TabularInline[EndpointModel, CustomEndpoint]):
    model = EndpointModel
    extra = 0
    fields = ["model_id", "offered", "context_window", "max_output", "price_per_message"]


@admin.register(CustomEndpoint)
class CustomEndpointAdmin(admin.ModelAdmin[CustomEndpoint]):
    list_display = ["name", "slug", "base_url", "requires_key"]
    # The servers teams run on their own network mostly speak plain HTTP.
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}
    inlines = [EndpointModelInline]
