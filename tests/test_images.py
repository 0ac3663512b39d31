"""Image attachments: checked by decoding, re-encoded without metadata, sent as image parts,
and served only to people who may see them."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

import pytest
from channels.db import database_sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from playground.chat.models import Attachment, Conversation, Message
from tests.html import has

HX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def image_bytes(fmt: str, size=(40, 30), mode="RGB", **save) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else None).save(out, fmt, **save)
    return out.getvalue()


def upload(client, data: bytes, name="image.png", content_type="image/png"):
    file = SimpleUploadedFile(name, data, content_type=content_type)
    return client.post("/attachments/", {"images": file}, headers=HX)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), color) for color in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "stored_type"),
    [
        (image_bytes("PNG"), "image/png"),
        (image_bytes("JPEG"), "image/jpeg"),
        (image_bytes("WEBP"), "image/webp"),
        (animated_gif(), "image/png"),
        # A JPEG with a second picture (a phone's depth map, a 3D pair): Pillow calls it MPO.
        (
            image_bytes("MPO", save_all=True, append_images=[Image.new("RGB", (40, 30))]),
            "image/jpeg",
        ),
    ],
    ids=["png", "jpeg", "webp", "gif", "mpo"],
)
def test_each_accepted_format_is_stored_and_shown_as_a_thumbnail(client, user, data, stored_type):
    client.force_login(user)
    response = upload(client, data, name="anything.bin", content_type="application/octet-stream")
    attachment = Attachment.objects.get()
    assert attachment.content_type == stored_type and attachment.owner == user
    page = response.content.decode()
    assert has(page, "input", name="attachment", value=str(attachment.pk))
    assert has(page, "img", src=f"/attachments/{attachment.pk}/")
    assert attachment.file.name.startswith(f"attachments/{attachment.sha256[:2]}/")
    with Image.open(attachment.file.open("rb")) as stored:
        assert getattr(stored, "n_frames", 1) == 1  # a GIF keeps its first frame


@pytest.mark.django_db
def test_images_are_downscaled_and_stripped_of_metadata(client, user):
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {2: (59.0, 54.0, 0.0)}  # GPS latitude
    data = image_bytes("JPEG", size=(3072, 1024), exif=exif.tobytes())
    assert b"SpyCam" in data
    client.force_login(user)
    upload(client, data, content_type="image/jpeg")
    attachment = Attachment.objects.get()
    assert (attachment.width, attachment.height) == (1536, 512)
    stored = attachment.file.open("rb").read()
    assert b"SpyCam" not in stored
    with Image.open(io.BytesIO(stored)) as image:
        assert not image.getexif()


@pytest.mark.django_db
def test_the_same_image_is_stored_once(client, user):
    client.force_login(user)
    data = image_bytes("PNG")
    upload(client, data)
    upload(client, data)
    assert Attachment.objects.count() == 1


def png_bomb(width: int, height: int) -> bytes:
    """A real, tiny PNG whose header promises width × height 1-bit pixels."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


REFUSALS = {
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
        "image.svg",
        "Only PNG, JPEG, WebP and GIF",
    ),
    "html renamed png": (
        b"<html><script>alert(1)</script></html>",
        "cat.png",
        "Only PNG, JPEG, WebP and GIF",
    ),
    "truncated": (image_bytes("PNG", size=(300, 300))[:200], "cut.png", "damaged or incomplete"),
    # Cut inside a header segment: Pillow fails while opening, before any pixel is read.
    "truncated in the header": (
        image_bytes("JPEG", size=(300, 300))[:200],
        "cut.jpg",
        "damaged or incomplete",
    ),
    "bomb": (png_bomb(20000, 20000), "bomb.png", "The image is too large"),
    "bomb under pillow's own limit": (
        png_bomb(9000, 8000),
        "bomb.png",
        "too large (9000×8000 pixels; at most 50 million)",
    ),
    "bmp": (image_bytes("BMP"), "old.bmp", "Only PNG, JPEG, WebP and GIF"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(REFUSALS))
def test_it_refuses_what_is_not_a_safe_image(client, user, case):
    data, name, reason = REFUSALS[case]
    client.force_login(user)
    response = upload(client, data, name=name)
    assert response.status_code == 200
    assert reason in response.content.decode()
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_it_refuses_an_image_over_the_byte_cap(client, user):
    noise = Image.frombytes("RGB", (2000, 1800), os.urandom(2000 * 1800 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG", compress_level=0)
    assert out.tell() > 10 * 1024 * 1024
    client.force_login(user)
    response = upload(client, out.getvalue(), name="noise.png")
    assert "over 10 MB" in response.content.decode()
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_images_are_served_only_to_people_who_may_see_them(client, user, other_user, conversation):
    client.force_login(user)
    upload(client, image_bytes("PNG"))
    attachment = Attachment.objects.get()
    response = client.get(f"/attachments/{attachment.pk}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    client.force_login(other_user)
    assert client.get(f"/attachments/{attachment.pk}/").status_code == 404


@pytest.mark.django_db
def test_a_teammate_sees_the_images_of_a_shared_conversation(client, user, other_user):
    from playground.accounts.models import Membership, Team

    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=other_user, role="viewer")
    shared = Conversation.objects.create(owner=user, team=team, model="x")
    client.force_login(user)
    upload(client, image_bytes("PNG"))
    attachment = Attachment.objects.get()
    message = Message.objects.create(
        conversation=shared,
        role="user",
        text="see",
        content_parts=[{"type": "image", "attachment": attachment.pk}],
    )
    message.attachments.add(attachment)
    client.force_login(other_user)
    assert client.get(f"/attachments/{attachment.pk}/").status_code == 200
    page = client.get(f"/c/{shared.pk}/").content.decode()
    assert has(page, "img", src=f"/attachments/{attachment.pk}/")


@pytest.mark.django_db
def test_the_attach_control_follows_the_models_capability(client, user, conversation):
    client.force_login(user)
    assert has(client.get(f"/c/{conversation.pk}/").content, "input", id="image-input")
    conversation.model = "aimlapi:google/gemma-3n-e4b-it"
    conversation.save()
    assert not has(client.get(f"/c/{conversation.pk}/").content, id="image-input")


@database_sync_to_async
def stored_attachment(user) -> Attachment:
    from playground.chat import images

    return images.store(user, images.clean(image_bytes("PNG", size=(8, 6))))


@pytest.mark.django_db(transaction=True)
async def test_images_go_upstream_as_image_parts_and_the_snapshot_refers_to_them(
    upstream, user, api_key, conversation, connect, settings, tmp_path
):
    attachment = await stored_attachment(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("What is this?", attachment=[str(attachment.pk)])
    await socket.until(lambda f: "status-complete" in f)
    content = upstream.requests[-1].body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    url = content[1]["image_url"]["url"]
    assert content[1]["type"] == "image_url" and url.startswith("data:image/png;base64,")
    stored = await database_sync_to_async(lambda: attachment.file.open("rb").read())()
    assert base64.b64decode(url.split(",", 1)[1]) == stored
    reply = await Message.objects.filter(role="assistant").alast()
    saved = reply.request_body["messages"][-1]["content"][1]
    assert saved == {"type": "image_url", "image_url": {"url": f"attachment:{attachment.pk}"}}
    assert "base64" not in str(reply.request_body)


@pytest.mark.django_db(transaction=True)
async def test_a_model_without_images_refuses_them(upstream, user, conversation, connect):
    from playground.accounts.models import ApiKey

    await database_sync_to_async(ApiKey.store)(provider="aimlapi", plaintext="k" * 12, user=user)
    attachment = await stored_attachment(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "See", model="aimlapi:google/gemma-3n-e4b-it", attachment=str(attachment.pk)
    )
    assert "does not accept images" in await socket.until(lambda f: "composer-error" in f)
    assert upstream.requests == []


@pytest.mark.django_db(transaction=True)
async def test_someone_elses_attachment_cannot_be_sent(
    upstream, user, other_user, api_key, conversation, connect
):
    theirs = await stored_attachment(other_user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Steal", attachment=str(theirs.pk))
    assert "no longer available" in await socket.until(lambda f: "composer-error" in f)
    assert upstream.requests == []


@pytest.mark.django_db
def test_view_code_carries_the_images_as_they_were_sent(client, user, conversation):
    client.force_login(user)
    upload(client, image_bytes("PNG"))
    attachment = Attachment.objects.get()
    body = {
        "model": "gemma-4-e4b",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": f"attachment:{attachment.pk}"}},
                ],
            }
        ],
    }
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        model="empiriolabs:gemma-4-e4b",
        request_body=body,
    )
    page = client.get(f"/m/{reply.pk}/code/").content.decode()
    assert "data:image/png;base64," in page and "attachment:" not in page


@pytest.mark.django_db
def test_uploads_are_limited_per_minute(client, user, settings):
    settings.PLAYGROUND_IMAGES = {**settings.PLAYGROUND_IMAGES, "MAX_PER_MINUTE": 2}
    client.force_login(user)
    upload(client, image_bytes("PNG", size=(10, 10)))
    upload(client, image_bytes("PNG", size=(11, 10)))
    response = upload(client, image_bytes("PNG", size=(12, 10)))
    assert "Too many images in the last minute" in response.content.decode()
    assert Attachment.objects.count() == 2


@pytest.mark.django_db
def test_uploading_the_same_image_again_counts_toward_the_limit(client, user, settings):
    # It makes no new row (the bytes are stored once), but it is decoded and re-encoded again.
    settings.PLAYGROUND_IMAGES = {**settings.PLAYGROUND_IMAGES, "MAX_PER_MINUTE": 2}
    client.force_login(user)
    for _ in range(2):
        upload(client, image_bytes("PNG", size=(10, 10)))
    response = upload(client, image_bytes("PNG", size=(10, 10)))
    assert "Too many images in the last minute" in response.content.decode()
