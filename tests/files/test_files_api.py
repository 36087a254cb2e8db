"""Files over HTTP: metadata, access rules, signed downloads with Range, deletion, inline
images and their variants (the real job), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlparse

from PIL import Image
from sqlalchemy import select

from homeport.app import build_registry
from homeport.kit.clock import utcnow
from homeport.kit.jobs import JobRunner
from homeport.models.files import FileBlob, FileVariant
from tests.conftest import Harness
from tests.uploads.conftest import Uploader, make_uploader


async def run_jobs(harness: Harness) -> None:
    runner = JobRunner(
        harness.state.database, build_registry(harness.settings, lambda: harness.state.storage)
    )
    while await runner.run_once():
        pass


def jpeg_with_gps_and_orientation(width: int = 800, height: int = 400) -> bytes:
    """Left half red, right half blue; EXIF says "rotate 90° clockwise to view" and has GPS."""
    image = Image.new("RGB", (width, height), "red")
    image.paste(Image.new("RGB", (width // 2, height), "blue"), (width // 2, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 5.0), 3: "E", 4: (4.0, 53.0, 40.0)}  # GPS
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=90)
    return buffer.getvalue()


async def upload_bytes(uploader: Uploader, data: bytes, **fields: object) -> dict[str, object]:
    upload = await uploader.init(data, **fields)
    await uploader.send_all(upload, data)
    response = await uploader.finalize(str(upload["upload_id"]))
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


async def test_metadata_and_access_rules(harness: Harness) -> None:
    owner = await make_uploader(harness, "acme")
    await harness.add_member(owner.tenant, "member@acme.example.com", "member")
    member = Uploader(
        harness,
        owner.tenant,
        await harness.login_headers("member@acme.example.com", "member-password-1"),
    )
    outsider = await make_uploader(harness, "globex")
    private = await upload_bytes(owner, os.urandom(5000))
    shared = await upload_bytes(owner, os.urandom(6000), access="tenant")

    seen = await harness.client.get(f"/api/v1/files/{private['file_id']}", headers=owner.headers)
    assert seen.status_code == 200
    body = seen.json()
    assert body["size"] == 5000
    assert body["access"] == "owner"
    assert body["image"] is None
    assert (await harness.client.get(body["url"])).status_code == 200

    for headers, file_id, expected in (
        (member.headers, private["file_id"], 404),
        (member.headers, shared["file_id"], 200),
        (outsider.headers, private["file_id"], 404),
        (outsider.headers, shared["file_id"], 404),
    ):
        response = await harness.client.get(f"/api/v1/files/{file_id}", headers=headers)
        assert response.status_code == expected, (file_id, response.text)

    listed = await harness.client.get("/api/v1/files", headers=member.headers)
    assert [f["id"] for f in listed.json()["files"]] == [shared["file_id"]]
    listed_by_owner = await harness.client.get("/api/v1/files?limit=1", headers=owner.headers)
    page = listed_by_owner.json()
    assert len(page["files"]) == 1
    assert page["next_cursor"] is not None
    rest = await harness.client.get(
        f"/api/v1/files?cursor={page['next_cursor']}", headers=owner.headers
    )
    assert {f["id"] for f in page["files"] + rest.json()["files"]} == {
        private["file_id"],
        shared["file_id"],
    }

    # The member may read the shared file but not delete it; the owner may.
    refused = await harness.client.delete(
        f"/api/v1/files/{shared['file_id']}", headers=member.headers
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "AUTH_006"
    deleted = await harness.client.delete(
        f"/api/v1/files/{shared['file_id']}", headers=owner.headers
    )
    assert deleted.status_code == 204
    gone = await harness.client.get(f"/api/v1/files/{shared['file_id']}", headers=owner.headers)
    assert gone.status_code == 404


async def test_signed_urls_expire_and_cannot_be_altered(harness: Harness) -> None:
    owner = await make_uploader(harness)
    first = await upload_bytes(owner, os.urandom(3000))
    second = await upload_bytes(owner, os.urandom(3000))
    url = urlparse(str(first["file_url"]))
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    base = f"/api/v1/files/{first['file_id']}/content"

    tampered = await harness.client.get(
        f"{base}?{urlencode({**query, 'expires': int(query['expires']) + 60})}"
    )
    assert tampered.status_code == 403
    assert tampered.json()["code"] == "AUTH_006"
    other_file = await harness.client.get(f"/api/v1/files/{second['file_id']}/content?{url.query}")
    assert other_file.status_code == 403
    past = int((utcnow() - timedelta(seconds=5)).timestamp())
    expired = await harness.client.get(f"{base}?{urlencode({**query, 'expires': past})}")
    assert expired.status_code == 401
    assert expired.json()["code"] == "AUTH_002"
    unsigned = await harness.client.get(base)
    assert unsigned.status_code == 422


async def test_ranges_etag_and_head(harness: Harness) -> None:
    owner = await make_uploader(harness)
    data = os.urandom(10_000)
    result = await upload_bytes(owner, data)
    url = str(result["file_url"])
    cases = {
        "bytes=0-99": (206, data[0:100], "bytes 0-99/10000"),
        "bytes=9990-": (206, data[9990:], "bytes 9990-9999/10000"),
        "bytes=-10": (206, data[-10:], "bytes 9990-9999/10000"),
        "bytes=9000-20000": (206, data[9000:], "bytes 9000-9999/10000"),
        "bytes=0-1,5-6": (200, data, None),  # several ranges: the whole file
        "items=0-5": (200, data, None),
    }
    for header, (status, content, content_range) in cases.items():
        response = await harness.client.get(url, headers={"Range": header})
        assert response.status_code == status, header
        assert response.content == content, header
        assert response.headers.get("content-range") == content_range, header
    for header in ("bytes=10000-", "bytes=-0", "bytes=50-10"):
        refused = await harness.client.get(url, headers={"Range": header})
        assert refused.status_code == 416, header
        assert refused.json()["code"] == "FILE_001"
        assert refused.headers["content-range"] == "bytes */10000"
    whole = await harness.client.get(url)
    etag = whole.headers["etag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    assert whole.headers["content-disposition"].startswith("attachment")
    assert "content-encoding" not in whole.headers
    not_modified = await harness.client.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    stale_if_range = await harness.client.get(
        url, headers={"Range": "bytes=0-9", "If-Range": '"old"'}
    )
    assert stale_if_range.status_code == 200
    head = await harness.client.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == "10000"
    assert head.content == b""


async def test_html_is_served_as_a_download(harness: Harness) -> None:
    owner = await make_uploader(harness)
    page = b"<html><script>alert(1)</script></html>" * 10
    result = await upload_bytes(owner, page, filename="page.html", mime_type="text/html")
    response = await harness.client.get(str(result["file_url"]))
    assert response.headers["content-disposition"] == "attachment; filename*=UTF-8''page.html"
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_deleting_the_last_file_frees_the_blob(harness: Harness) -> None:
    owner = await make_uploader(harness)
    data = os.urandom(4000)
    first = await upload_bytes(owner, data)
    second = await upload_bytes(owner, data)
    await run_jobs(harness)
    storage = harness.state.storage
    async with harness.state.database.transaction() as session:
        blob = (await session.execute(select(FileBlob))).scalar_one()
    assert await storage.size(blob.storage_key) == 4000
    await harness.client.delete(f"/api/v1/files/{first['file_id']}", headers=owner.headers)
    await run_jobs(harness)
    assert await storage.size(blob.storage_key) == 4000  # the second file still uses it
    assert (await harness.client.get(str(second["file_url"]))).content == data
    await harness.client.delete(f"/api/v1/files/{second['file_id']}", headers=owner.headers)
    await run_jobs(harness)
    assert await storage.size(blob.storage_key) is None
    async with harness.state.database.transaction() as session:
        assert (await session.execute(select(FileBlob))).scalars().all() == []


async def test_image_variants_are_oriented_sized_and_stripped(harness: Harness) -> None:
    owner = await make_uploader(harness)
    photo = jpeg_with_gps_and_orientation()
    result = await upload_bytes(owner, photo, filename="site.jpg", mime_type="image/jpeg")
    pending = await harness.client.get(f"/api/v1/files/{result['file_id']}", headers=owner.headers)
    assert pending.json()["image"]["variants_status"] == "pending"
    await run_jobs(harness)
    body = (
        await harness.client.get(f"/api/v1/files/{result['file_id']}", headers=owner.headers)
    ).json()
    assert body["image"] == {"width": 400, "height": 800, "variants_status": "ready"}
    sizes = {(v["name"], v["format"]): (v["width"], v["height"]) for v in body["variants"]}
    # Portrait after orientation; never upscaled past the original's 800 px.
    assert sizes == {
        ("thumbnail", "webp"): (75, 150),
        ("thumbnail", "jpeg"): (75, 150),
        ("small", "webp"): (150, 300),
        ("small", "jpeg"): (150, 300),
        ("medium", "webp"): (300, 600),
        ("medium", "jpeg"): (300, 600),
        ("large", "webp"): (400, 800),
        ("large", "jpeg"): (400, 800),
    }
    for variant in body["variants"]:
        response = await harness.client.get(variant["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == variant["mime_type"]
        picture = Image.open(io.BytesIO(response.content))
        assert picture.size == (variant["width"], variant["height"])
        assert len(picture.getexif()) == 0
        assert "exif" not in picture.info
        rgb = picture.convert("RGB")
        # Rotated 90° clockwise: the red (left) half is now on top.
        top = rgb.getpixel((picture.width // 2, picture.height // 4))
        bottom = rgb.getpixel((picture.width // 2, 3 * picture.height // 4))
        assert isinstance(top, tuple)
        assert isinstance(bottom, tuple)
        assert (top[0] > 200, top[2] < 60) == (True, True), top
        assert (bottom[2] > 200, bottom[0] < 60) == (True, True), bottom
    async with harness.state.database.transaction() as session:
        assert len((await session.execute(select(FileVariant))).scalars().all()) == 8


async def test_inline_base64_image(harness: Harness) -> None:
    owner = await make_uploader(harness)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "green").save(buffer, "PNG")
    png = buffer.getvalue()
    for image in (
        "data:image/png;base64," + base64.b64encode(png).decode(),
        base64.b64encode(png).decode(),
    ):
        response = await harness.client.post(
            "/api/v1/files/images", json={"image": image}, headers=owner.headers
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["mime_type"] == "image/png"
        assert body["filename"] == "image.png"
        assert body["image"]["variants_status"] == "pending"
        assert (await harness.client.get(body["url"])).content == png
    async with harness.state.database.transaction() as session:
        assert len((await session.execute(select(FileBlob))).scalars().all()) == 1  # deduped

    lying = await harness.client.post(
        "/api/v1/files/images",
        json={"image": "data:image/jpeg;base64," + base64.b64encode(png).decode()},
        headers=owner.headers,
    )
    assert lying.status_code == 400
    assert lying.json()["code"] == "UPLOAD_001"
    for bad, code in (
        ("data:image/png;base64,@@@@", "UPLOAD_008"),
        (base64.b64encode(b"not an image at all").decode(), "UPLOAD_008"),
        ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "UPLOAD_008"),
    ):
        response = await harness.client.post(
            "/api/v1/files/images", json={"image": bad}, headers=owner.headers
        )
        assert response.status_code == 422, bad
        assert response.json()["code"] == code


async def test_decompression_bombs_and_corrupt_images_are_refused(harness: Harness) -> None:
    owner = await make_uploader(harness)
    # A tiny file that decodes to 200 megapixels.
    buffer = io.BytesIO()
    Image.new("1", (20_000, 10_000)).save(buffer, "PNG", optimize=True)
    bomb = buffer.getvalue()
    assert len(bomb) < 100_000
    inline = await harness.client.post(
        "/api/v1/files/images",
        json={"image": base64.b64encode(bomb).decode()},
        headers=owner.headers,
    )
    assert inline.status_code == 422
    assert inline.json()["code"] == "UPLOAD_008"
    assert inline.json()["reason"] == "image_too_many_pixels"

    upload = await owner.init(bomb, filename="bomb.png", mime_type="image/png")
    await owner.send_all(upload, bomb)
    refused = await owner.finalize(str(upload["upload_id"]))
    assert refused.status_code == 422
    assert refused.json()["code"] == "UPLOAD_008"

    photo = jpeg_with_gps_and_orientation()
    truncated = photo[: len(photo) // 2]
    upload = await owner.init(truncated, filename="broken.jpg", mime_type="image/jpeg")
    await owner.send_all(upload, truncated)
    corrupt = await owner.finalize(str(upload["upload_id"]))
    assert corrupt.status_code == 422
    assert corrupt.json()["code"] == "UPLOAD_008"


async def test_an_inline_image_name_follows_the_upload_filename_rules(harness: Harness) -> None:
    """The same file name rule as uploads: no control characters (a NUL was stored on SQLite
    and refused by PostgreSQL)."""
    owner = await make_uploader(harness)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, "PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    for filename in ("a\x00.png", "a\n.png"):
        refused = await harness.client.post(
            "/api/v1/files/images",
            json={"image": image, "filename": filename},
            headers=owner.headers,
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "VALIDATION_001"
        assert refused.json()["errors"][0]["field"] == "filename"
    accepted = await harness.client.post(
        "/api/v1/files/images", json={"image": image, "filename": "blå.png"}, headers=owner.headers
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["filename"] == "blå.png"
