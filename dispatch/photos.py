"""Photo store: content-addressed files on disk, type checked from the bytes, with thumbnails.

A photo's id is the SHA-256 of its bytes, so the same picture uploaded twice (a retried report, two reports of
the same scene) is stored once, an id can never point at different content, and a file can be checked against
its name. Blobs whose report failed are harmless orphans: the id is only reachable through a case.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from dispatch.domain import Refusal

# What the first bytes must be. The declared content type and the file name are never trusted.
MAGIC: tuple[tuple[str, bytes, bytes | None], ...] = (
    ("jpeg", b"\xff\xd8\xff", None),
    ("png", b"\x89PNG\r\n\x1a\n", None),
    ("webp", b"RIFF", b"WEBP"),  # RIFF <size> WEBP
)
PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
MEDIA_TYPE = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
PHOTO_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredPhoto:
    id: str
    kind: str  # jpeg | png | webp
    size: int
    width: int
    height: int


def sniff(data: bytes) -> str | None:
    """The image kind the bytes say they are, or None."""
    for kind, head, tag in MAGIC:
        if data.startswith(head) and (tag is None or data[8:12] == tag):
            return kind
    return None


def is_photo_id(value: str) -> bool:
    return bool(PHOTO_ID.match(value))


class PhotoStore:
    def __init__(self, root: Path, max_bytes: int, max_pixels: int, thumb_px: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.thumb_px = thumb_px

    # ------------------------------------------------------------ writing

    def put(self, data: bytes, name: str = "photo") -> StoredPhoto:
        """Check and store one photo; refuses with 413 (too big) or 422 (not a JPEG/PNG/WebP image)."""
        if len(data) > self.max_bytes:
            raise Refusal(
                413, "photo_too_large", f"{name}: {len(data)} bytes, over the limit of {self.max_bytes} bytes"
            )
        kind = sniff(data)
        if kind is None:
            raise Refusal(
                422, "photo_type", f"{name}: not a JPEG, PNG or WebP image (checked from its bytes)"
            )
        width, height = self._check_decodes(data, kind, name)
        photo_id = hashlib.sha256(data).hexdigest()
        path = self._original(photo_id)
        if not path.exists():
            _write_atomically(path, data)
        thumb = self._thumb(photo_id)
        if not thumb.exists():
            _write_atomically(thumb, self._make_thumbnail(data))
        return StoredPhoto(photo_id, kind, len(data), width, height)

    def _check_decodes(self, data: bytes, kind: str, name: str) -> tuple[int, int]:
        """The header must match the magic and the pixel count must be sane before anything is decoded."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format != PIL_FORMAT[kind]:
                    raise Refusal(422, "photo_type", f"{name}: the bytes are not a valid {kind} image")
                width, height = img.size
                if width * height > self.max_pixels:
                    raise Refusal(
                        422, "photo_dimensions", f"{name}: {width}×{height} pixels is over the limit"
                    )
                img.verify()
        except Refusal:
            raise
        except Exception:
            raise Refusal(422, "photo_type", f"{name}: the image is damaged or not a {kind} file") from None
        return width, height

    def _make_thumbnail(self, data: bytes) -> bytes:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)  # phones store rotation in EXIF; screens should not
            img.thumbnail((self.thumb_px, self.thumb_px))
            if img.mode not in ("RGB", "L"):
                background = Image.new("RGB", img.size, (255, 255, 255))
                background.paste(img, mask=img.convert("RGBA").split()[-1])
                img = background
            out = io.BytesIO()
            img.save(out, "JPEG", quality=80, optimize=True)  # no EXIF (and no GPS) in thumbnails
            return out.getvalue()

    # ------------------------------------------------------------ reading

    def open(self, photo_id: str, thumb: bool = False) -> tuple[Path, str] | None:
        """The file and media type of a stored photo, or None."""
        if not is_photo_id(photo_id):
            return None
        if thumb:
            path = self._thumb(photo_id)
            return (path, "image/jpeg") if path.exists() else None
        path = self._original(photo_id)
        if not path.exists():
            return None
        with path.open("rb") as f:
            kind = sniff(f.read(16))
        return (path, MEDIA_TYPE[kind]) if kind else None

    # ------------------------------------------------------------ layout: ab/abcdef… (256 folders)

    def _original(self, photo_id: str) -> Path:
        return self.root / "original" / photo_id[:2] / photo_id

    def _thumb(self, photo_id: str) -> Path:
        return self.root / "thumb" / photo_id[:2] / f"{photo_id}.jpg"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file and rename: a reader never sees half a photo, a crash leaves none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
