"""Import: the JSON export round-trips; OpenAI JSONL becomes one tree; bad files change nothing."""

from __future__ import annotations

import html
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from playground.accounts.models import Membership, Team
from playground.chat import budgets
from playground.chat.models import Conversation, Message
from playground.review import imports
from tests.test_review_export import HASH, download, tree  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db

TIMES = {"created", "updated"}


def without_times(data: dict) -> dict:
    return {
        **data,
        "conversation": {k: v for k, v in data["conversation"].items() if k not in TIMES},
        "messages": [{k: v for k, v in m.items() if k not in TIMES} for m in data["messages"]],
    }


def upload(client, user, name: str, content: bytes | str, space: str = ""):
    client.force_login(user)
    data = content.encode() if isinstance(content, str) else content
    return client.post("/review/import/", {"file": SimpleUploadedFile(name, data), "space": space})


def imported(response) -> Conversation:
    assert response.status_code == 302, html.unescape(response.content.decode())
    return Conversation.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))


def test_export_import_export_is_equal_apart_from_ids_and_times(client, user, tree):  # noqa: F811
    _, first = download(client, user, tree, "json")
    copy = imported(upload(client, user, "trip.json", first))
    assert copy.pk != tree.pk
    _, second = download(client, user, copy, "json")
    assert without_times(json.loads(second)) == without_times(json.loads(first))
    ask = copy.messages.get(parent=None)
    assert ask.attachments.get().sha256 == HASH and ask.created_by == user
    reply = ask.children.order_by("pk").first()
    url = reply.request_body["messages"][0]["content"][1]["image_url"]["url"]
    assert url == f"attachment:{ask.attachments.get().pk}"
    # The format a reply was asked in, and its signed thinking blocks, which a later turn in
    # the Messages format must send back as written.
    assert copy.wire_format == "messages"
    assert (reply.wire_format, reply.thinking_signatures) == (
        "messages",
        [{"chars": 8, "signature": "EqQBCkYIBxgC"}, {"chars": 0, "redacted": "EmwKAhgB"}],
    )


def test_jsonl_export_imports_as_the_same_tree(client, user, tree):  # noqa: F811
    _, first = download(client, user, tree, "jsonl")
    copy = imported(upload(client, user, "trip.jsonl", first))
    assert copy.system_prompt == "Be brief." and copy.title == "Oslo?"
    assert copy.messages.count() == 5  # the shared prefix is stored once
    _, second = download(client, user, copy, "jsonl")
    assert second == first


def test_openai_jsonl_with_parts_and_tools_imports(client, user):
    lines = [
        {"messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "It is 42.", "weight": 1},
        ]},
    ]  # fmt: skip
    copy = imported(upload(client, user, "ft.jsonl", "\n".join(map(json.dumps, lines))))
    roles = list(copy.messages.values_list("role", "text"))
    assert roles == [("user", "Hi"), ("assistant", ""), ("tool", "42"), ("assistant", "It is 42.")]


def jl(*lines: object) -> str:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)


def turn(role: str, content: object) -> dict:
    return {"role": role, "content": content}


ASK = {"messages": [turn("user", "a")]}
IMAGE = [{"type": "image_url", "image_url": {"url": "http://x"}}]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.json", '{"format": "playground.conversation",\n "version": 1,\n "c": {', "line 3"),
        ("x.json", '{"format": "other"}', "not a Playground export"),
        ("x.jsonl", jl(ASK, "{oops}"), "line 2"),
        ("x.jsonl", jl(ASK, {"messages": [turn("wizard", "b")]}), "line 2"),
        ("x.jsonl", jl({"messages": [turn("user", IMAGE)]}), "line 1: only text"),
        (
            "x.jsonl",
            jl(
                "",
                "",
                {"messages": [turn("system", "A"), turn("user", "a")]},
                {"messages": [turn("system", "B"), turn("user", "b")]},
            ),
            "line 4: its system prompt differs",
        ),
        ("x.json", b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_files_are_refused_with_their_line(client, user, name, content, message):
    response = upload(client, user, name, content)
    assert response.status_code == 400
    assert message in html.unescape(response.content.decode())
    assert not Conversation.objects.exists()


def export_text(messages: list[dict], **head) -> str:
    conversation = {"title": "T", "model": "m", "system_prompt": "", "params": {}, **head}
    start = json.dumps({"format": "playground.conversation", "version": 1,
                        "conversation": conversation})[:-1]  # fmt: skip
    return start + ', "messages": [\n' + ",\n".join(map(json.dumps, messages)) + "\n]}\n"


def msg(ident, parent=None, **extra):
    return {"id": ident, "parent": parent, "role": "user", "text": "x", **extra}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([msg(1), msg(2, parent=99)], 'line 3: "parent" 99 is not an earlier message'),
        ([msg(1), msg(2, parent=3), msg(3)], "line 3:"),
        ([msg(1), msg(1)], 'line 3: "id" must be a whole number not used before'),
        ([msg(1), msg(2, conversation=7)], "line 3: unknown field 'conversation'"),
        ([msg(1, role="root")], '"role" must be one of'),
        ([msg(1, usage={"a": 1}), msg(2, cost="lots")], 'line 3: "cost" must be a decimal'),
        ([msg(1, attachments=[{"sha256": "f" * 64}])], "image sha256:" + "f" * 64),
        ([msg(1, wire_format="grpc")], 'line 2: "wire_format" must be one of chat,'),
        ([msg(1, thinking_signatures=[{"chars": -1, "signature": "s"}])], "thinking_signatures"),
        ([msg(1, thinking_signatures=["s"])], '"thinking_signatures" needs "chars"'),
        ([msg(1, thinking_signatures=[{"chars": 0, "redacted": 7}])], '"signature" or "redacted"'),
    ],
)
def test_bad_records_are_refused_and_nothing_is_half_imported(client, user, messages, message):
    response = upload(client, user, "x.json", export_text(messages))
    assert response.status_code == 400
    assert message in html.unescape(response.content.decode())
    assert not Conversation.objects.exists() and not Message.objects.exists()


NOTE_TIMES = {"created": "2026-01-01T00:00:00+00:00", "updated": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.json", export_text([msg(1, role=["user"])]), 'line 2: "role" must be one of'),
        ("x.json", export_text([msg(1, status={})]), 'line 2: "status" must be one of'),
        (
            "x.json",
            export_text([msg(1, content_parts=[{"attachment": ["f" * 64]}])]),
            "line 2: an image part names an image",
        ),
        (
            "x.json",
            export_text(
                [{**msg(1), "annotations": [{"author": "ada", "thumbs": [1], **NOTE_TIMES}]}]
            ),
            'line 2: an annotation\'s "thumbs" is',
        ),
        ("x.json", export_text([msg(1)], wire_format=["chat"]), 'conversation "wire_format"'),
        ("x.jsonl", jl({"messages": [turn(["user"], "a")]}), 'line 1: message 1: "role"'),
    ],
)
def test_a_list_or_object_where_text_belongs_is_refused_not_a_crash(
    client, user, name, content, message
):
    # Checked by `in` against a set or dict, a list or object raised TypeError (a 500).
    response = upload(client, user, name, content)
    assert response.status_code == 400
    assert message in html.unescape(response.content.decode())
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    ("char", "named"),
    [("\x00", "a NUL character (\\u0000)"), ("\ud800", "a lone surrogate (\\ud800)")],
)
@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("x.json", lambda c: export_text([msg(1)], title=f"T{c}"), "line 1: the conversation: it"),
        ("x.json", lambda c: export_text([msg(1), msg(2, 1, text=c)]), "line 3: it"),
        (
            "x.json",
            lambda c: export_text([msg(1, role="assistant", request_body={"messages": [], c: 1})]),
            "line 2: it",
        ),
        (
            "x.json",
            lambda c: export_text(
                [{**msg(1), "comments": [{"author": "ada", "text": c, **NOTE_TIMES}]}]
            ),
            "line 2: it",
        ),
        ("x.jsonl", lambda c: jl(ASK, {"messages": [turn("user", c)]}), "line 2: it"),
    ],
)
def test_a_file_holding_a_nul_or_lone_surrogate_anywhere_is_refused_with_its_line(
    client, user, char, named, name, content, where
):
    # Its JSON escapes spell either: PostgreSQL keeps no NUL in text or jsonb, and no database
    # a lone surrogate, so the import failed with a 500 (on SQLite too, for a surrogate).
    response = upload(client, user, name, content(char))
    assert response.status_code == 400
    assert f"{where} holds {named}, which cannot be stored." in html.unescape(
        response.content.decode()
    )
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_deep_nesting_is_refused(client, user):
    deep = "[" * 100 + "]" * 100
    text = export_text([msg(1)]).replace('"params": {}', f'"params": {{"a": {deep}}}')
    response = upload(client, user, "x.json", text)
    assert response.status_code == 400 and "nested deeper than 32" in html.unescape(
        response.content.decode()
    )
    very_deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = upload(client, user, "x.jsonl", very_deep)
    assert response.status_code == 400 and "line 1: nested deeper" in html.unescape(
        response.content.decode()
    )
    assert not Conversation.objects.exists()


def test_oversized_files_are_refused_before_reading(client, user, settings):
    response = upload(client, user, "x.jsonl", b" " * (imports.MAX_BYTES + 1))
    assert response.status_code == 400 and "larger than 10 MB" in html.unescape(
        response.content.decode()
    )


def test_too_many_messages_are_refused(client, user, monkeypatch):
    monkeypatch.setattr(imports, "MAX_MESSAGES", 3)
    line = json.dumps(
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    )
    response = upload(client, user, "x.jsonl", f"{line}\n{line}\n")
    assert response.status_code == 400 and "line 2: more than 3" in html.unescape(
        response.content.decode()
    )


def test_a_failure_while_writing_leaves_nothing(client, user, monkeypatch):
    text = export_text([msg(1), msg(2, parent=1)])
    real = Message.objects.create
    calls = []

    def failing(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(Message.objects, "create", failing)
    with pytest.raises(RuntimeError):
        imports.import_export(user, None, text)
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_import_goes_into_the_chosen_team_space_only_if_allowed(client, user, other_user):
    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=user, role="member")
    viewer_team = Team.objects.create(name="Watch")
    Membership.objects.create(team=viewer_team, user=user, role="viewer")
    foreign = Team.objects.create(name="Elsewhere")
    Membership.objects.create(team=foreign, user=other_user, role="owner")
    text = export_text([msg(1)])
    copy = imported(upload(client, user, "x.json", text, space=str(team.pk)))
    assert copy.team == team and copy.owner == user
    for refused in (viewer_team, foreign):
        response = upload(client, user, "x.json", text, space=str(refused.pk))
        assert response.status_code == 400
    assert Conversation.objects.count() == 1


def test_imported_replies_count_as_no_spend_in_any_space_even_after_a_move(
    client,
    user,
    tree,  # noqa: F811
):
    """An imported reply keeps the cost it had where it ran, but spent nothing here: no
    space's Usage or budget counts it, and moving its conversation into a team (which takes
    the replies' spend along) does not start charging the team for it."""
    _, first = download(client, user, tree, "json")
    team = Team.create(name="Lab", owner=user)
    into_team = imported(upload(client, user, "trip.json", first, space=str(team.pk)))
    personal = imported(upload(client, user, "trip.json", first))
    assert personal.messages.filter(role="assistant", cost__gt=0).exists()
    assert not budgets.replies_in_space(user, None).filter(conversation=personal).exists()
    assert not budgets.replies_in_space(user, team.pk).exists()
    personal.move_to(team, user)
    assert not budgets.replies_in_space(user, team.pk).exists()
    assert into_team.messages.filter(role="assistant", cost__gt=0).exists()


def test_images_are_only_matched_among_those_the_importer_may_see(client, user, other_user, tree):  # noqa: F811
    _, first = download(client, user, tree, "json")
    response = upload(client, other_user, "trip.json", first)
    assert response.status_code == 400 and f"sha256:{HASH}" in html.unescape(
        response.content.decode()
    )


def test_import_needs_a_login(client, user):
    response = client.post("/review/import/", {})
    assert response.status_code == 302 and "/login/" in response["Location"]


# -- annotations, comments and the review status travel with the conversation --------------


@pytest.fixture
def reviewed(user, other_user, tree):  # noqa: F811
    """The tree moved into a team, annotated by two people, discussed, and flagged."""
    from playground.review.models import Annotation, Comment, Label, Mention, ReviewStatus

    team = Team.create(name="Lab", owner=user)
    team.add_member(other_user, Membership.Role.MEMBER)
    tree.team = team
    tree.save()
    first = tree.messages.filter(role="assistant").order_by("pk").first()
    good = Label.objects.create(team=team, owner=user, name="Good", colour="#16a34a")
    terse = Label.objects.create(team=team, owner=user, name="Terse", colour="#f59e0b")
    mine = Annotation.objects.create(message=first, author=user, thumbs=1, score=4)
    mine.labels.set([terse, good])
    Annotation.objects.create(message=first, author=other_user, thumbs=-1)
    comment = Comment.objects.create(message=first, author=user, text="@eve is this right?\n<b>")
    Mention.objects.create(comment=comment, user=other_user)
    Comment.objects.create(message=first, author=other_user, text="Yes.")
    ReviewStatus.set(tree, "flagged", other_user)
    return tree


def test_annotations_comments_and_status_round_trip(client, user, other_user, reviewed):
    from playground.review.models import Annotation, Mention, ReviewStatus

    _, first = download(client, user, reviewed, "json")
    data = json.loads(first)
    assert data["conversation"]["review"]["status"] == "flagged"
    assert data["conversation"]["review"]["set_by"] == "eve"
    notes = data["messages"][1]["annotations"]
    assert [(n["author"], n["thumbs"], n["score"]) for n in notes] == [
        ("ada", "up", 4),
        ("eve", "down", None),
    ]
    assert [x["name"] for x in notes[0]["labels"]] == ["Good", "Terse"]
    assert data["messages"][1]["comments"][0]["mentions"] == ["eve"]
    copy = imported(upload(client, user, "trip.json", first, space=str(reviewed.team_id)))
    _, second = download(client, user, copy, "json")
    again = json.loads(second)
    # The importer's own rating and comment come back as they were, with the file's times;
    # eve's are left out (an import writes in no one else's name), and so is who set the
    # status, which eve did.
    assert again["messages"][1]["annotations"] == notes[:1]
    assert again["messages"][1]["comments"] == data["messages"][1]["comments"][:1]
    assert again["conversation"]["review"]["set_by"] is None
    assert ReviewStatus.objects.get(conversation=copy).status == "flagged"
    assert Annotation.objects.filter(message__conversation=copy).count() == 1
    for export in (data, again):
        export["conversation"]["review"]["set_by"] = None
        export["messages"][1]["annotations"] = export["messages"][1]["comments"] = []
    assert without_times(again) == without_times(data)
    # The copy's mention is kept but not news: eve's inbox still has only the original.
    assert Mention.objects.filter(user=other_user, read_at__isnull=True).count() == 1


def test_import_refuses_mentions_of_people_outside_the_space(client, user, reviewed):
    """ada's comment mentions eve, who cannot see ada's personal space."""
    from playground.review.models import Annotation

    _, first = download(client, user, reviewed, "json")
    response = upload(client, user, "trip.json", first)  # into ada's personal space
    body = html.unescape(response.content.decode())
    assert response.status_code == 400 and "line 3: 'eve' has no account" in body
    assert Conversation.objects.count() == 1 and Annotation.objects.count() == 2


def test_a_label_missing_from_the_space_is_added_only_by_its_admins(
    client, user, other_user, reviewed
):
    from playground.review.models import Annotation, Label

    theirs = Annotation.objects.get(author=other_user)
    theirs.labels.set(Label.objects.filter(name="Terse"))
    _, first = download(client, user, reviewed, "json")
    Label.objects.filter(name="Terse").delete()
    refused = upload(client, other_user, "trip.json", first, space=str(reviewed.team_id))
    assert refused.status_code == 400
    assert "label 'Terse' is not in this space" in html.unescape(refused.content.decode())
    assert Conversation.objects.count() == 1
    imported(upload(client, user, "trip.json", first, space=str(reviewed.team_id)))  # the owner
    assert Label.objects.get(name="Terse").colour == "#f59e0b"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ([{"author": "ada", "score": 9, "created": "2026-01-01T00:00:00+00:00",
           "updated": "2026-01-01T00:00:00+00:00"}], '"score" is 1 to 5'),
        ([{"author": "ada", "thumbs": "sideways"}], '"thumbs" is "up", "down"'),
        ([{"author": "ada", "created": "yesterday", "updated": "x"}], "times with a zone"),
        # Valid ISO, but before year 1 once in UTC: saving it raised OverflowError (a 500).
        ([{"author": "ada", "created": "0001-01-01T00:00:00+01:00",
           "updated": "2026-01-01T00:00:00+00:00"}], "times with a zone"),
        ([{"author": "ada", "labels": [{"name": "x", "colour": "red"}],
           "created": "2026-01-01T00:00:00+00:00", "updated": "2026-01-01T00:00:00+00:00"}],
         "colour"),
        ([{"author": "ada", "evil": 1}], "unknown fields"),
    ],
)  # fmt: skip
def test_malformed_annotations_are_refused_with_their_line(client, user, annotations, message):
    record = {**msg(1), "annotations": annotations}
    response = upload(client, user, "x.json", export_text([record]))
    body = html.unescape(response.content.decode())
    assert response.status_code == 400 and message in body and "line 2" in body
    assert not Conversation.objects.exists()


def test_a_saved_request_cannot_name_an_image_by_row_id(
    client, user, other_user, settings, tmp_path
):
    """An export names images by hash; a crafted file naming `attachment:<id>` made View code
    (and a re-run) read that row's image, whoever's it was."""
    import base64

    from playground.chat.models import Attachment

    settings.MEDIA_ROOT = str(tmp_path)
    settings.PLAYGROUND_PROVIDER_BASE_URLS = {}
    (tmp_path / "attachments").mkdir()
    (tmp_path / "attachments" / "eve.png").write_bytes(b"EVE-PRIVATE-PIXELS")
    theirs = Attachment.objects.create(
        owner=other_user, file="attachments/eve.png", sha256="cd" * 32,
        content_type="image/png", size=18, width=1, height=1,
    )  # fmt: skip
    image = {"type": "image_url", "image_url": {"url": f"attachment:{theirs.pk}"}}
    body = {"model": "gemma", "messages": [{"role": "user", "content": [image]}]}
    reply = msg(2, parent=1, role="assistant", model="empiriolabs:gemma-4-e4b", request_body=body)
    response = upload(client, user, "x.json", export_text([msg(1), reply]))
    if response.status_code == 302:  # imported: the image must not reach the importer
        copy = imported(response).messages.get(role="assistant")
        page = client.get(f"/m/{copy.pk}/code/", headers={"HX-Request": "true"})
        assert base64.b64encode(b"EVE-PRIVATE-PIXELS").decode() not in page.content.decode()
    assert response.status_code == 400
    assert 'line 3: "request_body" names an image by row id' in html.unescape(
        response.content.decode()
    )


def test_an_imported_label_keeps_the_label_sets_rules(client, user, reviewed, monkeypatch):
    """Names are unique per space whatever their case, and a space has at most MAX_LABELS:
    the labels page refuses a second "good" beside "Good", and so does import."""
    from playground.review import annotating
    from playground.review.models import Label

    _, first = download(client, user, reviewed, "json")
    Label.objects.filter(name="Good").update(name="good")
    copy = imported(upload(client, user, "trip.json", first, space=str(reviewed.team_id)))
    assert sorted(Label.objects.values_list("name", flat=True)) == ["Terse", "good"]
    labels = Label.objects.filter(annotations__message__conversation=copy)
    assert sorted(labels.values_list("name", flat=True)) == ["Terse", "good"]

    Label.objects.filter(name="Terse").delete()
    monkeypatch.setattr(annotating, "MAX_LABELS", 1)
    response = upload(client, user, "trip.json", first, space=str(reviewed.team_id))
    assert response.status_code == 400
    assert "at most 1 labels" in html.unescape(response.content.decode())
    assert Label.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"messages": "x"},
        {"messages": ["x"]},
        {"messages": [{"role": "user", "content": ["x"]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
    ],
)
def test_a_saved_request_not_shaped_as_one_is_refused(client, user, settings, body):
    """View code and re-runs read a saved request as the playground writes it: a crafted one
    crashed the import (an image_url that is no object) or View code (the others)."""
    settings.PLAYGROUND_PROVIDER_BASE_URLS = {}
    reply = msg(2, parent=1, role="assistant", model="empiriolabs:gemma-4-e4b", request_body=body)
    response = upload(client, user, "x.json", export_text([msg(1), reply]))
    if response.status_code == 302:
        copy = imported(response).messages.get(role="assistant")
        client.get(f"/m/{copy.pk}/code/", headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert 'line 3: "request_body" is not a saved chat request' in html.unescape(
        response.content.decode()
    )


def test_an_image_part_without_its_image_is_refused(client, user):
    # The transcript links each image part's attachment: one without crashed the page.
    response = upload(
        client, user, "x.json", export_text([msg(1, content_parts=[{"type": "image"}])])
    )
    if response.status_code == 302:
        client.get(f"/c/{imported(response).pk}/")
    assert response.status_code == 400
    assert "line 2: an image part names an image" in html.unescape(response.content.decode())


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({}, "an image part names an image"),
        ({"type": "text", "text": "x"}, "each content part must be an image part"),
        ({"type": "audio", "attachment": HASH}, "each content part must be an image part"),
        ({"type": "image", "attachment": HASH, "x": 1}, "each content part must be an image"),
    ],
)
def test_a_content_part_that_is_no_image_part_is_refused(client, user, part, message):
    # The transcript draws every content part as an image: any other part crashed the page
    # (for everyone in the space), so only the image parts the playground writes come in.
    attached = msg(1, content_parts=[part], attachments=[{"sha256": HASH}])
    response = upload(client, user, "x.json", export_text([attached]))
    if response.status_code == 302:
        client.get(f"/c/{imported(response).pk}/")
    assert response.status_code == 400
    assert f"line 2: {message}" in html.unescape(response.content.decode())
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.json", export_text([msg(1, text="a\x00b")]), "line 2: it holds a NUL character"),
        (
            "x.json",
            export_text([msg(1), msg(2, parent=1, usage={"\\ud800": 1})]).replace("\\\\", "\\"),
            "line 3: it holds a lone surrogate (\\ud800)",
        ),
        ("x.json", export_text([msg(1)], title="\\udfff").replace("\\\\", "\\"), "line 1:"),
        (
            "x.jsonl",
            jl(ASK, {"messages": [turn("user", "\\udc00")]}).replace("\\\\", "\\"),
            "line 2:",
        ),
    ],
)
def test_what_no_database_can_store_is_refused_not_a_crash(client, user, name, content, message):
    # A lone surrogate failed the save (a 500), or, in a JSON key, every later export; a NUL
    # fails the save on PostgreSQL. storable.py names both.
    response = upload(client, user, name, content)
    assert response.status_code == 400
    text = html.unescape(response.content.decode())
    assert message in text and "cannot be stored" in text
    assert not Conversation.objects.exists()


GEMMA = "empiriolabs:gemma-4-e4b"


@pytest.mark.parametrize(
    ("head", "message"),
    [
        # Regenerate and edit send the saved parameters as they are, after the model: a
        # "model" there would have asked for another model than the one budgets and costs
        # are counted for, and "n" for many replies at once, on the space's key.
        ({"model": GEMMA, "params": {"model": "gpt-5", "n": 64}}, "model is not a parameter"),
        ({"model": GEMMA, "params": {"temperature": "hot"}}, "temperature"),
        ({"model": GEMMA, "system_prompt": "x" * 50_001}, "system prompt"),
        ({"model": "elsewhere:model", "params": {"temperature": 0.5}}, "elsewhere:model"),
    ],
)
def test_conversation_settings_are_checked_as_the_panel_checks_them(client, user, head, message):
    response = upload(client, user, "x.json", export_text([msg(1)], **head))
    assert response.status_code == 400
    text = html.unescape(response.content.decode())
    assert "line 1: conversation settings" in text and message in text
    assert not Conversation.objects.exists()


def test_valid_settings_of_a_known_model_import_as_they_are(client, user):
    params = {"temperature": 0.2, "seed": 7}
    text = export_text([msg(1)], model=GEMMA, params=params)
    copy = imported(upload(client, user, "x.json", text))
    assert (copy.model, copy.params) == (GEMMA, params)
    # A model this server does not offer comes in without parameters to check.
    other = imported(upload(client, user, "x.json", export_text([msg(1)], model="elsewhere:m")))
    assert (other.model, other.params) == ("elsewhere:m", {})


# -- a History selection (several conversations in one file) --------------------------------


def download_selection(client, user, *conversations: Conversation) -> str:
    client.force_login(user)
    response = client.post("/review/bulk/", {"c": [c.pk for c in conversations], "export": "json"})
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


def test_a_history_selection_exported_as_json_imports_as_its_conversations(
    client,
    user,
    tree,  # noqa: F811
):
    second = Conversation.objects.create(owner=user, title="Second", model=tree.model)
    ask = Message.objects.create(conversation=second, role="user", text="Hi?", created_by=user)
    Message.objects.create(conversation=second, role="assistant", parent=ask, text="Hello.")
    first = download_selection(client, user, tree, second)
    response = upload(client, user, "history-selection.json", first)
    assert response.status_code == 302, html.unescape(response.content.decode())
    copies = list(Conversation.objects.exclude(pk__in=[tree.pk, second.pk]).order_by("pk"))
    assert [c.title for c in copies] == ["Trip", "Second"]
    for original, copy in zip([tree, second], copies, strict=True):
        texts = list(copy.messages.order_by("pk").values_list("role", "text"))
        assert texts == list(original.messages.order_by("pk").values_list("role", "text"))
    again = json.loads(download_selection(client, user, *copies))
    assert [without_times(c) for c in again["conversations"]] == [
        without_times(c) for c in json.loads(first)["conversations"]
    ]


def test_a_bad_conversation_in_a_selection_refuses_the_whole_file_naming_it(
    client,
    user,
    tree,  # noqa: F811
):
    second = Conversation.objects.create(owner=user, title="Second", model=tree.model)
    Message.objects.create(conversation=second, role="user", text="Hi?", created_by=user)
    text = download_selection(client, user, tree, second)
    laid_out = text.replace('"role": "user", "text": "Hi?"', '"role": "wizard", "text": "Hi?"')
    response = upload(client, user, "history-selection.json", laid_out)
    assert response.status_code == 400
    line = text.splitlines().index(next(x for x in text.splitlines() if '"Hi?"' in x)) + 1
    assert f'line {line}: "role" must be' in html.unescape(response.content.decode())
    data = json.loads(laid_out)  # on one line: named by its place
    response = upload(client, user, "history-selection.json", json.dumps(data))
    assert "conversation 2, message 1" in html.unescape(response.content.decode())
    assert Conversation.objects.count() == 2


# -- who wrote a review: an import writes in no one's name but the importer's ----------------


def test_an_import_cannot_put_words_in_a_teammates_name(client, user, other_user):
    """A crafted file names eve, a member of the space, as the author of a rating, a comment
    and the review status: they come in as no one's but the importer's own."""
    from playground.review.models import Annotation, Comment, ReviewStatus

    team = Team.create(name="Lab", owner=user)
    team.add_member(other_user, Membership.Role.MEMBER)
    when = "2026-01-01T00:00:00+00:00"
    reply = {
        **msg(2, parent=1, role="assistant"),
        "annotations": [
            {"author": "eve", "thumbs": "down", "score": 1, "created": when, "updated": when},
            {"author": "ada", "thumbs": "up", "created": when, "updated": when},
        ],
        "comments": [
            {"author": "eve", "text": "I made this up.", "created": when},
            {"author": "ada", "text": "Looks fine.", "mentions": ["eve"], "created": when},
        ],
    }
    review = {"status": "approved", "set_by": "eve", "set_at": when}
    text = export_text([msg(1), reply], review=review)
    response = upload(client, user, "forged.json", text, space=str(team.pk))
    copy = imported(response)
    assert not Annotation.objects.filter(author=other_user).exists()
    assert not Comment.objects.filter(author=other_user).exists()
    assert list(Annotation.objects.values_list("author__username", "thumbs")) == [("ada", 1)]
    assert list(Comment.objects.values_list("author__username", "text")) == [("ada", "Looks fine.")]
    status = ReviewStatus.objects.get(conversation=copy)
    assert (status.status, status.set_by) == ("approved", None)
    page = html.unescape(client.get(response["Location"]).content.decode())
    assert "1 rating and 1 comment by other people were left out" in page
