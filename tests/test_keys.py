"""API keys: stored encrypted, shown as four characters, replaced, deleted, rotated."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from playground.accounts import crypto
from playground.accounts.models import ApiKey
from tests.conftest import SECRET_KEY_VALUE

pytestmark = pytest.mark.django_db


def test_a_saved_key_is_encrypted_and_only_its_last_four_are_shown(client, user):
    client.force_login(user)
    response = client.post("/keys/", {"provider": "empiriolabs", "key": SECRET_KEY_VALUE})
    assert response.status_code == 302
    key = ApiKey.objects.get(user=user, provider="empiriolabs")
    assert SECRET_KEY_VALUE not in key.ciphertext
    assert key.reveal() == SECRET_KEY_VALUE
    page = client.get("/keys/").content.decode()
    assert "…" + SECRET_KEY_VALUE[-4:] in page
    assert SECRET_KEY_VALUE not in page and SECRET_KEY_VALUE[:-4] not in page


def test_a_key_is_replaced_not_duplicated(client, user, api_key):
    client.force_login(user)
    client.post("/keys/", {"provider": "empiriolabs", "key": "sk-replacement-0000WXYZ"})
    key = ApiKey.objects.get(user=user, provider="empiriolabs")
    assert key.reveal() == "sk-replacement-0000WXYZ" and key.last_four == "WXYZ"


def test_a_key_is_deleted(client, user, api_key):
    client.force_login(user)
    assert client.post("/keys/empiriolabs/delete/").status_code == 302
    assert not ApiKey.objects.exists()


def test_a_user_cannot_delete_someone_elses_key(client, other_user, api_key):
    client.force_login(other_user)
    client.post("/keys/empiriolabs/delete/")
    assert ApiKey.objects.filter(pk=api_key.pk).exists()


def test_a_key_for_an_unknown_provider_or_a_junk_key_is_refused(client, user):
    client.force_login(user)
    client.post("/keys/", {"provider": "nope", "key": "sk-valid-looking-key"})
    response = client.post("/keys/", {"provider": "empiriolabs", "key": "short"})
    assert b"does not look like an API key" in response.content
    assert not ApiKey.objects.exists()


def test_rotate_keys_reencrypts_under_the_newest_master_key(settings, user, api_key):
    old = list(settings.PLAYGROUND_ENCRYPTION_KEYS)
    new = crypto.generate_key()
    settings.PLAYGROUND_ENCRYPTION_KEYS = [new, *old]
    out = io.StringIO()
    call_command("rotate_keys", stdout=out)
    assert "Re-encrypted 1 key" in out.getvalue()
    api_key.refresh_from_db()
    settings.PLAYGROUND_ENCRYPTION_KEYS = [new]  # the old master key is retired
    assert api_key.reveal() == SECRET_KEY_VALUE


def test_rotate_keys_reports_keys_it_cannot_decrypt(settings, user, api_key):
    settings.PLAYGROUND_ENCRYPTION_KEYS = [crypto.generate_key()]
    with pytest.raises(CommandError, match="could not be decrypted"):
        call_command("rotate_keys", stdout=io.StringIO())


def test_a_tampered_key_gives_a_clear_error_not_an_empty_key(user, api_key):
    token = api_key.ciphertext
    middle = len(token) // 2
    api_key.ciphertext = (
        token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    )
    api_key.save()
    with pytest.raises(crypto.KeyDecryptionError, match="cannot be decrypted"):
        api_key.reveal()


@pytest.mark.django_db(transaction=True)
async def test_a_key_under_an_unknown_master_key_is_a_clear_error_in_the_page(
    upstream, settings, user, api_key, conversation, connect
):
    settings.PLAYGROUND_ENCRYPTION_KEYS = [crypto.generate_key()]
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi")
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "cannot be decrypted" in frame and "Save the key again" in frame
    assert upstream.requests == []


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["sk-tëst-0123456789", "sk-test\x1b0123456789", "sk-test\t0123"])
def test_a_key_with_a_non_ascii_or_control_character_is_refused(client, user, key):
    client.force_login(user)
    response = client.post("/keys/", {"provider": "empiriolabs", "key": key})
    assert b"does not look like an API key" in response.content
    assert not ApiKey.objects.exists()
