from __future__ import annotations

from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "playground.providers"
    label = "providers"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from playground.providers.catalog import forget_custom_models
        from playground.providers.models import CustomEndpoint, EndpointModel

        for sender in (CustomEndpoint, EndpointModel):
            post_save.connect(forget_custom_models, sender=sender)
            post_delete.connect(forget_custom_models, sender=sender)
