"""Create the benchmark's user, API key, session and conversations; print them as JSON.

Run in the server's environment (same database and secrets):
    python -m bench.seed 200
"""

from __future__ import annotations

import json
import os
import sys

API_KEY = "sk-bench-not-a-real-key-0000"  # the fake upstream accepts any key


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from playground.accounts.models import ApiKey
    from playground.chat.models import Conversation

    user, _ = get_user_model().objects.get_or_create(username="bench")
    user.set_password("bench benchmark password")
    user.save()
    ApiKey.store(provider="empiriolabs", plaintext=API_KEY, user=user)
    conversations = Conversation.objects.bulk_create(
        [Conversation(owner=user, model="empiriolabs:gemma-4-e4b") for _ in range(count)]
    )
    client = Client()
    client.force_login(user)
    print(
        json.dumps(
            {
                "user_id": user.pk,
                "cookie": client.cookies["sessionid"].value,
                "conversations": [c.pk for c in conversations],
            }
        )
    )


if __name__ == "__main__":
    main()
