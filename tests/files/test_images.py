"""Image inspection, variants, orientation, metadata stripping, bombs and base64 decoding."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image, ImageCms

from homeport.files.images import (
    IMAGE_MIME_TYPES,
    VARIANT_SIZES,
    ImageRejected,
    RejectionCode,
    decode_base64_image,
    inspect_image,
    make_variants,
)

MAX_PIXELS = 50_000_000
GPS_IFD = 0x8825
ORIENTATION = 0x0112
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def gradient(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    return image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny IDAT: built without any pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "HomeportCam"  # Make
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 1.0)})
    return exif


def by_key(variants: list) -> dict[tuple[str, str], object]:
    return {(v.name, v.format): v for v in variants}


@pytest.mark.parametrize(
    ("fmt", "mime", "mode"),
    [
        ("JPEG", "image/jpeg", "RGB"),
        ("PNG", "image/png", "RGBA"),
        ("WEBP", "image/webp", "RGB"),
        ("GIF", "image/gif", "P"),
        ("HEIF", "image/heic", "RGB"),
    ],
)
def test_every_supported_format_is_inspected_and_gets_all_variants(
    fmt: str, mime: str, mode: str
) -> None:
    data = encode(gradient((640, 480), mode), fmt)
    info = inspect_image(data, max_pixels=MAX_PIXELS)
    assert (info.width, info.height, info.mime_type) == (640, 480, mime)
    assert mime in IMAGE_MIME_TYPES
    variants = make_variants(data, max_pixels=MAX_PIXELS)
    assert [(v.name, v.format) for v in variants] == [
        (name, f) for name, _ in VARIANT_SIZES for f in ("webp", "jpeg")
    ]
    for variant in variants:
        reopened = Image.open(io.BytesIO(variant.data))
        assert reopened.format == variant.format.upper()
        assert reopened.size == (variant.width, variant.height)
        assert variant.mime_type == f"image/{variant.format}"


def test_landscape_variants_have_the_longest_side_of_their_name() -> None:
    variants = by_key(make_variants(encode(gradient((4000, 3000)), "JPEG"), max_pixels=MAX_PIXELS))
    expected = {"thumbnail": (150, 112), "small": (300, 225), "medium": (600, 450)}
    expected["large"] = (1200, 900)
    for name, size in expected.items():
        for fmt in ("webp", "jpeg"):
            variant = variants[(name, fmt)]
            assert (variant.width, variant.height) == size
            assert Image.open(io.BytesIO(variant.data)).size == size


def test_portrait_variants_scale_by_height() -> None:
    variants = by_key(make_variants(encode(gradient((900, 1600)), "PNG"), max_pixels=MAX_PIXELS))
    assert (variants[("large", "jpeg")].width, variants[("large", "jpeg")].height) == (675, 1200)
    assert (variants[("thumbnail", "webp")].width, variants[("thumbnail", "webp")].height) == (
        84,
        150,
    )


def test_small_original_is_never_upscaled() -> None:
    variants = by_key(make_variants(encode(gradient((200, 100)), "PNG"), max_pixels=MAX_PIXELS))
    assert (variants[("thumbnail", "jpeg")].width, variants[("thumbnail", "jpeg")].height) == (
        150,
        75,
    )
    for name in ("small", "medium", "large"):
        for fmt in ("webp", "jpeg"):
            assert Image.open(io.BytesIO(variants[(name, fmt)].data)).size == (200, 100)


def test_exif_orientation_is_applied_before_resizing() -> None:
    # Stored pixels: left half red, right half blue, 400x200. Orientation 6 means "rotate 90
    # degrees clockwise to display": the displayed image is 200x400, red on top, blue below.
    stored = Image.new("RGB", (400, 200), (255, 0, 0))
    stored.paste((0, 0, 255), (200, 0, 400, 200))
    data = encode(stored, "JPEG", exif=exif_with_gps(orientation=6), quality=95)

    info = inspect_image(data, max_pixels=MAX_PIXELS)
    assert (info.width, info.height) == (200, 400)
    for variant in make_variants(data, max_pixels=MAX_PIXELS):
        shown = Image.open(io.BytesIO(variant.data)).convert("RGB")
        assert shown.height == 2 * shown.width
        top = shown.getpixel((shown.width // 2, shown.height // 8))
        bottom = shown.getpixel((shown.width // 2, shown.height * 7 // 8))
        assert isinstance(top, tuple)
        assert isinstance(bottom, tuple)
        assert top[0] > 200, top
        assert top[2] < 60, top
        assert bottom[2] > 200, bottom
        assert bottom[0] < 60, bottom
        assert shown.getexif().get(ORIENTATION) is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_all_metadata_is_stripped_from_variants(fmt: str) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(gradient((800, 600)), fmt, exif=exif_with_gps(), xmp=XMP, icc_profile=srgb)
    original = Image.open(io.BytesIO(data))
    assert original.getexif().get_ifd(GPS_IFD), "the fixture must carry GPS"
    assert "icc_profile" in original.info
    for variant in make_variants(data, max_pixels=MAX_PIXELS):
        reopened = Image.open(io.BytesIO(variant.data))
        assert dict(reopened.getexif()) == {}
        assert reopened.getexif().get_ifd(GPS_IFD) == {}
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment"} & set(
            reopened.info
        ), reopened.info
        assert b"HomeportCam" not in variant.data
        assert b"xmpmeta" not in variant.data


def test_embedded_profile_is_applied_then_dropped_keeping_the_colours() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    data = encode(Image.new("RGB", (50, 50), (200, 30, 30)), "PNG", icc_profile=srgb.tobytes())
    variant = make_variants(data, max_pixels=MAX_PIXELS)[0]
    pixel = Image.open(io.BytesIO(variant.data)).convert("RGB").getpixel((25, 25))
    assert isinstance(pixel, tuple)
    assert abs(pixel[0] - 200) < 12
    assert pixel[1] < 50


def test_jpeg_variants_flatten_alpha_on_white_and_webp_keeps_it() -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    image.paste((0, 128, 0, 255), (0, 0, 50, 100))
    variants = by_key(make_variants(encode(image, "PNG"), max_pixels=MAX_PIXELS))
    jpeg = Image.open(io.BytesIO(variants[("thumbnail", "jpeg")].data)).convert("RGB")
    transparent_side = jpeg.getpixel((90, 50))
    assert isinstance(transparent_side, tuple)
    assert min(transparent_side) > 240
    webp = Image.open(io.BytesIO(variants[("thumbnail", "webp")].data))
    assert webp.mode == "RGBA"
    alpha = webp.getpixel((90, 50))
    assert isinstance(alpha, tuple)
    assert alpha[3] == 0


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (60, 40), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    variant = make_variants(data, max_pixels=MAX_PIXELS)[1]
    pixel = Image.open(io.BytesIO(variant.data)).convert("RGB").getpixel((30, 20))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 200
    assert pixel[2] < 60


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (40, 40), 32768)  # mid grey in 16 bits
    variant = make_variants(encode(image, "PNG"), max_pixels=MAX_PIXELS)[1]
    value = Image.open(io.BytesIO(variant.data)).convert("L").getpixel((20, 20))
    assert isinstance(value, int)
    assert 118 <= value <= 138


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    image = Image.new("CMYK", (80, 80), (0, 255, 255, 0))  # pure red in CMYK
    data = encode(image, "JPEG")
    for variant in make_variants(data, max_pixels=MAX_PIXELS):
        reopened = Image.open(io.BytesIO(variant.data))
        assert reopened.mode in ("RGB", "RGBA")
        pixel = reopened.convert("RGB").getpixel((10, 10))
        assert isinstance(pixel, tuple)
        assert pixel[0] > 200
        assert pixel[1] < 60


def test_header_claiming_huge_dimensions_is_rejected_before_decoding() -> None:
    data = png_header_only(100_000, 100_000)
    assert len(data) < 200
    for action in (inspect_image, make_variants):
        with pytest.raises(ImageRejected) as caught:
            action(data, max_pixels=MAX_PIXELS)
        assert caught.value.code == RejectionCode.TOO_MANY_PIXELS
        assert "100000x100000" in caught.value.reason


def test_real_small_file_with_too_many_pixels_is_rejected() -> None:
    data = encode(Image.new("1", (6000, 6000)), "PNG")
    assert len(data) < 100_000
    with pytest.raises(ImageRejected) as caught:
        make_variants(data, max_pixels=20_000_000)
    assert caught.value.code == RejectionCode.TOO_MANY_PIXELS


def test_limit_above_pillows_own_never_raises_its_bomb_error_or_warning() -> None:
    # Pillow warns above MAX_IMAGE_PIXELS; the per-call limit is the only one (warnings are errors).
    pixels = Image.MAX_IMAGE_PIXELS or 0
    side = int(pixels**0.5) + 100
    data = png_header_only(side, side)
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, max_pixels=side * side - 1)
    assert caught.value.code == RejectionCode.TOO_MANY_PIXELS


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_image_is_rejected(fmt: str) -> None:
    data = encode(gradient((300, 300)), fmt)
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data[: len(data) // 2], max_pixels=MAX_PIXELS)
    assert caught.value.code == RejectionCode.CORRUPT


def test_corrupt_image_data_is_rejected() -> None:
    data = bytearray(encode(gradient((200, 200)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = b"\xff" * 8  # smash the zlib stream; the signature still says PNG
    for action in (inspect_image, make_variants):
        with pytest.raises(ImageRejected) as caught:
            action(bytes(data), max_pixels=MAX_PIXELS)
        assert caught.value.code == RejectionCode.CORRUPT


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", RejectionCode.CORRUPT),
        (b"just some text, not an image", RejectionCode.NOT_AN_IMAGE),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", RejectionCode.NOT_AN_IMAGE),
        (png_header_only(10, 10)[:20], RejectionCode.CORRUPT),
    ],
)
def test_non_images_are_rejected(data: bytes, code: RejectionCode) -> None:
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, max_pixels=MAX_PIXELS)
    assert caught.value.code == code


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_other_image_formats_are_unsupported(fmt: str) -> None:
    with pytest.raises(ImageRejected) as caught:
        inspect_image(encode(gradient((20, 20)), fmt), max_pixels=MAX_PIXELS)
    assert caught.value.code == RejectionCode.UNSUPPORTED


PNG = encode(gradient((8, 8)), "PNG")


def test_data_url_is_decoded_with_its_declared_type() -> None:
    text = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert decode_base64_image(text, max_bytes=1024) == (PNG, "image/png")


def test_data_url_type_is_normalised_and_params_tolerated() -> None:
    text = "DATA:Image/JPG;name=x.jpg;BASE64," + base64.b64encode(PNG).decode()
    assert decode_base64_image(text, max_bytes=1024) == (PNG, "image/jpeg")


def test_bare_base64_with_newlines_urlsafe_and_no_padding() -> None:
    data = PNG + b"\xfb\xff"  # makes both URL-safe characters likely and padding needed
    encoded = base64.urlsafe_b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert decode_base64_image(f"  {wrapped}\r\n", max_bytes=1024) == (data, None)
    assert decode_base64_image(base64.b64encode(b"\xfb\xff\xfe").decode(), max_bytes=8) == (
        b"\xfb\xff\xfe",
        None,
    )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", RejectionCode.INVALID_BASE64),
        ("   \n", RejectionCode.INVALID_BASE64),
        ("abc$def", RejectionCode.INVALID_BASE64),
        ("QUJD=RA==", RejectionCode.INVALID_BASE64),
        ("QUJDR", RejectionCode.INVALID_BASE64),
        ("ümlaut", RejectionCode.INVALID_BASE64),
        ("data:image/png,rawbytes", RejectionCode.INVALID_BASE64),
        ("data:image/png;base64", RejectionCode.INVALID_BASE64),
        ("data:text/html;base64,PGI+", RejectionCode.NOT_AN_IMAGE),
        ("data:;base64,QUJD", RejectionCode.NOT_AN_IMAGE),
    ],
)
def test_invalid_base64_inputs_are_rejected(text: str, code: RejectionCode) -> None:
    with pytest.raises(ImageRejected) as caught:
        decode_base64_image(text, max_bytes=1024)
    assert caught.value.code == code
    assert caught.value.reason


def test_size_limit_is_exact_on_the_decoded_length() -> None:
    assert len(decode_base64_image(base64.b64encode(b"x" * 300).decode(), max_bytes=300)[0]) == 300
    with pytest.raises(ImageRejected) as caught:
        decode_base64_image(base64.b64encode(b"x" * 301).decode(), max_bytes=300)
    assert caught.value.code == RejectionCode.TOO_LARGE


def test_huge_string_is_refused_from_its_length_without_decoding() -> None:
    # Not valid base64 at all: refused for size, which proves no decoding was attempted.
    with pytest.raises(ImageRejected) as caught:
        decode_base64_image("data:image/png;base64," + "!" * 20_000_000, max_bytes=10 * 1024 * 1024)
    assert caught.value.code == RejectionCode.TOO_LARGE
