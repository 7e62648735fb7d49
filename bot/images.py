"""Image bytes: what type they are, and re-encoding one smaller so it fits Discord's upload limit."""

from __future__ import annotations

import io

from PIL import Image

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)


def sniff_image_type(head: bytes) -> str | None:
    """The file extension the leading bytes announce, or None when they are not an image we know."""
    for signature, extension in _SIGNATURES:
        if head.startswith(signature):
            return extension
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def shrink_to_fit(data: bytes, limit: int, *, min_side: int = 256) -> bytes | None:
    """Re-encode as JPEG, lowering the quality and then the size, until it is at most `limit` bytes.

    Returns None when even a small, low-quality version does not fit or the bytes are not an image.
    CPU-bound: call it in a worker thread.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    while True:
        for quality in (90, 80, 65):
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality, optimize=True)
            if buffer.tell() <= limit:
                return buffer.getvalue()
        width, height = image.size
        if min(width, height) * 3 // 4 < min_side:
            return None
        image = image.resize((width * 3 // 4, height * 3 // 4), Image.Resampling.LANCZOS)
