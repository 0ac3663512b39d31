from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.apps import AppConfig

if TYPE_CHECKING:
    from playground.providers.models import CustomEndpoint


class AccountsConfig(AppConfig):
    name = "playground.accounts"
    label = "accounts"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from playground.providers.models import CustomEndpoint

        post_delete.connect(
            forget_endpoint_keys, sender=CustomEndpoint, dispatch_uid="forget_endpoint_keys"
        )


def forget_endpoint_keys(sender: type, instance: CustomEndpoint, **kwargs: Any) -> None:
    """A removed endpoint's keys (users' and teams') go with it: filed under its id, no one
    could see them any more, and a later endpoint given the same id would be sent them.

    A receiver, not the Remove view, so that every way of deleting is covered: with a receiver
    connected, a queryset delete (the Django admin's bulk action) sends post_delete for each
    row too. It runs in the delete's transaction."""
    from playground.accounts.models import ApiKey
    from playground.providers.specs import BUILTIN_PROVIDERS

    if instance.slug in BUILTIN_PROVIDERS:
        return  # never a custom endpoint's id (clean() refuses it): these keys are not its own
    ApiKey.objects.filter(provider=instance.slug).delete()
