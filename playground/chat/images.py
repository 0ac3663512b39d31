"""Image attachments: decoded and checked by Pillow, re-encoded, stored by content hash.

Nothing is trusted from the browser: not the file name, not the declared type. The pixel cap
is checked from the header, before the full decode, so a decompression bomb never expands.
"""

from __future__ import annotations

import base64
import hashlib
import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, ImageOps, UnidentifiedImageError

# MPO is a JPEG carrying a second picture (a phone's depth map, a 3D pair): its first is
# the photo, and every browser shows the file as a JPEG.
ACCEPTED = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "GIF": "png"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class ImageRejected(Exception):
    """A plain reason the image was refused."""


@dataclass
class CleanImage:
    data: bytes
    extension: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.extension]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _limits() -> dict:
    return settings.PLAYGROUND_IMAGES


def read_upload(upload: UploadedFile) -> bytes:
    cap = _limits()["MAX_BYTES"]
    if upload.size is not None and upload.size > cap:
        raise ImageRejected(f"The image is over {cap // (1024 * 1024)} MB.")
    data = upload.read(cap + 1)
    if len(data) > cap:
        raise ImageRejected(f"The image is over {cap // (1024 * 1024)} MB.")
    return data


def clean(data: bytes) -> CleanImage:
    """Decode, check, orient, downscale and re-encode without metadata."""
    limits = _limits()
    image: Image.Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        millions = limits["MAX_PIXELS"] // 1_000_000
        raise ImageRejected(
            f"The image is too large (more than {millions} million pixels)."
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected("Only PNG, JPEG, WebP and GIF images can be attached.") from None
    except (OSError, ValueError, SyntaxError):
        # A known format cut inside its header: Pillow gives up while reading the header.
        raise ImageRejected("The image is damaged or incomplete.") from None
    if image.format not in ACCEPTED:
        raise ImageRejected("Only PNG, JPEG, WebP and GIF images can be attached.")
    width, height = image.size
    if width * height > limits["MAX_PIXELS"]:
        raise ImageRejected(
            f"The image is too large ({width}×{height} pixels; at most "
            f"{limits['MAX_PIXELS'] // 1_000_000} million)."
        )
    try:
        image.seek(0)  # an animated GIF contributes its first frame
        image.load()
    except (OSError, ValueError, SyntaxError):
        raise ImageRejected("The image is damaged or incomplete.") from None
    extension = ACCEPTED[image.format]
    image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha and extension != "jpeg" else "RGB")
    image.thumbnail((limits["MAX_SIDE"], limits["MAX_SIDE"]), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    # No exif/icc/info is passed on: EXIF (GPS, camera) and text chunks are dropped.
    if extension == "jpeg":
        image.save(out, "JPEG", quality=88, optimize=True)
    elif extension == "webp":
        image.save(out, "WEBP", quality=88)
    else:
        image.save(out, "PNG", optimize=True)
    return CleanImage(out.getvalue(), extension, image.width, image.height)


def store(owner, image: CleanImage):
    """An Attachment for this owner; the same bytes are stored once."""
    from playground.chat.models import Attachment

    digest = image.sha256
    existing = Attachment.objects.filter(owner=owner, sha256=digest).first()
    if existing is not None:
        return existing
    name = f"attachments/{digest[:2]}/{digest}.{image.extension}"
    if not default_storage.exists(name):
        default_storage.save(name, ContentFile(image.data))
    return Attachment.objects.create(
        owner=owner,
        file=name,
        sha256=digest,
        content_type=image.content_type,
        size=len(image.data),
        width=image.width,
        height=image.height,
    )


def data_url(attachment) -> str:
    with attachment.file.open("rb") as fh:
        encoded = base64.b64encode(fh.read()).decode()
    return f"data:{attachment.content_type};base64,{encoded}"
