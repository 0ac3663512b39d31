"""Export: JSON with everything (ids replaced, images by hash), OpenAI JSONL, Markdown, streamed."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.http import StreamingHttpResponse

from playground.chat.models import Attachment, Conversation, Message
from tests.conftest import SECRET_KEY_VALUE

pytestmark = pytest.mark.django_db

HASH = "ab" * 32


@pytest.fixture
def tree(user):
    """system prompt; a user turn with an image; two sibling replies; a follow-up on one."""
    conversation = Conversation.objects.create(
        owner=user,
        title="Trip",
        model="empiriolabs:gemma-4-e4b",
        system_prompt="Be brief.",
        params={"temperature": 0.2},
        wire_format="messages",
    )
    image = Attachment.objects.create(
        owner=user, file="attachments/x.png", sha256=HASH, content_type="image/png",
        size=10, width=2, height=3,
    )  # fmt: skip
    ask = Message.objects.create(
        conversation=conversation, role="user", text="Oslo?", created_by=user,
        content_parts=[{"type": "image", "attachment": image.pk}],
    )  # fmt: skip
    ask.attachments.add(image)
    body = {
        "model": "gemma",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Oslo?"},
            {"type": "image_url", "image_url": {"url": f"attachment:{image.pk}"}},
        ]}],
    }  # fmt: skip
    first = Message.objects.create(
        conversation=conversation, role="assistant", parent=ask, text="Fjords.",
        request_body=body, usage={"prompt_tokens": 5, "completion_tokens": 2},
        ttft_ms=12.5, total_ms=40.0, tokens_per_second=50.0, cost=Decimal("0.000120"),
        reasoning="thinking", finish_reason="stop", wire_format="messages",
        thinking_signatures=[
            {"chars": 8, "signature": "EqQBCkYIBxgC"}, {"chars": 0, "redacted": "EmwKAhgB"}
        ],
    )  # fmt: skip
    Message.objects.create(
        conversation=conversation, role="assistant", parent=ask, text="Museums.",
        status="stopped",
    )  # fmt: skip
    more = Message.objects.create(
        conversation=conversation, role="user", parent=first, text="=cmd|' /C calc'!A0"
    )
    Message.objects.create(
        conversation=conversation, role="assistant", parent=more, text="Sure.",
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    )  # fmt: skip
    return conversation


def download(client, user, conversation, fmt) -> tuple[StreamingHttpResponse, str]:
    client.force_login(user)
    response = client.get(f"/review/c/{conversation.pk}/export.{fmt}")
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)  # streamed, not buffered
    return response, b"".join(response.streaming_content).decode()


def test_json_export_keeps_the_tree_requests_usage_timings_and_images_by_hash(
    client, user, tree, api_key
):
    response, body = download(client, user, tree, "json")
    assert response["Content-Disposition"] == 'attachment; filename="trip.json"'
    assert SECRET_KEY_VALUE not in body and "ada" not in body
    data = json.loads(body)
    assert data["format"] == "playground.conversation" and data["version"] == 1
    assert data["conversation"]["system_prompt"] == "Be brief."
    assert data["conversation"]["params"] == {"temperature": 0.2}
    messages = data["messages"]
    assert [(m["id"], m["parent"]) for m in messages] == [
        (1, None), (2, 1), (3, 1), (4, 2), (5, 4)
    ]  # fmt: skip
    ask, first = messages[0], messages[1]
    assert ask["attachments"] == [
        {"sha256": HASH, "content_type": "image/png", "size": 10, "width": 2, "height": 3}
    ]
    assert ask["content_parts"] == [{"type": "image", "attachment": HASH}]
    image_part = first["request_body"]["messages"][0]["content"][1]
    assert image_part["image_url"]["url"] == f"sha256:{HASH}"  # not the row id
    assert first["usage"] == {"prompt_tokens": 5, "completion_tokens": 2}
    assert (first["ttft_ms"], first["total_ms"], first["cost"]) == (12.5, 40.0, "0.000120")
    assert first["reasoning"] == "thinking" and messages[2]["status"] == "stopped"


def test_jsonl_export_is_one_openai_line_per_path(client, user, tree):
    _, body = download(client, user, tree, "jsonl")
    lines = [json.loads(line) for line in body.splitlines()]
    assert [[m["content"] for m in line["messages"]] for line in lines] == [
        ["Be brief.", "Oslo?", "Fjords.", "=cmd|' /C calc'!A0", "Sure."],
        ["Be brief.", "Oslo?", "Museums."],
    ]
    assert lines[0]["messages"][0]["role"] == "system"
    assert lines[0]["messages"][-1]["tool_calls"][0]["id"] == "c1"


def test_markdown_export_reads_as_the_transcript(client, user, tree):
    response, body = download(client, user, tree, "md")
    assert response["Content-Type"].startswith("text/markdown")
    assert body.startswith("# Trip\n")
    assert "> Be brief." in body and "Fjords." in body
    assert "## Assistant (another branch)" in body
    assert f"sha256:{HASH}" in body


def test_only_someone_who_may_see_the_conversation_can_export(client, other_user, tree):
    client.force_login(other_user)
    for fmt in ("json", "jsonl", "md"):
        assert client.get(f"/review/c/{tree.pk}/export.{fmt}").status_code == 404


def test_an_unknown_format_is_404(client, user, tree):
    client.force_login(user)
    assert client.get(f"/review/c/{tree.pk}/export.exe").status_code == 404


def test_the_panel_links_the_exports(client, user, tree):
    client.force_login(user)
    body = client.get(f"/c/{tree.pk}/").content.decode()
    for fmt in ("json", "jsonl", "md"):
        assert f'href="/review/c/{tree.pk}/export.{fmt}"' in body


def test_the_json_export_is_written_a_message_at_a_time(client, user, tree):
    client.force_login(user)
    response = client.get(f"/review/c/{tree.pk}/export.json")
    chunks = list(response.streaming_content)
    assert len(chunks) == 1 + tree.messages.count() + 1  # head, each message, tail


def test_exports_carry_the_review(client, user, tree):
    from playground.review.models import Annotation, Comment, ReviewStatus

    reply = tree.messages.filter(role="assistant").order_by("pk").first()
    Annotation.objects.create(message=reply, author=user, thumbs=1, score=5)
    Comment.objects.create(message=reply, author=user, text="Spot on.")
    ReviewStatus.set(tree, "approved", user)
    _, md = download(client, user, tree, "md")
    assert "Review status: approved" in md
    assert "*Review by ada: thumbs up · score 5/5*" in md and "> Spot on." in md
    _, body = download(client, user, tree, "json")
    data = json.loads(body)
    assert data["conversation"]["review"]["status"] == "approved"
    assert data["messages"][1]["comments"][0]["text"] == "Spot on."
    assert data["messages"][0]["annotations"] == [] and data["messages"][0]["comments"] == []
