from __future__ import annotations

from django.contrib import admin

from playground.experiments.models import EndpointGate


@admin.register(EndpointGate)
class EndpointGateAdmin(admin.ModelAdmin):
    """Per-endpoint concurrency of experiment items across all workers (0: the site's
    PLAYGROUND_EXPERIMENT_CONCURRENCY). A row appears once an experiment used the endpoint."""

    list_display = ["endpoint", "concurrency"]
    list_editable = ["concurrency"]
