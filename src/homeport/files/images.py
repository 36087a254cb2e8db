"""Image inspection and variants (thumbnail 150, small 300, medium 600, large 1200 px).

Pure and synchronous (CPU-bound: callers run it in a worker thread).

Safety:

- The type is taken from the bytes (:func:`homeport.files.sniff.sniff_mime`), and the image is
  opened with that one Pillow plugin, never by probing every plugin.
- The pixel count is checked against ``max_pixels`` from the header, before anything is
  decoded. The image is opened through the plugin directly rather than ``Image.open`` so that
  Pillow's process-wide ``MAX_IMAGE_PIXELS`` check, and its ``DecompressionBombWarning``, do not
  apply: the per-call ``max_pixels`` is the one limit, and no warning is ever raised (changing
  warning filters is not thread-safe).
- Truncated data is an error (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off).

Variants carry no metadata at all: no EXIF (so no GPS), no XMP, no comments. An embedded ICC
profile is applied (the pixels are converted to sRGB) and then dropped, so colours from wide-gamut
cameras (Display P3) stay right while the files carry nothing but pixels; sRGB is what viewers
assume for untagged images.
"""

from __future__ import annotations

import base64
import binascii
import enum
import io
import re
import struct
from dataclasses import dataclass

import pillow_heif
from PIL import Image, ImageCms, ImageFile, ImageOps

from homeport.files.sniff import HEAD_BYTES, normalise_mime, sniff_mime

pillow_heif.register_heif_opener(thumbnails=False)

_PILLOW_FORMAT_BY_MIME = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/heic": "HEIF",
    "image/heif": "HEIF",
}
IMAGE_MIME_TYPES = frozenset(_PILLOW_FORMAT_BY_MIME)
"""Types :func:`inspect_image` and :func:`make_variants` accept (HEIC/HEIF via pillow-heif)."""

VARIANT_SIZES = (("thumbnail", 150), ("small", 300), ("medium", 600), ("large", 1200))
"""Variant names and their longest side in pixels."""

VARIANT_QUALITY = 85
_OUTPUT_FORMATS = (("webp", "WEBP", "image/webp"), ("jpeg", "JPEG", "image/jpeg"))
_WHITE = (255, 255, 255)
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    Image.DecompressionBombError,
)


class RejectionCode(enum.StrEnum):
    """Why an image was refused; stable values the caller maps to API error codes."""

    CORRUPT = "image_corrupt"
    UNSUPPORTED = "image_unsupported"
    TOO_MANY_PIXELS = "image_too_many_pixels"
    TOO_LARGE = "image_too_large"
    INVALID_BASE64 = "invalid_base64"
    NOT_AN_IMAGE = "not_an_image"


class ImageRejected(ValueError):
    """The bytes are not an image this service processes; ``reason`` is for the client."""

    def __init__(self, reason: str, code: str) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mime_type: str


@dataclass(frozen=True)
class Variant:
    name: str
    format: str
    mime_type: str
    width: int
    height: int
    data: bytes


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Size and type of a supported image, fully decoded once to catch corrupt data."""
    image, mime_type = _open_checked(data, max_pixels=max_pixels)
    with image:
        header_size = image.size
        if image.format == "JPEG":
            # Scaled DCT decoding still reads every scan (so truncation is found), 64x cheaper.
            image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
        _load(image)
        width, height = _oriented(header_size, _orientation(image))
    return ImageInfo(width=width, height=height, mime_type=mime_type)


def make_variants(data: bytes, *, max_pixels: int) -> list[Variant]:
    """Every size in :data:`VARIANT_SIZES`, each as WebP and JPEG, smallest first."""
    image, _ = _open_checked(data, max_pixels=max_pixels)
    with image:
        # Target sizes come from the header's size, so draft scaling never changes them.
        header_size = image.size
        if image.format == "JPEG":
            # Decode at the smallest DCT scale that still covers the largest variant.
            image.draft(None, _fit(header_size, VARIANT_SIZES[-1][1]))
        # Loaded before EXIF is read: a PNG's getexif() decodes the image itself, and a decoding
        # error there must not be swallowed.
        _load(image)
        original = _oriented(header_size, _orientation(image))
        base = _prepared(image)
    scaled: list[tuple[str, Image.Image]] = []
    current = base
    for name, longest in reversed(VARIANT_SIZES):
        target = _fit(original, longest)
        if current.size != target:
            current = current.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        scaled.append((name, current))
    variants: list[Variant] = []
    for name, picture in reversed(scaled):
        for format_name, pillow_format, mime_type in _OUTPUT_FORMATS:
            variants.append(
                Variant(
                    name=name,
                    format=format_name,
                    mime_type=mime_type,
                    width=picture.width,
                    height=picture.height,
                    data=_encode(picture, pillow_format),
                )
            )
    return variants


_DATA_URL = re.compile(r"data:(?P<type>[^,;]*)(?P<params>(?:;[^,;]*)*),", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")
_B64_WHITESPACE_SLACK = 1.05  # line breaks every 76 characters, as MIME wraps base64, plus some


def decode_base64_image(text: str, *, max_bytes: int) -> tuple[bytes, str | None]:
    """Bytes of a data URL or bare base64 (either alphabet, padding optional), and its type.

    The returned type is the data URL's declared type (normalised), None for bare base64; the
    bytes are not inspected here (see :func:`inspect_image`).
    """
    payload = text.strip()
    declared: str | None = None
    if payload[:5].lower() == "data:":
        header = _DATA_URL.match(payload)
        if header is None:
            raise ImageRejected("malformed data URL", RejectionCode.INVALID_BASE64)
        params = [p.strip().lower() for p in header["params"].split(";") if p.strip()]
        if "base64" not in params:
            raise ImageRejected("data URL is not base64-encoded", RejectionCode.INVALID_BASE64)
        declared = normalise_mime(header["type"]) if header["type"].strip() else "text/plain"
        if not declared.startswith("image/"):
            raise ImageRejected(
                f"data URL type {declared!r} is not an image", RejectionCode.NOT_AN_IMAGE
            )
        payload = payload[header.end() :]
    # Size from the encoded length first (4 characters per 3 bytes), before any decoding.
    max_encoded = (max_bytes + 2) // 3 * 4
    if len(payload) > max_encoded * _B64_WHITESPACE_SLACK + 4:
        raise _too_large(max_bytes)
    try:
        raw = payload.encode("ascii")
    except UnicodeEncodeError:
        raise ImageRejected(
            "base64 contains non-ASCII characters", RejectionCode.INVALID_BASE64
        ) from None
    compact = _WHITESPACE.sub(b"", raw).rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
    if not compact:
        raise ImageRejected("no image data", RejectionCode.INVALID_BASE64)
    if len(compact) % 4 == 1:
        raise ImageRejected("base64 has a truncated final group", RejectionCode.INVALID_BASE64)
    if len(compact) * 3 // 4 > max_bytes:
        raise _too_large(max_bytes)
    try:
        decoded = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except binascii.Error:
        raise ImageRejected("invalid base64", RejectionCode.INVALID_BASE64) from None
    return decoded, declared


def _too_large(max_bytes: int) -> ImageRejected:
    return ImageRejected(f"image is larger than {max_bytes} bytes", RejectionCode.TOO_LARGE)


def _open_checked(data: bytes, *, max_pixels: int) -> tuple[ImageFile.ImageFile, str]:
    """The image opened (header only) by the plugin of its sniffed type, within max_pixels."""
    if not data:
        raise ImageRejected("empty file", RejectionCode.CORRUPT)
    sniffed = sniff_mime(data[:HEAD_BYTES])
    if sniffed is None:
        raise ImageRejected("not an image", RejectionCode.NOT_AN_IMAGE)
    if sniffed not in IMAGE_MIME_TYPES:
        if sniffed.startswith("image/"):
            raise ImageRejected(f"unsupported image type {sniffed}", RejectionCode.UNSUPPORTED)
        raise ImageRejected(f"not an image ({sniffed})", RejectionCode.NOT_AN_IMAGE)
    factory, _ = Image.OPEN[_PILLOW_FORMAT_BY_MIME[sniffed]]
    try:
        image = factory(io.BytesIO(data), "")
    except _DECODE_ERRORS as exc:
        raise ImageRejected(f"corrupt image: {exc}", RejectionCode.CORRUPT) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise ImageRejected("image has no pixels", RejectionCode.CORRUPT)
    if width * height > max_pixels:
        image.close()
        raise ImageRejected(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels",
            RejectionCode.TOO_MANY_PIXELS,
        )
    return image, sniffed


def _load(image: ImageFile.ImageFile) -> None:
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise ImageRejected(f"corrupt image: {exc}", RejectionCode.CORRUPT) from None


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) else 1


def _oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Width and height as displayed: EXIF orientations 5 to 8 swap the axes."""
    width, height = size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _prepared(image: Image.Image) -> Image.Image:
    """Oriented, colour-managed to sRGB, in L, LA, RGB or RGBA, with no metadata."""
    try:
        oriented = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        oriented = image.copy()
    icc = image.info.get("icc_profile")
    normalised = _to_working_mode(oriented)
    if icc and normalised.mode in ("RGB", "RGBA"):
        normalised = _to_srgb(normalised, icc)
    normalised.info = {}
    return normalised


def _to_working_mode(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit and 32-bit grey: scale to 8 bits (convert("L") would clip everything above 255).
        extrema = image.getextrema()
        peak = extrema[1] if isinstance(extrema[1], int | float) else 255
        high = 65535.0 if mode.startswith("I;16") else max(1.0, float(peak))
        return image.convert("F").point(lambda value: value * 255.0 / high).convert("L")
    if mode in ("La", "RGBa"):
        return image.convert("RGBA")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            image, source, ImageCms.createProfile("sRGB"), outputMode=image.mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image  # a broken or mismatched profile: keep the pixels as they are
    return converted if converted is not None else image


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """Scaled so the longest side is ``longest``, never enlarged."""
    width, height = size
    if max(width, height) <= longest:
        return size
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _flattened(image: Image.Image) -> Image.Image:
    if image.mode not in ("LA", "RGBA"):
        return image
    background = Image.new("RGB", image.size, _WHITE)
    background.paste(image, mask=image.getchannel("A"))
    return background


def _encode(image: Image.Image, pillow_format: str) -> bytes:
    picture = _flattened(image) if pillow_format == "JPEG" else image
    picture.info = {}
    out = io.BytesIO()
    picture.save(out, pillow_format, quality=VARIANT_QUALITY)
    return out.getvalue()
