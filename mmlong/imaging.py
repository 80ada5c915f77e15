"""Pixels to stored image bytes: the one encoder every ingest and render path uses.

JPEG goes through simplejpeg (libjpeg-turbo, straight from the pixel buffer: ~3 ms for an A4
page at 144 dpi, where MuPDF's own JPEG encoder takes ~45 ms); PNG and WebP through Pillow.
"""

from __future__ import annotations

import io

import numpy as np

FORMATS = ("jpeg", "png", "webp")
DEFAULT_FORMAT = "jpeg"
DEFAULT_QUALITY = 90


def check_encoding(what: str, image_format: str, quality: int) -> None:
    """The one check of the image-format settings every source's options carry
    (`image_format`, `quality`); ValueError naming the option group `what`."""
    if image_format not in FORMATS:
        raise ValueError(f"{what} image_format must be one of {FORMATS}, got {image_format!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"{what} quality must be in 1..100, got {quality}")


def pixmap_array(pix) -> np.ndarray:
    """A view of a PyMuPDF pixmap's pixels. Shape: (H, W, 3) for RGB, (H, W) for gray."""
    a = np.frombuffer(pix.samples_mv, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width * pix.n]
    a = a.reshape(pix.height, pix.width, pix.n)
    return a[:, :, 0] if pix.n == 1 else a


def encode_pixels(pixels: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """Encode (H, W, 3) RGB or (H, W) gray uint8 pixels as jpeg, png or webp."""
    if fmt not in FORMATS:
        raise ValueError(f"image format must be one of {FORMATS}, got {fmt!r}")
    pixels = np.ascontiguousarray(pixels)
    if fmt == "jpeg":
        import simplejpeg

        gray = pixels.ndim == 2
        return simplejpeg.encode_jpeg(pixels[..., None] if gray else pixels, quality=quality,
                                      colorspace="GRAY" if gray else "RGB")
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG" if fmt == "png" else "WEBP", **({"quality": quality} if fmt == "webp" else {}))
    return buf.getvalue()


def to_rgb(image):
    """A PIL image in RGB, transparency composited onto white (as qwen-vl-utils does: a plain
    convert("RGB") puts transparent pixels on black and erases black line art)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
