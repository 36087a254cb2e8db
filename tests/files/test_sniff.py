"""Content sniffing and the declared-type check."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest
from PIL import Image

import homeport.files.images  # noqa: F401 - registers the HEIF opener used to build fixtures
from homeport.files.sniff import (
    HEAD_BYTES,
    ContentTypeMismatch,
    check_declared,
    normalise_mime,
    sniff_mime,
)


def image_bytes(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 16), "red").save(out, fmt)
    return out.getvalue()


def zip_bytes(*names: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in names:
            archive.writestr(name, "<x/>")
    return out.getvalue()


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00" * 64


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

SAMPLES = {
    "jpeg": (image_bytes("JPEG"), "image/jpeg"),
    "png": (image_bytes("PNG"), "image/png"),
    "webp": (image_bytes("WEBP"), "image/webp"),
    "gif": (image_bytes("GIF"), "image/gif"),
    "heic": (image_bytes("HEIF"), "image/heic"),
    "bmp": (image_bytes("BMP"), "image/bmp"),
    "tiff": (image_bytes("TIFF"), "image/tiff"),
    "zip": (zip_bytes("notes.txt"), "application/zip"),
    "docx": (zip_bytes("[Content_Types].xml", "word/document.xml"), DOCX),
    "xlsx": (zip_bytes("[Content_Types].xml", "xl/workbook.xml"), XLSX),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "application/pdf"),
    "gzip": (gzip.compress(b"hello"), "application/gzip"),
    "mp4": (ftyp(b"mp42", b"mp42", b"isom"), "video/mp4"),
    "m4a": (ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio/mp4"),
    "mov": (ftyp(b"qt  ", b"qt  "), "video/quicktime"),
    "3gp": (ftyp(b"3gp4", b"isom"), "video/3gpp"),
    "avif": (ftyp(b"avif", b"mif1"), "image/avif"),
    "heif": (ftyp(b"mif1", b"mif1"), "image/heif"),
    "wav": (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40, "audio/wav"),
    "ogg": (b"OggS\x00\x02" + b"\x00" * 60, "application/ogg"),
    "mp3-id3": (b"ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00" + b"\x00" * 64, "audio/mpeg"),
    "mp3-frame": (b"\xff\xfb\x90\x64" + b"\x00" * 64, "audio/mpeg"),
    "aac-adts": (b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 64, "audio/aac"),
    "xml": (b'<?xml version="1.0" encoding="utf-8"?><root/>', "application/xml"),
    "sqlite": (b"SQLite format 3\x00" + b"\x00" * 80, "application/vnd.sqlite3"),
}


@pytest.mark.parametrize(("data", "mime"), SAMPLES.values(), ids=SAMPLES.keys())
def test_sniff_recognises_the_bytes(data: bytes, mime: str) -> None:
    assert sniff_mime(data[:HEAD_BYTES]) == mime


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world, just text\n",
        b'{"a": 1}',
        b"id,name\n1,Ada\n",
        b"BMW is a car maker, and this is text starting with BM",
        b"\xff\xff\xff\xff\xff\xff",
        b"\x00" * 32,
    ],
)
def test_sniff_gives_none_for_text_and_unknown_bytes(data: bytes) -> None:
    assert sniff_mime(data) is None


def test_sniff_reads_only_the_head() -> None:
    assert sniff_mime(b"hello " * HEAD_BYTES + b"%PDF-1.7") is None
    assert HEAD_BYTES >= 4096


@pytest.mark.parametrize(
    ("declared", "normal"),
    [
        ("IMAGE/JPEG", "image/jpeg"),
        ("image/jpg", "image/jpeg"),
        ("image/x-png", "image/png"),
        (" text/plain; charset=UTF-8 ", "text/plain"),
        ("audio/x-wav", "audio/wav"),
        ("audio/mp3", "audio/mpeg"),
        ("audio/x-m4a", "audio/mp4"),
        ("application/x-zip-compressed", "application/zip"),
        ("application/x-gzip", "application/gzip"),
        ("text/xml", "application/xml"),
        ("image/heic-sequence", "image/heic"),
    ],
)
def test_normalise_mime(declared: str, normal: str) -> None:
    assert normalise_mime(declared) == normal


@pytest.mark.parametrize(
    ("declared", "sample", "effective"),
    [
        ("image/png", "png", "image/png"),
        ("image/jpg", "jpeg", "image/jpeg"),
        ("image/heif", "heic", "image/heif"),
        ("image/heic", "heif", "image/heic"),
        (None, "webp", "image/webp"),
        ("", "gif", "image/gif"),
        ("application/octet-stream", "pdf", "application/pdf"),
        ("application/zip", "docx", "application/zip"),
        (DOCX, "zip", DOCX),
        (DOCX, "docx", DOCX),
        ("audio/mp4", "mp4", "audio/mp4"),
        ("video/mp4", "m4a", "video/mp4"),
        ("audio/x-m4a", "m4a", "audio/mp4"),
        ("video/mp4", "mov", "video/mp4"),
        ("audio/ogg", "ogg", "audio/ogg"),
        ("audio/mpeg", "mp3-id3", "audio/mpeg"),
        ("text/xml", "xml", "application/xml"),
        ("image/svg+xml", "xml", "image/svg+xml"),
        ("text/plain", "xml", "text/plain"),
    ],
)
def test_compatible_declared_type_is_accepted(
    declared: str | None, sample: str, effective: str
) -> None:
    assert check_declared(declared, SAMPLES[sample][0]) == effective


@pytest.mark.parametrize(
    ("declared", "data"),
    [
        ("text/plain", b"just words"),
        ("text/csv; charset=utf-8", b"id,name\n1,Ada\n"),
        ("application/json", b'{"a": 1}'),
        ("application/geo+json", b'{"type": "Point"}'),
        ("application/x-ndjson", b'{"a": 1}\n{"a": 2}\n'),
        ("application/octet-stream", b"\x00\x01\x02 opaque"),
        ("application/vnd.homeport.custom", b"\x00\x01\x02 opaque"),
    ],
)
def test_unrecognised_bytes_are_accepted_for_text_and_opaque_types(
    declared: str, data: bytes
) -> None:
    assert check_declared(declared, data) == normalise_mime(declared)


def test_no_declared_type_and_unknown_bytes_is_octet_stream() -> None:
    assert check_declared(None, b"plain words") == "application/octet-stream"


@pytest.mark.parametrize(
    ("declared", "sample", "sniffed"),
    [
        ("image/png", "jpeg", "image/jpeg"),
        ("image/png", "zip", "application/zip"),
        ("image/jpeg", "heic", "image/heic"),
        ("image/heic", "mp4", "video/mp4"),
        ("video/mp4", "heic", "image/heic"),
        ("application/pdf", "png", "image/png"),
        ("text/plain", "png", "image/png"),
        ("application/json", "gzip", "application/gzip"),
        (DOCX, "xlsx", XLSX),
        ("audio/mpeg", "wav", "audio/wav"),
    ],
)
def test_recognisably_other_bytes_are_a_mismatch(declared: str, sample: str, sniffed: str) -> None:
    with pytest.raises(ContentTypeMismatch) as caught:
        check_declared(declared, SAMPLES[sample][0])
    assert caught.value.declared == declared
    assert caught.value.sniffed == sniffed
    assert sniffed in str(caught.value)


@pytest.mark.parametrize(
    "declared",
    ["image/png", "image/*", "video/mp4", "audio/mp4", "application/pdf", "application/zip"],
)
def test_unrecognisable_bytes_for_a_signed_type_are_a_mismatch(declared: str) -> None:
    with pytest.raises(ContentTypeMismatch) as caught:
        check_declared(declared, b"this is only text pretending")
    assert caught.value.sniffed is None


@pytest.mark.parametrize("declared", ["png", "image/", "/png", "image/png/x", "ima ge/png"])
def test_malformed_declared_type_is_a_mismatch(declared: str) -> None:
    with pytest.raises(ContentTypeMismatch):
        check_declared(declared, SAMPLES["png"][0])
