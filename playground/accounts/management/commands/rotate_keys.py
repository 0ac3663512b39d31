from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from playground.accounts.crypto import KeyDecryptionError
from playground.accounts.models import ApiKey


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored API key under the first key of PLAYGROUND_ENCRYPTION_KEYS. "
        "Run it after prepending a new master key; then the old keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rotated, failed = 0, []
        with transaction.atomic():
            for key in ApiKey.objects.select_for_update().order_by("pk"):
                try:
                    key.rotate()
                except KeyDecryptionError:
                    failed.append(key)
                else:
                    rotated += 1
        self.stdout.write(f"Re-encrypted {rotated} key(s) under the newest master key.")
        if failed:
            names = ", ".join(f"#{k.pk} ({k.provider})" for k in failed)
            raise CommandError(
                f"{len(failed)} key(s) could not be decrypted with any configured master key "
                f"and were left as they were: {names}. Their owners must save them again."
            )
