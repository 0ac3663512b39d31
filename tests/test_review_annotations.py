"""Annotations on replies: thumbs, scores, labels, comments with @mentions, the inbox, label
sets, review status (one and in bulk from History), and History's rating/label/status filters."""

from __future__ import annotations

import html
import json

import pytest
from django.contrib.auth.models import User

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.review.models import Annotation, Comment, Label, Mention, ReviewStatus

pytestmark = pytest.mark.django_db

MODEL = "empiriolabs:gemma-4-e4b"
HX = {"HX-Request": "true"}


@pytest.fixture
def team(user, other_user):
    team = Team.create(name="Lab", owner=user)
    team.add_member(other_user, Membership.Role.MEMBER)
    return team


@pytest.fixture
def viewer(team):
    person = User.objects.create_user("vic")
    team.add_member(person, Membership.Role.VIEWER)
    return person


@pytest.fixture
def shared(user, team):
    conversation = Conversation.objects.create(owner=user, team=team, model=MODEL, title="Lab chat")
    ask = Message.objects.create(conversation=conversation, role="user", text="Hi", created_by=user)
    Message.objects.create(conversation=conversation, role="assistant", parent=ask, text="Hello!")
    return conversation


def reply_of(conversation) -> Message:
    return conversation.messages.get(role="assistant")


def post(client, who, url, data=None):
    client.force_login(who)
    return client.post(url, data or {}, headers=HX)


# -- thumbs, score, labels -------------------------------------------------------------------


def test_thumbs_up_is_saved_with_who_and_when_and_the_same_again_clears_it(client, user, shared):
    reply = reply_of(shared)
    response = post(client, user, f"/review/m/{reply.pk}/annotate/", {"thumbs": "up"})
    assert response.status_code == 200
    assert 'aria-pressed="true"' in response.content.decode()
    annotation = Annotation.objects.get(message=reply)
    assert (annotation.author, annotation.thumbs) == (user, 1)
    assert annotation.created and annotation.updated
    post(client, user, f"/review/m/{reply.pk}/annotate/", {"thumbs": "up"})
    assert Annotation.objects.get(message=reply).thumbs is None


def test_a_score_is_one_to_five_and_anything_else_is_refused(client, user, shared):
    reply = reply_of(shared)
    assert post(client, user, f"/review/m/{reply.pk}/annotate/", {"score": "4"}).status_code == 200
    assert Annotation.objects.get(message=reply).score == 4
    for bad in ("0", "6", "x"):
        response = post(client, user, f"/review/m/{reply.pk}/annotate/", {"score": bad})
        assert response.status_code == 422
    assert Annotation.objects.get(message=reply).score == 4


def test_each_reviewer_has_their_own_annotation(client, user, other_user, shared):
    reply = reply_of(shared)
    post(client, user, f"/review/m/{reply.pk}/annotate/", {"thumbs": "up"})
    body = post(client, other_user, f"/review/m/{reply.pk}/annotate/", {"thumbs": "down"})
    assert Annotation.objects.filter(message=reply).count() == 2
    html = body.content.decode()
    assert "ada:" in html and "eve:" in html  # who rated, in the Ratings list


def test_labels_come_from_the_space_and_show_their_colour(client, user, team, shared):
    reply = reply_of(shared)
    wrong = Label.objects.create(owner=user, name="Personal only", colour="#000000")
    good = Label.objects.create(team=team, owner=user, name="Hallucination", colour="#dc2626")
    url = f"/review/m/{reply.pk}/annotate/"
    refused = post(client, user, url, {"labels_form": "1", "label": [wrong.pk]})
    assert refused.status_code == 422 and not Annotation.objects.filter(labels=wrong).exists()
    response = post(client, user, url, {"labels_form": "1", "label": [good.pk]})
    assert list(Annotation.objects.get(message=reply).labels.all()) == [good]
    assert 'fill="#dc2626"' in response.content.decode()
    post(client, user, url, {"labels_form": "1"})  # none ticked: cleared
    assert not Annotation.objects.get(message=reply).labels.exists()


def test_the_transcript_loads_every_bar_and_the_status_in_one_request(client, user, shared):
    client.force_login(user)
    page = client.get(f"/c/{shared.pk}/").content.decode()
    # ?leaf=: the bars of the branch shown (tests/test_branches.py).
    assert f'hx-get="/review/c/{shared.pk}/review/?leaf={reply_of(shared).pk}"' in page
    assert f'id="review-{reply_of(shared).pk}"' in page
    body = client.get(f"/review/c/{shared.pk}/review/").content.decode()
    assert f'id="review-{reply_of(shared).pk}" class="review-bar" hx-swap-oob="true"' in body
    assert 'id="review-status"' in body and "Thumbs up" in body


@pytest.mark.parametrize("leaf", ["²", "x", "99999"])
def test_a_leaf_that_is_no_message_id_shows_every_bar(client, user, shared, leaf):
    # "²" is a digit to str.isdigit() but not to int().
    client.force_login(user)
    response = client.get(f"/review/c/{shared.pk}/review/", {"leaf": leaf})
    assert response.status_code == 200
    assert f'id="review-{reply_of(shared).pk}"' in response.content.decode()


def test_user_messages_cannot_be_annotated(client, user, shared):
    ask = shared.messages.get(role="user")
    response = post(client, user, f"/review/m/{ask.pk}/annotate/", {"thumbs": "up"})
    assert response.status_code == 404 and not Annotation.objects.exists()


# -- permissions: viewers read, strangers see nothing ----------------------------------------


def test_a_viewer_reads_annotations_but_cannot_add_any(client, user, viewer, shared):
    reply = reply_of(shared)
    Annotation.objects.create(message=reply, author=user, thumbs=1)
    client.force_login(viewer)
    bar = client.get(f"/review/m/{reply.pk}/").content.decode()
    assert "👍 1" in bar and "hx-post" not in bar and "<textarea" not in bar
    for url, data in (
        (f"/review/m/{reply.pk}/annotate/", {"thumbs": "down"}),
        (f"/review/m/{reply.pk}/comment/", {"text": "no"}),
        (f"/review/c/{shared.pk}/status/", {"status": "approved"}),
    ):
        assert post(client, viewer, url, data).status_code == 403
    assert Annotation.objects.count() == 1 and not Comment.objects.exists()
    assert not ReviewStatus.objects.exists()


def test_someone_outside_the_space_gets_404_everywhere(client, user, shared, django_user_model):
    stranger = django_user_model.objects.create_user("mallory")
    reply = reply_of(shared)
    client.force_login(stranger)
    assert client.get(f"/review/m/{reply.pk}/").status_code == 404
    assert client.get(f"/review/c/{shared.pk}/review/").status_code == 404
    assert (
        post(client, stranger, f"/review/m/{reply.pk}/annotate/", {"thumbs": "up"}).status_code
        == 404
    )
    assert (
        post(client, stranger, f"/review/m/{reply.pk}/comment/", {"text": "x"}).status_code == 404
    )
    assert (
        post(client, stranger, f"/review/c/{shared.pk}/status/", {"status": "flagged"}).status_code
        == 404
    )
    assert not Annotation.objects.exists() and not Comment.objects.exists()


def test_annotating_needs_a_login(client, shared):
    response = client.post(f"/review/m/{reply_of(shared).pk}/annotate/", {"thumbs": "up"})
    assert response.status_code == 302 and "/login" in response["Location"]


# -- comments and mentions -------------------------------------------------------------------


def test_a_comment_mentions_a_teammate_who_sees_it_in_the_inbox(client, user, other_user, shared):
    reply = reply_of(shared)
    response = post(client, user, f"/review/m/{reply.pk}/comment/", {"text": "@eve look, @nobody"})
    assert response.status_code == 200
    assert '<span class="mention">@eve</span>' in response.content.decode()
    comment = Comment.objects.get()
    assert (comment.author, comment.message) == (user, reply)
    assert list(comment.mentions.all()) == [other_user]  # @nobody is nobody here
    client.force_login(other_user)
    page = client.get("/review/inbox/").content.decode()
    assert 'id="inbox-badge">1<' in page and "look" in page
    mention = Mention.objects.get()
    opened = client.post(f"/review/inbox/{mention.pk}/open/")
    assert opened["Location"] == f"/c/{shared.pk}/#comment-{mention.comment_id}"
    mention.refresh_from_db()
    assert mention.read_at is not None
    assert 'id="inbox-badge"' not in client.get("/review/inbox/").content.decode()


def test_mark_all_read_touches_only_ones_own_mentions(client, user, other_user, shared):
    reply = reply_of(shared)
    post(client, user, f"/review/m/{reply.pk}/comment/", {"text": "@eve one"})
    post(client, other_user, f"/review/m/{reply.pk}/comment/", {"text": "@ada two"})
    client.force_login(other_user)
    client.post("/review/inbox/read/")
    assert Mention.objects.get(user=other_user).read_at is not None
    assert Mention.objects.get(user=user).read_at is None


def test_people_outside_the_conversation_cannot_be_mentioned(
    client, user, other_user, conversation
):
    ask = Message.objects.create(conversation=conversation, role="user", text="q", created_by=user)
    reply = Message.objects.create(conversation=conversation, role="assistant", parent=ask)
    post(client, user, f"/review/m/{reply.pk}/comment/", {"text": "@eve see my personal chat"})
    assert Comment.objects.count() == 1 and not Mention.objects.exists()


def test_comments_are_rendered_escaped(client, user, shared):
    reply = reply_of(shared)
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)> @eve"><b>'
    body = post(client, user, f"/review/m/{reply.pk}/comment/", {"text": evil}).content.decode()
    assert "<script>alert(1)" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert Comment.objects.get().text == evil  # stored as typed


def test_an_empty_or_huge_comment_is_refused(client, user, shared):
    reply = reply_of(shared)
    empty = post(client, user, f"/review/m/{reply.pk}/comment/", {"text": "  "})
    assert empty.status_code == 422 and "Write a comment first." in empty.content.decode()
    big = "x" * 5001
    assert post(client, user, f"/review/m/{reply.pk}/comment/", {"text": big}).status_code == 422
    assert not Comment.objects.exists()


def test_a_comment_holding_a_nul_is_refused_not_a_crash(client, user, shared):
    # PostgreSQL keeps no NUL in text: the save was a 500 there (SQLite kept it).
    reply = reply_of(shared)
    response = post(client, user, f"/review/m/{reply.pk}/comment/", {"text": "Fine\x00 @eve"})
    assert response.status_code == 422
    assert "The comment holds a NUL character (\\u0000), which cannot be stored." in (
        html.unescape(response.content.decode())
    )
    assert not Comment.objects.exists() and not Mention.objects.exists()


def test_a_mention_in_a_conversation_one_left_no_longer_counts(client, user, other_user, shared):
    post(client, user, f"/review/m/{reply_of(shared).pk}/comment/", {"text": "@eve zebra"})
    Membership.objects.get(user=other_user).delete()
    client.force_login(other_user)
    page = client.get("/review/inbox/").content.decode()
    assert 'id="inbox-badge"' not in page and "zebra" not in page


# -- label sets ------------------------------------------------------------------------------


def test_team_admins_manage_the_label_set_and_members_only_read_it(client, user, other_user, team):
    url = f"/review/labels/team/{team.pk}/"
    client.force_login(user)  # the owner
    response = client.post(url, {"name": "Off topic", "colour": "#22C55E"})
    assert response.status_code == 302
    label = Label.objects.get(team=team)
    assert (label.name, label.colour, label.owner) == ("Off topic", "#22c55e", user)
    client.force_login(other_user)  # a member
    assert client.post(url, {"name": "Mine", "colour": "#000000"}).status_code == 403
    assert client.post(f"/review/labels/{label.pk}/delete/").status_code == 403
    page = client.get(url).content.decode()
    assert "Off topic" in page and 'type="color"' not in page
    client.force_login(user)
    client.post(f"/review/labels/{label.pk}/edit/", {"name": "Off-topic", "colour": "#111111"})
    label.refresh_from_db()
    assert (label.name, label.colour) == ("Off-topic", "#111111")
    client.post(f"/review/labels/{label.pk}/delete/")
    assert not Label.objects.exists()


def test_label_names_are_unique_per_space_and_colours_must_be_hex(client, user):
    client.force_login(user)
    client.post("/review/labels/personal/", {"name": "Good", "colour": "#00ff00"})
    again = client.post("/review/labels/personal/", {"name": "good", "colour": "#00ff00"})
    assert again.status_code == 400 and "already a label" in again.content.decode()
    bad = client.post("/review/labels/personal/", {"name": "Odd", "colour": "red;x"})
    assert bad.status_code == 400
    assert list(Label.objects.values_list("name", flat=True)) == ["Good"]


def test_a_label_name_holding_a_nul_is_refused_when_made_or_renamed(client, user):
    # The name is looked up (is it taken?) and saved: both fail on PostgreSQL with a NUL.
    refused = "The label name holds a NUL character (\\u0000), which cannot be stored."
    client.force_login(user)
    made = client.post("/review/labels/personal/", {"name": "Go\x00od", "colour": "#00ff00"})
    assert made.status_code == 400 and refused in html.unescape(made.content.decode())
    assert not Label.objects.exists()
    label = Label.objects.create(owner=user, name="Good", colour="#00ff00")
    edited = client.post(
        f"/review/labels/{label.pk}/edit/", {"name": "Be\x00tter", "colour": "#00ff00"}, follow=True
    )
    assert refused in html.unescape(edited.content.decode())
    label.refresh_from_db()
    assert label.name == "Good"


def test_strangers_cannot_see_or_touch_a_teams_labels(client, team, django_user_model, user):
    label = Label.objects.create(team=team, owner=user, name="Secret", colour="#123456")
    client.force_login(django_user_model.objects.create_user("mallory"))
    assert client.get(f"/review/labels/team/{team.pk}/").status_code == 404
    assert client.post(f"/review/labels/{label.pk}/delete/").status_code == 404
    assert Label.objects.filter(pk=label.pk).exists()


# -- review status ---------------------------------------------------------------------------


def test_the_status_is_set_from_the_transcript_with_who_and_when(client, user, shared):
    response = post(client, user, f"/review/c/{shared.pk}/status/", {"status": "flagged"})
    assert response.status_code == 200 and "set by ada" in response.content.decode()
    row = ReviewStatus.objects.get(conversation=shared)
    assert (row.status, row.set_by) == ("flagged", user)
    assert (
        post(client, user, f"/review/c/{shared.pk}/status/", {"status": "meh"}).status_code == 422
    )


def test_bulk_status_changes_only_what_the_user_may_change(client, user, viewer, shared, team):
    mine = Conversation.objects.create(owner=viewer, model=MODEL, title="Viewer's own")
    client.force_login(viewer)
    response = client.post(
        "/review/bulk/", {"c": [shared.pk, mine.pk], "status": "approved", "apply": "status"}
    )
    assert response.status_code == 302
    assert ReviewStatus.objects.get().conversation == mine  # a viewer in the team's one
    client.force_login(user)
    client.post("/review/bulk/", {"c": [shared.pk, mine.pk], "status": "in_review"})
    assert ReviewStatus.objects.get(conversation=shared).status == "in_review"
    assert ReviewStatus.objects.get(conversation=mine).status == "approved"  # not hers


def test_bulk_export_streams_only_visible_conversations(client, user, other_user, shared):
    theirs = Conversation.objects.create(owner=other_user, model=MODEL, title="Eve's secret")
    client.force_login(user)
    response = client.post("/review/bulk/", {"c": [shared.pk, theirs.pk], "export": "json"})
    body = b"".join(response.streaming_content).decode()
    data = json.loads(body)
    assert data["format"] == "playground.conversations"
    assert [c["conversation"]["title"] for c in data["conversations"]] == ["Lab chat"]
    md = client.post("/review/bulk/", {"c": [shared.pk], "export": "md"})
    assert b"# Lab chat" in b"".join(md.streaming_content)


def test_history_has_a_checkbox_per_row_and_the_bulk_form(client, user, shared):
    client.force_login(user)
    page = client.get("/review/").content.decode()
    assert f'name="c" value="{shared.pk}" form="history-bulk"' in page
    assert 'id="history-bulk"' in page and 'value="flagged"' in page


# -- History filters -------------------------------------------------------------------------


def _titles(client, query: str) -> set[str]:
    response = client.get(f"/review/?{query}")
    assert response.status_code == 200, response.content
    return {
        c.title
        for c in Conversation.objects.all()
        if f'id="history-{c.pk}"' in response.content.decode()
    }


def test_history_filters_by_rating_score_label_and_review_status(client, user, shared, team):
    plain = Conversation.objects.create(owner=user, model=MODEL, title="Plain")
    reply = reply_of(shared)
    label = Label.objects.create(team=team, owner=user, name="Good", colour="#00ff00")
    annotation = Annotation.objects.create(message=reply, author=user, thumbs=1, score=5)
    annotation.labels.add(label)
    ReviewStatus.set(shared, "flagged", user)
    client.force_login(user)
    assert _titles(client, "rating=up") == {"Lab chat"}
    assert _titles(client, "rating=down") == set()
    assert _titles(client, "rating=unrated") == {"Plain"}
    assert _titles(client, "score=5") == {"Lab chat"}
    assert _titles(client, "score=3") == set()
    assert _titles(client, f"label={label.pk}") == {"Lab chat"}
    assert _titles(client, "review=flagged") == {"Lab chat"}
    assert _titles(client, "review=unreviewed") == {"Plain"}
    assert _titles(client, "review=approved") == set()
    assert plain.pk  # both exist; the filters chose


def test_a_label_filter_outside_ones_spaces_is_refused(client, other_user, user, django_user_model):
    label = Label.objects.create(owner=user, name="Ada's", colour="#000000")
    client.force_login(other_user)
    assert client.get(f"/review/?label={label.pk}").status_code == 400


def test_the_inbox_lists_unread_mentions_first(client, user, other_user, shared):
    reply = reply_of(shared)
    post(client, user, f"/review/m/{reply.pk}/comment/", {"text": "@eve older unread"})
    post(client, user, f"/review/m/{reply.pk}/comment/", {"text": "@eve newer but read"})
    Mention.objects.filter(comment__text__contains="newer").update(read_at="2026-01-01T00:00Z")
    client.force_login(other_user)
    page = client.get("/review/inbox/").content.decode()
    assert page.index("older unread") < page.index("newer but read")
    assert page.count('class="inbox-item unread"') == 1


def test_a_personal_label_set_is_its_owners_alone(client, user, other_user):
    label = Label.objects.create(owner=user, name="Mine", colour="#000000")
    client.force_login(other_user)
    assert "Mine" not in client.get("/review/labels/personal/").content.decode()
    assert client.post(f"/review/labels/{label.pk}/edit/", {"name": "Hers"}).status_code == 404
    assert client.post(f"/review/labels/{label.pk}/delete/").status_code == 404
    assert Label.objects.get(pk=label.pk).name == "Mine"


def test_bulk_returns_to_the_same_filters_and_only_to_history(client, user, shared):
    client.force_login(user)
    response = client.post(
        "/review/bulk/",
        {"c": [shared.pk], "status": "approved"},
        headers={"Referer": "http://testserver/review/?review=flagged&after=x"},
    )
    assert response["Location"] == "/review/?review=flagged"
    evil = client.post("/review/bulk/", {"status": "approved", "back": "//evil.example/"})
    assert evil["Location"].startswith("/review/")
    assert ReviewStatus.objects.get().status == "approved"


def test_bulk_with_a_referer_no_url_parser_reads_falls_back_to_the_form(client, user, shared):
    client.force_login(user)
    response = client.post(
        "/review/bulk/",
        {"c": [shared.pk], "status": "approved", "back": "?review=flagged"},
        headers={"Referer": "http://[::1/review/?review=none"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/review/?review=flagged"
    assert ReviewStatus.objects.get().status == "approved"


def test_history_rows_show_thumbs_and_the_mean_score(client, user, other_user, shared):
    reply = reply_of(shared)
    Annotation.objects.create(message=reply, author=user, thumbs=1, score=4)
    Annotation.objects.create(message=reply, author=other_user, thumbs=1, score=5)
    client.force_login(user)
    page = client.get("/review/").content.decode()
    row = page[page.index(f'id="history-{shared.pk}"') :]
    assert "👍 2" in row and "score 4.5" in row and "👎" not in row.split("</li>")[0]


TOO_LARGE = str(2**64)  # an integer, but past any row id: SQLite raised OverflowError


@pytest.mark.parametrize(
    ("url", "data", "status"),
    [
        ("/review/bulk/", {"c": [TOO_LARGE], "status": "approved"}, 404),
        ("/review/bulk/", {"c": [TOO_LARGE], "export": "json"}, 404),
        ("/review/m/{reply}/annotate/", {"labels_form": "1", "label": [TOO_LARGE]}, 422),
        ("/review/inbox/read/", {"mention": TOO_LARGE}, 404),
    ],
)
def test_an_id_too_large_for_the_database_is_refused_not_a_crash(
    client, user, shared, url, data, status
):
    response = post(client, user, url.format(reply=reply_of(shared).pk), data)
    assert response.status_code == status
    assert not Annotation.objects.exists() and not ReviewStatus.objects.exists()
