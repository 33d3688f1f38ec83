"""An image as a caller gives it — a data: URL, a local path, a PIL image — read into RGB pixels with limits.

Remote URLs are refused here: a runtime (or a server) that fetches whatever URL a message names can be made to
reach internal hosts. Limits guard memory: the encoded size, and the pixel count checked from the header before
the pixels are decoded (a small file can declare a huge image).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from glmkit.glm4.errors import GlmkitError

MAX_BYTES = 20 * 2**20
MAX_PIXELS = 50_000_000  # 7,000 × 7,000; GLM-4V resizes every image to 1120 × 1120


@dataclass(frozen=True)
class Image:
    rgb: object  # PIL.Image in RGB
    key: str     # sha256 of the encoded bytes (or of the pixels): the same image is encoded once


def _decode(data: bytes, what: str, max_pixels: int):
    from PIL import Image as PIL
    from PIL import UnidentifiedImageError

    try:
        img = PIL.open(io.BytesIO(data))
        w, h = img.size
        if w * h > max_pixels:
            raise GlmkitError(f"{what} is {w}×{h} = {w * h:,} pixels; the limit is {max_pixels:,} (scale it down)")
        img.load()
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, PIL.DecompressionBombError) as e:
        raise GlmkitError(f"{what} is not a readable image ({type(e).__name__}: {e}); send a PNG, JPEG, GIF or "
                          "WebP") from None


def _fetch(url: str, max_bytes: int) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "glmkit"}), timeout=10) as r:
            data = r.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise GlmkitError(f"{url[:60]}: could not fetch the image ({e})") from None
    if len(data) > max_bytes:
        raise GlmkitError(f"{url[:60]}: the image is over {max_bytes // 2**20} MB")
    return data


def read(ref, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, allow_remote: bool = False,
         local: bool = True) -> Image:
    """An Image from a data: URL, a local path or a PIL image; a GlmkitError naming the problem otherwise.
    allow_remote: fetch http(s) URLs too; local=False: refuse paths (a server reads no files a client names)."""
    try:
        from PIL import Image as PIL
    except ImportError:
        raise GlmkitError("reading images needs Pillow: pip install pillow") from None
    if isinstance(ref, PIL.Image):
        w, h = ref.size
        if w * h > max_pixels:
            raise GlmkitError(f"the image is {w}×{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
        rgb = ref.convert("RGB")
        return Image(rgb, hashlib.sha256(rgb.tobytes() + repr(rgb.size).encode()).hexdigest())
    if not isinstance(ref, (str, Path)):
        raise GlmkitError(f"an image is a data: URL, a local path or a PIL image, not {type(ref).__name__}")
    ref = str(ref)
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if not header.endswith(";base64"):
            raise GlmkitError("an image data: URL must be base64 (data:image/png;base64,…)")
        if len(payload) * 3 // 4 > max_bytes:
            raise GlmkitError(f"the image is over {max_bytes // 2**20} MB")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise GlmkitError("the image data: URL is not valid base64") from None
        what = "the data: URL image"
    elif ref.startswith(("http://", "https://")) and allow_remote:
        data, what = _fetch(ref, max_bytes), ref[:60]
    elif ref.startswith(("http://", "https://", "ftp://", "file://")):
        raise GlmkitError(f"{ref[:60]}: glmkit does not fetch images from URLs unless told to (glm-serve "
                          "--allow-remote-images); send it as a data: URL")
    elif not local:
        raise GlmkitError("an image is a data: URL (data:image/png;base64,…)")
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise GlmkitError(f"{ref}: no such image file")
        if path.stat().st_size > max_bytes:
            raise GlmkitError(f"{ref}: {path.stat().st_size / 2**20:.1f} MB; the limit is {max_bytes // 2**20} MB")
        data, what = path.read_bytes(), str(path)
    return Image(_decode(data, what, max_pixels), hashlib.sha256(data).hexdigest())
