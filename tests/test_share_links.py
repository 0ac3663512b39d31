"""Share links: read-only, no login, token stored hashed, expiring, revocable, 404 alike."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.review import sharing
from playground.review.models import ShareLink
from tests.conftest import SECRET_KEY_VALUE
from tests.html import find_all, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(user, other_user):
    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=user, role="member")
    Membership.objects.create(team=team, user=other_user, role="member")
    return team


@pytest.fixture
def chat(user):
    conversation = Conversation.objects.create(
        owner=user, title="Shared chat", model="empiriolabs:gemma-4-e4b"
    )
    prompt = Message.objects.create(
        conversation=conversation, role="user", text="What is **2+2**?", created_by=user
    )
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=prompt,
        text="Four. <script>alert(1)</script> [x](javascript:alert(1))",
        request_body={"model": "gemma", "messages": []},
    )
    return conversation, prompt, reply


def make(client, user, conversation, **data):
    client.force_login(user)
    response = client.post(f"/review/c/{conversation.pk}/share/", data)
    assert response.status_code == 200, response.content
    match = re.search(rb'value="(http://testserver/review/s/([^"/]+)/)"', response.content)
    assert match, response.content
    client.logout()
    return match.group(1).decode(), match.group(2).decode()


def test_a_link_opens_without_login_read_only_and_sanitized(client, user, chat, api_key):
    conversation, prompt, reply = chat
    url, token = make(client, user, conversation)
    response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Shared chat" in body and "<strong>2+2</strong>" in body
    assert "&lt;script&gt;alert" in body and 'href="javascript' not in body
    assert "<form" not in body and "<script" not in body  # read-only, no script at all
    assert SECRET_KEY_VALUE not in body
    assert user.username not in body  # no names unless chosen
    for pk in (conversation.pk, prompt.pk, reply.pk):  # no internal ids
        assert f"/{pk}/" not in body and f"-{pk}" not in body and f'"{pk}"' not in body
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert '<meta name="robots" content="noindex, nofollow">' in body
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert response["Referrer-Policy"] == "no-referrer"


def test_the_token_is_random_and_only_its_hash_is_stored(client, user, chat):
    conversation, _, _ = chat
    _, token = make(client, user, conversation)
    _, token2 = make(client, user, conversation)
    assert token != token2 and len(token) >= 43  # 32 bytes of urlsafe base64: 256 bits
    link = ShareLink.objects.get(token_hash=sharing.hash_token(token))
    stored = [str(v) for v in ShareLink.objects.filter(pk=link.pk).values_list()[0]]
    assert token not in stored


def test_names_show_only_when_the_sharer_chose(client, user, chat):
    conversation, _, _ = chat
    url, _ = make(client, user, conversation, show_names="on")
    assert user.username in client.get(url).content.decode()


def test_a_single_reply_link_shows_that_reply_and_its_prompt_only(client, user, chat):
    conversation, prompt, reply = chat
    Message.objects.create(conversation=conversation, role="user", text="later secret question")
    client.force_login(user)
    response = client.post(f"/review/c/{conversation.pk}/share/", {"message": reply.pk})
    token = re.search(rb"/review/s/([^\"/]+)/", response.content).group(1).decode()
    client.logout()
    body = client.get(f"/review/s/{token}/").content.decode()
    assert "Four." in body and "2+2" in body and "later secret question" not in body


def test_a_message_of_another_conversation_is_refused(client, user, chat):
    conversation, _, _ = chat
    other = Conversation.objects.create(owner=user, model="m")
    alien = Message.objects.create(conversation=other, role="user", text="x")
    client.force_login(user)
    response = client.post(f"/review/c/{conversation.pk}/share/", {"message": alien.pk})
    assert response.status_code == 404
    assert not ShareLink.objects.exists()


def test_expired_revoked_and_unknown_links_answer_the_same_404(client, user, chat):
    conversation, _, _ = chat
    _, expired = make(client, user, conversation, expires="1h")
    ShareLink.objects.filter(token_hash=sharing.hash_token(expired)).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    _, revoked = make(client, user, conversation)
    link = ShareLink.objects.get(token_hash=sharing.hash_token(revoked))
    client.force_login(user)
    assert client.post(f"/review/shared/{link.pk}/revoke/").status_code == 302
    client.logout()
    answers = [client.get(f"/review/s/{t}/") for t in (expired, revoked, "nope" * 11)]
    assert {r.status_code for r in answers} == {404}
    assert len({r.content for r in answers}) == 1


def test_an_expiry_in_the_future_still_opens(client, user, chat):
    conversation, _, _ = chat
    url, token = make(client, user, conversation, expires="7d")
    link = ShareLink.objects.get(token_hash=sharing.hash_token(token))
    assert timedelta(days=6) < link.expires - timezone.now() <= timedelta(days=7)
    assert client.get(url).status_code == 200


def test_an_unknown_expiry_is_refused(client, user, chat):
    conversation, _, _ = chat
    client.force_login(user)
    response = client.post(f"/review/c/{conversation.pk}/share/", {"expires": "forever"})
    assert response.status_code == 400 and not ShareLink.objects.exists()


def test_only_someone_who_may_see_the_conversation_can_make_a_link(client, other_user, chat):
    conversation, _, _ = chat
    client.force_login(other_user)
    assert client.get(f"/review/c/{conversation.pk}/share/").status_code == 404
    assert client.post(f"/review/c/{conversation.pk}/share/").status_code == 404
    assert not ShareLink.objects.exists()


def test_making_a_link_needs_a_login(client, chat):
    conversation, _, _ = chat
    response = client.post(f"/review/c/{conversation.pk}/share/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_only_the_maker_or_a_team_admin_may_revoke(
    client, user, other_user, team, django_user_model
):
    conversation = Conversation.objects.create(owner=user, team=team, model="m", title="T")
    url, token = make(client, user, conversation)
    link = ShareLink.objects.get(token_hash=sharing.hash_token(token))
    client.force_login(other_user)  # a member, not an admin
    assert client.post(f"/review/shared/{link.pk}/revoke/").status_code == 404
    assert "T" not in [text(a) for a in find_all(client.get("/review/shared/").content, "a")]
    assert client.get(url).status_code == 200
    admin = django_user_model.objects.create_user("root", password="pw-root-123456")
    Membership.objects.create(team=team, user=admin, role="admin")
    client.force_login(admin)
    assert "T" in [text(a) for a in find_all(client.get("/review/shared/").content, "a")]
    assert client.post(f"/review/shared/{link.pk}/revoke/").status_code == 302
    client.logout()
    assert client.get(url).status_code == 404


def test_the_shared_links_page_lists_the_makers_links_with_their_state(client, user, chat):
    conversation, _, _ = chat
    make(client, user, conversation)
    _, token = make(client, user, conversation)
    sharing.revoke(user, ShareLink.objects.get(token_hash=sharing.hash_token(token)).pk)
    client.force_login(user)
    states = [
        text(td)
        for td in find_all(client.get("/review/shared/").content, "td", class_="share-state")
    ]
    assert sorted(states) == ["live", "revoked"]


def test_a_link_dies_when_its_maker_loses_the_conversation(client, user, other_user, team):
    conversation = Conversation.objects.create(owner=user, team=team, model="m")
    url, _ = make(client, other_user, conversation)
    assert client.get(url).status_code == 200
    Membership.objects.filter(team=team, user=other_user).delete()
    assert client.get(url).status_code == 404


def test_a_maker_who_lost_the_conversation_no_longer_reads_its_title(
    client, user, other_user, team
):
    # Their links are still theirs to revoke, but the page named the team's conversation
    # as it is now, renamed after they left.
    conversation = Conversation.objects.create(owner=user, team=team, model="m", title="Old")
    make(client, other_user, conversation)
    Membership.objects.filter(team=team, user=other_user).delete()
    Conversation.objects.filter(pk=conversation.pk).update(title="Secret merger plan")
    client.force_login(other_user)
    response = client.get("/review/shared/")
    assert b"Secret merger plan" not in response.content
    assert f"/c/{conversation.pk}/" not in response.content.decode()
    states = [text(td) for td in find_all(response.content, "td", class_="share-state")]
    assert states == ["maker has no access"]  # it opens for no one while they cannot see it
    assert b"Revoke" in response.content


@pytest.mark.parametrize("loss", ["left the team", "deactivated"])
def test_an_admin_sees_a_link_whose_maker_lost_the_conversation_as_not_live(
    client, user, other_user, team, django_user_model, loss
):
    # The public page stops opening such a link; the admin's list went on calling it live.
    conversation = Conversation.objects.create(owner=user, team=team, model="m", title="Plan")
    url, _ = make(client, other_user, conversation)
    if loss == "left the team":
        Membership.objects.filter(team=team, user=other_user).delete()
    else:
        other_user.is_active = False
        other_user.save(update_fields=["is_active"])
    assert client.get(url).status_code == 404
    admin = django_user_model.objects.create_user("root", password="pw-root-123456")
    Membership.objects.create(team=team, user=admin, role="admin")
    client.force_login(admin)
    response = client.get("/review/shared/")
    states = [text(td) for td in find_all(response.content, "td", class_="share-state")]
    assert states == ["maker has no access"]
    assert "Plan" in [text(a) for a in find_all(response.content, "a")]  # the admin sees it
    assert b"Revoke" in response.content
    assert ShareLink.objects.get().revoked is None  # listing changes nothing


def test_a_revoked_link_whose_maker_left_still_reads_revoked(client, user, other_user, team):
    conversation = Conversation.objects.create(owner=user, team=team, model="m")
    _, token = make(client, other_user, conversation)
    sharing.revoke(other_user, ShareLink.objects.get(token_hash=sharing.hash_token(token)).pk)
    Membership.objects.filter(team=team, user=other_user).delete()
    client.force_login(other_user)
    response = client.get("/review/shared/")
    states = [text(td) for td in find_all(response.content, "td", class_="share-state")]
    assert states == ["revoked"] and b"Revoke" not in response.content


def test_a_deleted_conversation_takes_its_links(client, user, chat):
    conversation, _, _ = chat
    url, _ = make(client, user, conversation)
    conversation.delete()
    assert client.get(url).status_code == 404 and not ShareLink.objects.exists()


def test_the_transcript_offers_share_for_the_conversation_and_each_reply(client, user, chat):
    conversation, _, reply = chat
    client.force_login(user)
    body = client.get(f"/c/{conversation.pk}/").content.decode()
    assert f'href="/review/c/{conversation.pk}/share/"' in body
    assert f'href="/review/c/{conversation.pk}/share/?message={reply.pk}"' in body


def test_a_viewer_may_not_publish_a_team_conversation_but_revokes_their_own_links(
    client, user, other_user, team
):
    """A viewer is read-only: a share link publishes the conversation, so making one follows
    sending. Links they made as a member stay theirs to revoke."""
    conversation = Conversation.objects.create(owner=user, team=team, model="m", title="T")
    reply = Message.objects.create(conversation=conversation, role="assistant", text="Hi")
    url, token = make(client, other_user, conversation)  # made while a member
    Membership.objects.filter(team=team, user=other_user).update(role="viewer")
    client.force_login(other_user)
    share = f"/review/c/{conversation.pk}/share/"
    assert client.get(share).status_code == 403
    assert client.post(share, {"expires": "never"}).status_code == 403
    assert client.post(f"{share}?message={reply.pk}", {"expires": "never"}).status_code == 403
    assert ShareLink.objects.count() == 1
    body = client.get(f"/c/{conversation.pk}/").content.decode()
    # No Share offered: not for the conversation, and each reply's is hidden with the
    # other controls a viewer would be refused.
    assert f'href="{share}"' not in body and "watch-only" in body
    assert f'href="{share}?message={reply.pk}" class="share-reply run-only"' in body
    link = ShareLink.objects.get(token_hash=sharing.hash_token(token))
    assert client.post(f"/review/shared/{link.pk}/revoke/").status_code == 302
    client.logout()
    assert client.get(url).status_code == 404
