"""Review queues: made from a History filter by a space's admin, split between reviewers,
stepped through one item at a time, summed up per reviewer."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.review.models import (
    Annotation,
    Comment,
    Label,
    QueueItem,
    ReviewQueue,
    ReviewStatus,
)

pytestmark = pytest.mark.django_db

MODEL = "empiriolabs:gemma-4-e4b"
HX = {"HX-Request": "true"}


@pytest.fixture
def bob():
    return User.objects.create_user("bob")


@pytest.fixture
def team(user, other_user, bob):
    """ada owns Lab; eve and bob are members."""
    team = Team.create(name="Lab", owner=user)
    team.add_member(other_user, Membership.Role.MEMBER)
    team.add_member(bob, Membership.Role.MEMBER)
    return team


def conversation_with_replies(owner, team, title: str, replies: int = 1) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, team=team, model=MODEL, title=title)
    parent = None
    for n in range(replies):
        ask = Message.objects.create(
            conversation=conversation, role="user", text=f"Q{n} of {title}", parent=parent
        )
        parent = Message.objects.create(
            conversation=conversation, role="assistant", parent=ask, text=f"A{n} of {title}"
        )
    return conversation


@pytest.fixture
def flagged(user, team):
    """Three flagged team conversations (4 replies), one approved, one flagged personal."""
    found = [
        conversation_with_replies(user, team, "Flagged one", replies=2),
        conversation_with_replies(user, team, "Flagged two"),
        conversation_with_replies(user, team, "Flagged three"),
    ]
    for conversation in found:
        ReviewStatus.set(conversation, "flagged", user)
    ReviewStatus.set(conversation_with_replies(user, team, "Approved"), "approved", user)
    ReviewStatus.set(conversation_with_replies(user, None, "Mine, flagged"), "flagged", user)
    return found


def week_filter(team) -> dict[str, str]:
    since = (timezone.localdate() - timedelta(days=7)).isoformat()
    return {"space": str(team.pk), "review": "flagged", "since": since}


def make_queue(client, who, team, reviewers, **extra):
    client.force_login(who)
    data = {**week_filter(team), "name": "Flagged this week", "reviewer": [r.pk for r in reviewers]}
    return client.post("/review/queues/new/", {**data, **extra})


def replies_of(conversations) -> set[int]:
    return set(
        Message.objects.filter(conversation__in=conversations, role="assistant").values_list(
            "pk", flat=True
        )
    )


# -- making a queue --------------------------------------------------------------------------


def test_history_offers_a_queue_made_from_its_current_filters(client, user, team, flagged):
    client.force_login(user)
    body = client.get("/review/", {"review": "flagged"}).content.decode()
    assert "/review/queues/new/?review=flagged" in body


def test_the_new_queue_page_lists_the_filters_counts_the_replies_and_offers_reviewers(
    client, user, team, flagged
):
    client.force_login(user)
    response = client.get("/review/queues/new/", week_filter(team))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Review status: <strong>Flagged</strong>" in body
    assert "4 replies match now" in body
    assert body.count('name="reviewer"') == 3  # ada, eve, bob
    assert 'name="review" value="flagged"' in body  # the filters ride along


def test_an_admin_makes_a_queue_from_a_filter_and_the_replies_are_split(
    client, user, other_user, bob, team, flagged
):
    response = make_queue(client, user, team, [other_user, bob])
    queue = ReviewQueue.objects.get()
    assert response.status_code == 302 and response.url == f"/review/queues/{queue.pk}/"
    assert (queue.name, queue.team, queue.owner) == ("Flagged this week", team, user)
    assert "review=flagged" in queue.filter_query
    assert set(queue.reviewers.all()) == {other_user, bob}
    items = list(QueueItem.objects.filter(queue=queue))
    # Only the flagged team conversations: not the approved one, not the personal one.
    assert {i.message_id for i in items} == replies_of(flagged)
    # A conversation's replies stay with one reviewer; the lists are within one of even.
    by_reviewer = {r: [i for i in items if i.reviewer == r] for r in (other_user, bob)}
    # Newest first: "three" to eve, "two" to bob, then "one" (2 replies) to the first of
    # the two with the fewest.
    assert [len(by_reviewer[r]) for r in (other_user, bob)] == [3, 1]
    for conversation in flagged:
        assert len({i.reviewer for i in items if i.message.conversation == conversation}) == 1
    for mine in by_reviewer.values():
        assert sorted(i.position for i in mine) == list(range(1, len(mine) + 1))
    assert all(i.done_at is None for i in items)


def test_the_items_are_a_snapshot_of_when_the_queue_was_made(
    client, user, other_user, team, flagged
):
    make_queue(client, user, team, [other_user])
    later = conversation_with_replies(user, team, "Flagged later")
    ReviewStatus.set(later, "flagged", user)
    queue = ReviewQueue.objects.get()
    assert queue.items.count() == 4
    assert not queue.items.filter(message__conversation=later).exists()


def test_a_member_cannot_make_a_queue(client, user, other_user, team, flagged):
    response = make_queue(client, other_user, team, [other_user])
    assert response.status_code == 403
    assert not ReviewQueue.objects.exists()
    page = client.get("/review/queues/new/", week_filter(team))
    assert page.status_code == 403
    assert "Only a space's owners and admins make review queues" in page.content.decode()
    assert 'name="reviewer"' not in page.content.decode()


def test_viewers_and_outsiders_cannot_be_reviewers(client, user, team, flagged):
    viewer = User.objects.create_user("vic")
    team.add_member(viewer, Membership.Role.VIEWER)
    outsider = User.objects.create_user("olga")
    for person in (viewer, outsider):
        response = make_queue(client, user, team, [person])
        assert response.status_code == 400
        assert "not viewers" in response.content.decode()
    assert not ReviewQueue.objects.exists()


def test_a_filter_that_matches_nothing_makes_no_queue(client, user, other_user, team):
    response = make_queue(client, user, team, [other_user])
    assert response.status_code == 400
    assert "No replies in Lab match these filters." in response.content.decode()
    assert not ReviewQueue.objects.exists()


def test_a_queue_needs_a_name_and_a_reviewer(client, user, other_user, team, flagged):
    assert make_queue(client, user, team, [other_user], name="  ").status_code == 400
    assert make_queue(client, user, team, []).status_code == 400
    assert not ReviewQueue.objects.exists()


def test_a_queue_name_holding_a_nul_is_refused_not_a_crash(client, user, other_user, team, flagged):
    # PostgreSQL keeps no NUL in text: the save was a 500 there (SQLite kept it).
    response = make_queue(client, user, team, [other_user], name="Flagged\x00")
    assert response.status_code == 400
    assert "The queue name holds a NUL character (\\u0000), which cannot be stored." in (
        html.unescape(response.content.decode())
    )
    assert not ReviewQueue.objects.exists()


def test_a_personal_space_queue_is_its_owners_alone(client, user, other_user, flagged):
    client.force_login(user)
    data = {"space": "personal", "review": "flagged", "name": "Mine", "reviewer": [user.pk]}
    assert client.post("/review/queues/new/", data).status_code == 302
    queue = ReviewQueue.objects.get()
    assert queue.team is None and queue.items.count() == 1
    client.force_login(other_user)
    assert client.get(f"/review/queues/{queue.pk}/").status_code == 404
    assert client.get(f"/review/queues/{queue.pk}/review/1/").status_code == 404


# -- stepping through ------------------------------------------------------------------------


@pytest.fixture
def queue(client, user, other_user, bob, team, flagged) -> ReviewQueue:
    make_queue(client, user, team, [other_user, bob])
    return ReviewQueue.objects.get()


def item_url(queue, position: int) -> str:
    return f"/review/queues/{queue.pk}/review/{position}/"


def test_a_reviewer_starts_at_their_first_item_not_done(client, other_user, queue):
    client.force_login(other_user)
    assert client.get(f"/review/queues/{queue.pk}/review/").url == item_url(queue, 1)
    QueueItem.objects.filter(queue=queue, reviewer=other_user, position=1).update(
        done_at=timezone.now()
    )
    assert client.get(f"/review/queues/{queue.pk}/review/").url == item_url(queue, 2)


def test_the_review_page_shows_the_reply_the_keys_and_the_progress(client, other_user, queue):
    client.force_login(other_user)
    item = QueueItem.objects.get(queue=queue, reviewer=other_user, position=1)
    body = client.get(item_url(queue, 1)).content.decode()
    assert item.message.text in body
    assert 'data-key="j"' in body and 'data-key="4"' in body and 'data-key="a"' in body
    assert 'id="queue-progress"' in body and "0 / 3 done" in body
    assert "js/queue.js" in body


def test_stepping_scores_thumbs_labels_comments_and_approves_with_who_and_when(
    client, user, other_user, team, queue
):
    label = Label.objects.create(team=team, owner=user, name="Wrong", colour="#ff0000")
    item = QueueItem.objects.get(queue=queue, reviewer=other_user, position=1)
    client.force_login(other_user)
    url = item_url(queue, 1)
    assert client.post(url, {"action": "score", "score": "4"}, headers=HX).status_code == 200
    client.post(url, {"action": "thumbs", "thumbs": "up"}, headers=HX)
    client.post(url, {"action": "labels", "label": [label.pk]}, headers=HX)
    client.post(url, {"action": "comment", "text": "Check the date @ada"}, headers=HX)
    annotation = Annotation.objects.get(message=item.message, author=other_user)
    assert (annotation.score, annotation.thumbs) == (4, 1)
    assert list(annotation.labels.all()) == [label]
    assert Comment.objects.get(message=item.message).author == other_user
    assert QueueItem.objects.get(pk=item.pk).done_at is None

    response = client.post(url, {"action": "approve"}, headers=HX)
    body = response.content.decode()
    assert response.status_code == 200 and "1 / 3 done" in body
    item.refresh_from_db()
    assert item.done_by == other_user and item.done_at is not None
    status = ReviewStatus.objects.get(conversation=item.message.conversation)
    assert (status.status, status.set_by) == ("approved", other_user)


def test_flag_sets_the_conversation_flagged_and_marks_the_item_done(client, other_user, queue):
    client.force_login(other_user)
    client.post(item_url(queue, 2), {"action": "flag"})
    item = QueueItem.objects.get(queue=queue, reviewer=other_user, position=2)
    assert item.done_by == other_user
    assert ReviewStatus.objects.get(conversation=item.message.conversation).status == "flagged"


def test_a_bad_score_is_refused_and_changes_nothing(client, other_user, queue):
    client.force_login(other_user)
    for bad in ("0", "6", "x", ""):
        response = client.post(item_url(queue, 1), {"action": "score", "score": bad}, headers=HX)
        assert response.status_code == 400
    assert not Annotation.objects.exists()


def test_a_comment_holding_a_nul_is_refused_and_changes_nothing(client, other_user, queue):
    client.force_login(other_user)
    data = {"action": "comment", "text": "Check\x00 this"}
    response = client.post(item_url(queue, 1), data, headers=HX)
    assert response.status_code == 400
    assert "The comment holds a NUL character (\\u0000), which cannot be stored." in (
        html.unescape(response.content.decode())
    )
    assert not Comment.objects.exists()


def test_without_script_a_change_redirects_back_to_the_item(client, other_user, queue):
    client.force_login(other_user)
    response = client.post(item_url(queue, 1), {"action": "done"})
    assert response.status_code == 302 and response.url == item_url(queue, 1)
    assert QueueItem.objects.get(queue=queue, reviewer=other_user, position=1).done_at


def test_each_reviewer_reaches_only_their_own_items(client, other_user, bob, queue):
    client.force_login(bob)
    client.post(item_url(queue, 1), {"action": "done"})
    assert QueueItem.objects.filter(done_by=bob).get().reviewer == bob
    assert not QueueItem.objects.filter(reviewer=other_user, done_at__isnull=False).exists()
    assert client.get(item_url(queue, 2)).status_code == 404  # bob has one


def test_members_not_assigned_and_demoted_reviewers_cannot_step(client, user, bob, team, queue):
    client.force_login(user)  # the owner made it but is not a reviewer
    assert client.get(item_url(queue, 1)).status_code == 403
    assert client.post(item_url(queue, 1), {"action": "done"}).status_code == 403
    team.memberships.filter(user=bob).update(role=Membership.Role.VIEWER)
    client.force_login(bob)
    assert client.get(item_url(queue, 1)).status_code == 403
    assert not QueueItem.objects.filter(done_at__isnull=False).exists()


def test_outsiders_cannot_tell_a_queue_exists(client, queue):
    stranger = User.objects.create_user("olga")
    client.force_login(stranger)
    for url in (f"/review/queues/{queue.pk}/", item_url(queue, 1)):
        assert client.get(url).status_code == 404
    assert client.post(f"/review/queues/{queue.pk}/delete/").status_code == 404
    assert ReviewQueue.objects.exists()


# -- summary, list, delete -------------------------------------------------------------------


def test_the_summary_shows_progress_and_score_distribution_per_reviewer(
    client, user, other_user, bob, queue
):
    client.force_login(other_user)
    client.post(item_url(queue, 1), {"action": "score", "score": "4"})
    client.post(item_url(queue, 1), {"action": "approve"})
    client.post(item_url(queue, 2), {"action": "score", "score": "2"})
    client.force_login(bob)
    client.post(item_url(queue, 1), {"action": "score", "score": "4"})
    # ada is not a reviewer: her score of a queued reply is not the queue's.
    Annotation.objects.create(message=queue.items.first().message, author=user, score=1)

    client.force_login(user)
    response = client.get(f"/review/queues/{queue.pk}/")
    assert response.status_code == 200
    rows = response.context["summary"].rows
    assert [r.reviewer for r in rows] == [bob, other_user]
    assert [(r.progress.done, r.progress.total) for r in rows] == [(0, 1), (1, 3)]
    assert rows[0].scores == [0, 0, 0, 1, 0]
    assert rows[1].scores == [0, 1, 0, 1, 0]
    assert response.context["summary"].total.scores == [0, 1, 0, 2, 0]
    body = response.content.decode()
    assert "1 / 4" in body and 'data-reviewer="eve"' in body


def test_the_queues_page_lists_the_current_spaces_queues_with_my_progress(
    client, other_user, team, queue
):
    client.force_login(other_user)
    client.post("/space/", {"space": team.pk})
    client.post(item_url(queue, 1), {"action": "done"})
    body = client.get("/review/queues/").content.decode()
    assert "Flagged this week" in body and "1 / 3" in body
    assert f"/review/queues/{queue.pk}/review/" in body
    client.post("/space/", {"space": "personal"})
    assert "Flagged this week" not in client.get("/review/queues/").content.decode()


def test_only_admins_delete_a_queue_and_the_annotations_stay(client, user, other_user, queue):
    client.force_login(other_user)
    client.post(item_url(queue, 1), {"action": "score", "score": "5"})
    assert client.post(f"/review/queues/{queue.pk}/delete/").status_code == 403
    assert ReviewQueue.objects.exists()
    client.force_login(user)
    assert client.post(f"/review/queues/{queue.pk}/delete/").status_code == 302
    assert not ReviewQueue.objects.exists() and not QueueItem.objects.exists()
    assert Annotation.objects.get().score == 5


def test_a_deleted_reply_leaves_the_queue(client, other_user, queue):
    mine = list(QueueItem.objects.filter(queue=queue, reviewer=other_user).order_by("position"))
    assert len(mine) == 3
    Message.objects.filter(pk=mine[0].message_id).delete()  # its item goes with it
    assert not QueueItem.objects.filter(pk=mine[0].pk).exists()
    client.force_login(other_user)
    assert client.get(item_url(queue, 1)).status_code == 404
    assert client.get(f"/review/queues/{queue.pk}/review/").url == item_url(queue, 2)
    now_first = client.get(item_url(queue, 2))
    assert now_first.context["previous"] is None and now_first.context["next"] == 3
    assert "item 1 of 2" in now_first.content.decode()


def test_next_and_previous_skip_a_gap(client, other_user, queue):
    mine = list(QueueItem.objects.filter(queue=queue, reviewer=other_user).order_by("position"))
    mine[1].delete()  # as deleting a reply whose conversation goes on after it would
    client.force_login(other_user)
    first = client.get(item_url(queue, 1))
    assert first.context["next"] == 3 and "item 1 of 2" in first.content.decode()
    last = client.get(item_url(queue, 3))
    assert last.context["previous"] == 1 and last.context["next"] is None
    assert "item 2 of 2" in last.content.decode()
    assert client.get(item_url(queue, 2)).status_code == 404


def test_deleting_through_htmx_sends_the_browser_to_the_queues_page(client, user, queue):
    client.force_login(user)
    response = client.post(f"/review/queues/{queue.pk}/delete/", headers=HX)
    assert response.status_code == 200 and response["HX-Redirect"] == "/review/queues/"
    assert not ReviewQueue.objects.exists()


def test_the_summary_costs_the_same_queries_however_many_items_and_reviewers(
    client, user, other_user, bob, team, flagged
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for_summary() -> int:
        queue = ReviewQueue.objects.latest("pk")
        for item in queue.items.all():
            Annotation.objects.create(message=item.message, author=item.reviewer, score=3)
        client.force_login(user)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"/review/queues/{queue.pk}/").status_code == 200
        return len(captured)

    make_queue(client, user, team, [other_user])
    small = queries_for_summary()
    Annotation.objects.all().delete()
    for n in range(6):
        ReviewStatus.set(conversation_with_replies(user, team, f"More {n}", 2), "flagged", user)
    make_queue(client, user, team, [other_user, bob, user], name="Bigger")
    assert ReviewQueue.objects.latest("pk").items.count() == 16
    assert queries_for_summary() == small


def test_history_search_words_narrow_the_queue_too(client, user, other_user, team, flagged):
    response = make_queue(client, user, team, [other_user], q="three")
    assert response.status_code == 302
    queue = ReviewQueue.objects.get()
    assert {i.message_id for i in queue.items.all()} == replies_of([flagged[2]])
    assert "q=three" in queue.filter_query


def test_an_admin_hands_a_reviewers_open_items_to_another(client, user, other_user, bob, queue):
    client.force_login(other_user)
    client.post(item_url(queue, 1), {"action": "done"})
    client.force_login(user)
    assert 'name="to"' in client.get(f"/review/queues/{queue.pk}/").content.decode()
    data = {"from": other_user.pk, "to": bob.pk}
    response = client.post(f"/review/queues/{queue.pk}/reassign/", data)
    assert response.status_code == 302
    eve_items = QueueItem.objects.filter(queue=queue, reviewer=other_user)
    assert [(i.position, i.done_by) for i in eve_items] == [(1, other_user)]  # her work stays
    bob_items = QueueItem.objects.filter(queue=queue, reviewer=bob).order_by("position")
    assert [i.position for i in bob_items] == [1, 2, 3]
    assert set(queue.reviewers.all()) == {other_user, bob}
    # All of someone's items handed on: they are no longer a reviewer.
    client.post(f"/review/queues/{queue.pk}/reassign/", {"from": bob.pk, "to": user.pk})
    assert set(queue.reviewers.all()) == {other_user, user}


def test_only_admins_hand_items_on_and_only_to_someone_who_may_review(
    client, user, other_user, bob, team, queue
):
    before = list(QueueItem.objects.values_list("pk", "reviewer_id", "position"))
    client.force_login(bob)
    response = client.post(
        f"/review/queues/{queue.pk}/reassign/", {"from": other_user.pk, "to": bob.pk}
    )
    assert response.status_code == 403
    viewer = User.objects.create_user("vic")
    team.add_member(viewer, Membership.Role.VIEWER)
    client.force_login(user)
    client.post(f"/review/queues/{queue.pk}/reassign/", {"from": other_user.pk, "to": viewer.pk})
    client.post(f"/review/queues/{queue.pk}/reassign/", {"from": other_user.pk, "to": "x"})
    assert list(QueueItem.objects.values_list("pk", "reviewer_id", "position")) == before


@pytest.mark.parametrize("field", ["from", "to"])
def test_handing_items_on_from_or_to_an_id_too_large_for_a_row_is_refused(
    client, user, other_user, bob, queue, field
):
    before = list(QueueItem.objects.values_list("pk", "reviewer_id", "position"))
    client.force_login(user)
    data = {"from": other_user.pk, "to": bob.pk, field: str(2**64)}
    response = client.post(f"/review/queues/{queue.pk}/reassign/", data)
    assert response.status_code == 302
    assert list(QueueItem.objects.values_list("pk", "reviewer_id", "position")) == before
