"""The read API and personal access tokens: shown once, stored hashed, scoped, revocable."""

from __future__ import annotations

import hashlib
import html

import pytest

from playground.accounts.models import Membership, Team
from playground.prompts.models import AccessToken, Prompt

MODEL = "empiriolabs:gemma-4-e4b"
pytestmark = pytest.mark.django_db


@pytest.fixture
def prompt(user):
    prompt = Prompt.objects.create(owner=user, name="support")
    v1 = prompt.add_version(
        user,
        system_prompt="Hi {{name}}",
        messages=[{"role": "user", "content": "{{q}}"}],
        model=MODEL,
        params={"temperature": 0.2},
    )
    prompt.add_version(user, system_prompt="v2", model=MODEL, params={"temperature": 0.9})
    prompt.set_label("production", v1, user)
    return prompt


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_is_shown_once_and_stored_only_as_its_hash(client, user):
    client.force_login(user)
    page = client.post("/prompts/tokens/", {"name": "bot", "space": "personal"}).content.decode()

    token = AccessToken.objects.get()
    plaintext = page.split('id="new-token" value="', 1)[1].split('"', 1)[0]
    assert plaintext.startswith("pgp_") and len(plaintext) > 40
    assert token.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in str(AccessToken.objects.values().get())
    again = client.get("/prompts/tokens/").content.decode()
    assert plaintext not in again and f"pgp_{token.hint}…" in again


def test_the_api_returns_the_labelled_version(client, user, prompt):
    _, plaintext = AccessToken.issue(user, name="bot")
    response = client.get("/api/prompts/support?label=Production", headers=bearer(plaintext))

    assert response.status_code == 200
    data = response.json()
    assert (data["prompt"], data["version"], data["labels"]) == ("support", 1, ["production"])
    assert data["messages"] == [{"role": "user", "content": "{{q}}"}]
    assert data["system_prompt"] == "Hi {{name}}" and data["model"] == MODEL
    assert data["parameters"] == {"temperature": 0.2} and data["variables"] == ["name", "q"]
    assert AccessToken.objects.get().last_used is not None


def test_the_api_returns_a_numbered_or_the_newest_version(client, user, prompt):
    _, plaintext = AccessToken.issue(user, name="bot")
    assert client.get("/api/prompts/support?version=2", headers=bearer(plaintext)).json()[
        "parameters"
    ] == {"temperature": 0.9}
    assert client.get("/api/prompts/support", headers=bearer(plaintext)).json()["version"] == 2


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer pgp_wrong"}, {"Authorization": "Basic abc"}],
)
def test_without_a_valid_token_it_answers_401(client, prompt, headers):
    response = client.get("/api/prompts/support", headers=headers)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert "prompt" not in response.json()


def test_a_logged_in_session_alone_does_not_read_the_api(client, user, prompt):
    client.force_login(user)
    assert client.get("/api/prompts/support").status_code == 401


def test_a_revoked_token_stops_working(client, user, prompt):
    token, plaintext = AccessToken.issue(user, name="bot")
    client.force_login(user)
    client.post(f"/prompts/tokens/{token.pk}/revoke/")
    client.logout()

    token.refresh_from_db()
    assert token.revoked is not None
    assert client.get("/api/prompts/support", headers=bearer(plaintext)).status_code == 401


def test_nobody_revokes_someone_elses_token(client, user, other_user):
    token, _ = AccessToken.issue(user, name="bot")
    client.force_login(other_user)
    assert client.post(f"/prompts/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked is None


def test_unknown_prompts_labels_and_versions_answer_404(client, user, other_user, prompt):
    _, plaintext = AccessToken.issue(user, name="bot")
    Prompt.objects.create(owner=other_user, name="theirs")
    for url in (
        "/api/prompts/nope",
        "/api/prompts/theirs",
        "/api/prompts/support?label=staging",
        "/api/prompts/support?version=9",
    ):
        assert client.get(url, headers=bearer(plaintext)).status_code == 404, url
    client.force_login(user)
    assert client.get(f"/prompts/{prompt.pk}/v/0/").status_code == 404
    bad = client.get("/api/prompts/support?version=x", headers=bearer(plaintext))
    assert bad.status_code == 400


def test_version_zero_is_not_the_newest(client, user, prompt):
    """Versions count from 1: `?version=0` names none (404), it does not fall back to the
    newest the way leaving `version` out does, so a client pinned to it never drifts; nor
    does the page of version 0."""
    _, plaintext = AccessToken.issue(user, name="bot")
    for url in ("/api/prompts/support?version=0", "/api/prompts/support?version=-0"):
        assert client.get(url, headers=bearer(plaintext)).status_code == 404, url


def test_a_team_token_reads_only_that_team_and_stops_when_its_user_leaves(
    client, user, other_user, prompt
):
    team = Team.create(name="Acme", owner=other_user)
    membership = team.add_member(user, Membership.Role.VIEWER)
    team_prompt = Prompt.objects.create(owner=other_user, team=team, name="team-one")
    team_prompt.add_version(other_user, model=MODEL, system_prompt="team")
    _, plaintext = AccessToken.issue(user, name="bot", team=team)

    assert client.get("/api/prompts/team-one", headers=bearer(plaintext)).status_code == 200
    assert client.get("/api/prompts/support", headers=bearer(plaintext)).status_code == 404
    membership.delete()
    assert client.get("/api/prompts/team-one", headers=bearer(plaintext)).status_code == 404


def test_a_token_for_a_team_one_is_not_in_is_refused(client, user, other_user):
    team = Team.create(name="Other", owner=other_user)
    client.force_login(user)
    response = client.post("/prompts/tokens/", {"name": "bot", "space": str(team.pk)})
    assert response.status_code == 400 and not AccessToken.objects.exists()


def test_a_token_name_holding_a_nul_is_refused_not_a_crash(client, user):
    # PostgreSQL keeps no NUL in text: the save was a 500 there (SQLite kept it).
    client.force_login(user)
    response = client.post("/prompts/tokens/", {"name": "bo\x00t", "space": "personal"})
    assert response.status_code == 400
    assert "The name holds a NUL character (\\u0000), which cannot be stored." in (
        html.unescape(response.content.decode())
    )
    assert not AccessToken.objects.exists()


def test_a_prompt_or_label_asked_for_with_a_nul_is_not_found_not_a_crash(client, user, prompt):
    # No name or label holds one; PostgreSQL refused the lookup itself (a 500).
    _, plaintext = AccessToken.issue(user, name="bot")
    for url in ("/api/prompts/supp%00ort", "/api/prompts/support?label=produc%00tion"):
        response = client.get(url, headers=bearer(plaintext))
        assert response.status_code == 404, url
        assert "error" in response.json()


def test_access_tokens_are_reached_from_the_account_menu(client, user):
    client.force_login(user)
    page = client.get("/keys/").content.decode()
    menu = page[page.index('id="account-menu"') :]
    assert 'href="/prompts/tokens/">Access tokens</a>' in menu[: menu.index("</details>")]
