"""Images the fake WaveSpeed serves: real PNG/JPEG/WebP bytes made with Pillow, cached by their recipe."""

from __future__ import annotations

import functools
import io
import random

from PIL import Image

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


@functools.lru_cache(maxsize=32)
def make_image(width: int, height: int, fmt: str = "png", noise: bool = False, seed: int = 0) -> bytes:
    """An image of the given size. `noise=True` makes it incompressible (PNG of noise is about
    3 bytes per pixel), which is how tests get files over Discord's upload limits."""
    if noise:
        pixels = random.Random(seed).randbytes(width * height * 3)
        image = Image.frombytes("RGB", (width, height), pixels)
    else:
        shade = (seed * 47) % 256
        image = Image.new("RGB", (width, height), (shade, 128, 255 - shade))
    out = io.BytesIO()
    image.save(out, format=PIL_FORMATS[fmt], **({"quality": 95} if fmt in ("jpeg", "jpg") else {}))
    return out.getvalue()


def image_size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size
