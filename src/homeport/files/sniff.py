"""Content type of an upload from its leading bytes, and the check of a client's declared type.

Detection order, strongest evidence first:

1. Pillow's own format tests for the raster images it can decode (JPEG, PNG, GIF, WebP, TIFF,
   BMP; BMP's two-byte signature is confirmed by parsing its header, so text starting with
   "BM" is not a bitmap).
2. The ISO base media file format ``ftyp`` box: its brands tell HEIC/HEIF/AVIF images from
   MP4/M4A/QuickTime/3GP media (signature tables alone confuse them).
3. MPEG audio and AAC (ADTS) frame headers, validated field by field.
4. ``puremagic`` signatures of at least three bytes (shorter ones, such as ``{`` for JSON,
   match ordinary text); ZIP archives are refined to OOXML/ODF/EPUB from their first entries.

Compatibility rules of :func:`check_declared` (a declared type that is "compatible" with the
sniffed one is accepted and returned as declared, because the client's word is the more
specific one within a family):

- equal after :func:`normalise_mime` (aliases such as ``image/jpg`` or ``audio/x-wav``);
- ZIP containers: ``application/zip`` and every ZIP-based type (docx, xlsx, pptx, odt, epub,
  jar, apk ...) accept each other; two different specific ZIP-based types do not;
- ISO media: ``video/mp4``, ``audio/mp4`` (m4a), ``video/quicktime``, ``video/3gpp`` ... accept
  each other, since one container carries audio only or audio and video; HEIC/HEIF/AVIF are
  images and are not in that family (``image/heic`` and ``image/heif`` accept each other);
- Ogg (``application/ogg``, ``audio/ogg``, ``video/ogg``, ``audio/opus``) and Matroska/WebM;
- recognised XML or JSON accepts any text-like declared type (``text/*``, ``+xml`` such as
  ``image/svg+xml``, ``+json`` such as ``application/geo+json``);
- ``application/octet-stream`` (or no declared type) means "unknown": the sniffed type is
  returned, or ``application/octet-stream`` when nothing is recognised.

Unrecognised bytes are accepted for text-like declared types (``text/*``, JSON, XML, CSV,
YAML ...) and for opaque ``application/*`` types no signature exists for; they are a mismatch
for ``image/*``, ``video/*``, ``audio/*``, PDF and the archive types this module recognises,
because real files of those types always carry their signature.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import puremagic
from PIL import Image, ImageFile

HEAD_BYTES = 8 * 1024
"""Leading bytes the sniffer reads (the deepest signature used, tar's, is at offset 257)."""

OCTET_STREAM = "application/octet-stream"
ZIP = "application/zip"
XML = "application/xml"

_MIME_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heif",
    "image/x-icon": "image/vnd.microsoft.icon",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/mpeg3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg",
    "audio/x-aac": "audio/aac",
    "audio/aacp": "audio/aac",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "video/x-m4v": "video/mp4",
    "audio/x-flac": "audio/flac",
    "application/x-gzip": "application/gzip",
    "application/x-zip-compressed": ZIP,
    "application/x-zip": ZIP,
    "application/x-pdf": "application/pdf",
    "application/x-rar-compressed": "application/vnd.rar",
    "application/x-rar": "application/vnd.rar",
    "application/x-sqlite3": "application/vnd.sqlite3",
    "application/csv": "text/csv",
    "application/x-yaml": "application/yaml",
    "text/yaml": "application/yaml",
    "text/x-yaml": "application/yaml",
    "text/xml": XML,
    "application/x-matroska": "video/x-matroska",
    "audio/x-matroska": "video/x-matroska",
}

_ZIP_BASED = frozenset(
    {
        ZIP,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/epub+zip",
        "application/java-archive",
        "application/vnd.android.package-archive",
    }
)
_ISO_MEDIA = frozenset(
    {"video/mp4", "audio/mp4", "video/quicktime", "video/3gpp", "video/3gpp2", "audio/3gpp"}
)
_FAMILIES: tuple[frozenset[str], ...] = (
    _ISO_MEDIA,
    frozenset({"image/heic", "image/heif"}),
    frozenset({"application/ogg", "audio/ogg", "video/ogg", "audio/opus"}),
    frozenset({"video/webm", "audio/webm", "video/x-matroska"}),
)
_TEXT_LIKE = frozenset(
    {
        OCTET_STREAM,
        "application/json",
        "application/x-ndjson",
        "application/yaml",
        "application/javascript",
        "application/ecmascript",
        "application/x-www-form-urlencoded",
        "application/sql",
        "application/graphql",
        "application/toml",
        XML,
    }
)
# Non-media types whose files always start with a signature this module recognises.
_SIGNED_TYPES = _ZIP_BASED | {
    "application/pdf",
    "application/gzip",
    "application/x-bzip2",
    "application/x-xz",
    "application/zstd",
    "application/x-7z-compressed",
    "application/vnd.rar",
    "application/x-tar",
    "application/vnd.sqlite3",
    "application/wasm",
}
_SIGNED_FAMILIES = ("image/", "video/", "audio/")

# Pillow formats tested first; the flag says whether the signature test alone is conclusive.
_PILLOW_FORMATS = (("JPEG", True), ("PNG", True), ("GIF", True), ("WEBP", True))
_PILLOW_CONFIRMED_FORMATS = (("TIFF", True), ("BMP", False))

_FTYP_BRANDS = {
    **dict.fromkeys(("heic", "heix", "heim", "heis", "hevc", "hevx"), "image/heic"),
    **dict.fromkeys(("mif1", "msf1", "mif2"), "image/heif"),
    **dict.fromkeys(("avif", "avis"), "image/avif"),
    **dict.fromkeys(("M4A ", "M4B ", "M4P ", "F4A "), "audio/mp4"),
    "qt  ": "video/quicktime",
    **dict.fromkeys(("3g2a", "3g2b", "3g2c"), "video/3gpp2"),
}
_ISO_VIDEO_BRANDS = frozenset(
    {"isom", "iso2", "iso4", "iso5", "iso6", "mp41", "mp42", "avc1", "dash", "mmp4"}
    | {"M4V ", "M4VH", "M4VP", "f4v ", "MSNV", "XAVC", "NDAS"}
)

_MIN_PUREMAGIC_CONFIDENCE = 0.3


class ContentTypeMismatch(ValueError):
    """The declared content type disagrees with what the bytes are."""

    def __init__(self, declared: str, sniffed: str | None) -> None:
        self.declared = declared
        self.sniffed = sniffed
        found = sniffed or "unrecognisable bytes"
        super().__init__(f"declared content type {declared!r} but the content is {found}")


def normalise_mime(declared: str) -> str:
    """Lower-case, parameters and whitespace removed, aliases mapped to the registered name."""
    essence = declared.split(";", 1)[0].strip().lower()
    return _MIME_ALIASES.get(essence, essence)


def sniff_mime(head: bytes) -> str | None:
    """The content type of a file from its first :data:`HEAD_BYTES` bytes, None if unknown."""
    head = head[:HEAD_BYTES]
    if not head:
        return None
    for detect in _DETECTORS:
        found = detect(head)
        if found is not None:
            return found
    return None


def check_declared(declared: str | None, head: bytes) -> str:
    """The effective content type, or :class:`ContentTypeMismatch` (rules: module docstring)."""
    sniffed = sniff_mime(head)
    wanted = normalise_mime(declared) if declared is not None else ""
    if not wanted or wanted == OCTET_STREAM:
        return sniffed or OCTET_STREAM
    if not _is_well_formed(wanted):
        raise ContentTypeMismatch(declared or "", sniffed)
    if sniffed is None:
        if _needs_signature(wanted):
            raise ContentTypeMismatch(wanted, None)
        return wanted
    if _compatible(wanted, sniffed):
        return wanted
    raise ContentTypeMismatch(wanted, sniffed)


def _is_well_formed(mime: str) -> bool:
    kind, slash, subtype = mime.partition("/")
    return bool(kind and slash and subtype) and " " not in mime and "/" not in subtype


def _is_text_like(mime: str) -> bool:
    return (
        mime.startswith("text/") or mime in _TEXT_LIKE or mime.endswith(("+json", "+xml", "+yaml"))
    )


def _needs_signature(mime: str) -> bool:
    if _is_text_like(mime):
        return False
    return mime.startswith(_SIGNED_FAMILIES) or mime in _SIGNED_TYPES


def _compatible(declared: str, sniffed: str) -> bool:
    if declared == sniffed:
        return True
    if declared in _ZIP_BASED and sniffed in _ZIP_BASED:
        return ZIP in (declared, sniffed)
    if _is_text_like(sniffed) and _is_text_like(declared):
        return True  # XML or JSON recognised: any text-like declaration may describe it
    return any(declared in family and sniffed in family for family in _FAMILIES)


def _pillow_format(head: bytes) -> str | None:
    Image.init()
    prefix = head[:16]
    for name, conclusive in _PILLOW_FORMATS + _PILLOW_CONFIRMED_FORMATS:
        registered = Image.OPEN.get(name)
        if registered is None:
            continue
        factory, accept = registered
        # Pillow's test returns a string (a reason) when it knows the format but cannot decode it.
        if accept is None or accept(prefix) is not True:
            continue
        if conclusive or _parses(factory, head):
            return Image.MIME.get(name)
    return None


def _parses(factory: Callable[..., ImageFile.ImageFile], head: bytes) -> bool:
    try:
        image = factory(io.BytesIO(head), "")
    except (SyntaxError, ValueError, OSError, IndexError, TypeError, struct.error):
        return False
    width, height = image.size
    return width > 0 and height > 0


def _iso_media(head: bytes) -> str | None:
    """Brands of a leading ``ftyp`` box (ISO/IEC 14496-12 section 4.3)."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    box_size = int.from_bytes(head[:4], "big")
    if box_size < 16 or box_size % 4:
        return None
    major = head[8:12].decode("latin-1")
    compatible = [
        head[offset : offset + 4].decode("latin-1")
        for offset in range(16, min(box_size, len(head)) - 3, 4)
    ]
    for brand in (major, *compatible):
        if brand in _FTYP_BRANDS:
            return _FTYP_BRANDS[brand]
        if brand.startswith("3gp") or brand.startswith("3ge"):
            return "video/3gpp"
        if brand in _ISO_VIDEO_BRANDS:
            return "video/mp4"
    return None


_MPEG_BITRATE_BAD = 0b1111
_MPEG_SAMPLE_RATE_RESERVED = 0b11


def _mpeg_audio(head: bytes) -> str | None:
    """An MPEG audio frame (MP3) or ADTS (AAC) header at the start, or an ID3v2 tag."""
    if head.startswith(b"ID3") and len(head) >= 10 and head[3] < 0xFF and head[5] & 0x0F == 0:
        return "audio/mpeg"
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    if version in (0b00, 0b10) and layer == 0b00 and head[1] & 0xF6 == 0xF0:
        # ADTS: 12-bit sync, layer always 0, sampling frequency index below 13.
        return "audio/aac" if (head[2] >> 2) & 0x0F < 13 else None
    bitrate = head[2] >> 4
    sample_rate = (head[2] >> 2) & 0b11
    if (
        version != 0b01
        and layer != 0b00
        and bitrate not in (0, _MPEG_BITRATE_BAD)
        and sample_rate != _MPEG_SAMPLE_RATE_RESERVED
    ):
        return "audio/mpeg"
    return None


def _zip_refined(head: bytes) -> str:
    """OOXML, ODF and EPUB from the names of the first entries; plain ZIP otherwise."""
    if head[30:38] == b"mimetype":
        for mime in (
            "application/epub+zip",
            "application/vnd.oasis.opendocument.text",
            "application/vnd.oasis.opendocument.spreadsheet",
            "application/vnd.oasis.opendocument.presentation",
        ):
            if head[38:].startswith(mime.encode()):
                return mime
    if b"[Content_Types].xml" in head:
        for marker, mime in (
            (b"word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            (b"xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            (b"ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
        ):
            if marker in head:
                return mime
    if b"AndroidManifest.xml" in head:
        return "application/vnd.android.package-archive"
    if b"META-INF/MANIFEST.MF" in head:
        return "application/java-archive"
    return ZIP


def _puremagic(head: bytes) -> str | None:
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return None
    for match in matches:
        if match.confidence < _MIN_PUREMAGIC_CONFIDENCE or not match.mime_type:
            continue
        mime = normalise_mime(match.mime_type)
        if mime.startswith("text/"):
            continue  # guesses from byte-order marks and the like; text is never claimed
        if head.startswith(b"PK\x03\x04") and (mime in _ZIP_BASED or mime.endswith("zip")):
            return _zip_refined(head)
        return mime
    return None


_DETECTORS: tuple[Callable[[bytes], str | None], ...] = (
    _pillow_format,
    _iso_media,
    _mpeg_audio,
    _puremagic,
)
