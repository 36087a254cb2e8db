"""Tenant isolation: for every endpoint, tenant A's callers get 404 (never data) for B's objects.

The route inventory check fails when an endpoint with a path parameter is added without being
covered here.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import Harness

COVERED = {
    ("GET", "/api/v1/tenants/{tenant_id}"),
    ("GET", "/api/v1/tenants/{tenant_id}/members"),
    ("POST", "/api/v1/tenants/{tenant_id}/members"),
    ("PATCH", "/api/v1/tenants/{tenant_id}/members/{user_id}"),
    ("DELETE", "/api/v1/tenants/{tenant_id}/members/{user_id}"),
    ("DELETE", "/api/v1/auth/sessions/{session_id}"),
    ("DELETE", "/api/v1/api-keys/{key_id}"),
    ("GET", "/api/v1/collections/{name}"),
    ("PUT", "/api/v1/collections/{name}"),
    ("DELETE", "/api/v1/collections/{name}"),
    ("GET", "/api/v1/sync/policies/{tenant_id}/{domain}"),
    ("PUT", "/api/v1/sync/policies/{tenant_id}/{domain}"),
    ("POST", "/api/v1/sync/conflicts/{conflict_id}/resolve"),
    ("DELETE", "/api/v1/sync/conflicts/{conflict_id}"),
    ("POST", "/api/v1/devices/{device_id}/inbox"),
    ("POST", "/api/v1/uploads/{upload_id}/chunk/{chunk_index}"),
    ("GET", "/api/v1/uploads/{upload_id}/status"),
    ("POST", "/api/v1/uploads/{upload_id}/finalize"),
    ("DELETE", "/api/v1/uploads/{upload_id}"),
    ("HEAD", "/api/v1/tus/{upload_id}"),
    ("PATCH", "/api/v1/tus/{upload_id}"),
    ("DELETE", "/api/v1/tus/{upload_id}"),
    ("GET", "/api/v1/files/{file_id}"),
    ("DELETE", "/api/v1/files/{file_id}"),
    ("GET", "/api/v1/files/{file_id}/content"),
    ("HEAD", "/api/v1/files/{file_id}/content"),
    ("GET", "/api/v1/collections/{collection}/records"),
    ("POST", "/api/v1/collections/{collection}/records"),
    ("GET", "/api/v1/collections/{collection}/records/{record_id}"),
    ("PUT", "/api/v1/collections/{collection}/records/{record_id}"),
    ("PATCH", "/api/v1/collections/{collection}/records/{record_id}"),
    ("DELETE", "/api/v1/collections/{collection}/records/{record_id}"),
    ("POST", "/api/v1/collections/{collection}/records:batch"),
}


async def _world(harness: Harness) -> dict[str, Any]:
    acme = await harness.create_tenant("acme")
    globex = await harness.create_tenant("globex")
    globex_tokens = await harness.login(globex.owner_email, globex.owner_password, "g-phone")
    globex_headers = {"Authorization": f"Bearer {globex_tokens['access_token']}"}
    globex_key = (
        await harness.client.post(
            "/api/v1/api-keys",
            json={"name": "g", "scopes": ["members:read", "members:write", "tenant:read"]},
            headers=globex_headers,
        )
    ).json()
    globex_owner_id = (await harness.client.get("/api/v1/auth/me", headers=globex_headers)).json()[
        "user_id"
    ]
    acme_owner = await harness.owner_headers(acme)
    acme_key = (
        await harness.client.post(
            "/api/v1/api-keys",
            json={"name": "a", "scopes": ["members:read", "members:write", "tenant:read"]},
            headers=acme_owner,
        )
    ).json()["key"]
    return {
        "acme": acme,
        "globex": globex,
        "globex_session": globex_tokens["session_id"],
        "globex_key_id": globex_key["id"],
        "globex_owner_id": globex_owner_id,
        "callers": {"acme owner": acme_owner, "acme api key": {"X-API-Key": acme_key}},
    }


def test_every_endpoint_with_an_object_id_is_covered() -> None:
    from homeport.app import create_app

    paths = create_app().openapi()["paths"]
    with_ids = {
        (method.upper(), path)
        for path, operations in paths.items()
        if "{" in path
        for method in operations
    }
    assert with_ids == COVERED


async def test_other_tenants_objects_are_not_found(harness: Harness) -> None:
    world = await _world(harness)
    globex = world["globex"]
    requests = [
        ("GET", f"/api/v1/tenants/{globex.id}", None),
        ("GET", f"/api/v1/tenants/{globex.id}/members", None),
        ("POST", f"/api/v1/tenants/{globex.id}/members", {"email": "spy@evil.example.com"}),
        (
            "PATCH",
            f"/api/v1/tenants/{globex.id}/members/{world['globex_owner_id']}",
            {"role": "member"},
        ),
        ("DELETE", f"/api/v1/tenants/{globex.id}/members/{world['globex_owner_id']}", None),
        # B's user addressed through A's tenant path
        (
            "PATCH",
            f"/api/v1/tenants/{world['acme'].id}/members/{world['globex_owner_id']}",
            {"role": "member"},
        ),
        ("DELETE", f"/api/v1/tenants/{world['acme'].id}/members/{world['globex_owner_id']}", None),
        ("DELETE", f"/api/v1/auth/sessions/{world['globex_session']}", None),
        ("DELETE", f"/api/v1/api-keys/{world['globex_key_id']}", None),
    ]
    for caller, headers in world["callers"].items():
        for method, path, body in requests:
            if caller == "acme api key" and path.startswith(
                ("/api/v1/auth/sessions", "/api/v1/api-keys")
            ):
                continue  # keys have no sessions and cannot manage keys (403 before lookup)
            response = await harness.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 404, (caller, method, path, response.text)
            assert response.json()["code"] == "NOT_FOUND"
            assert globex.slug not in response.text
    # And nothing changed for globex.
    globex_headers = await harness.owner_headers(globex, "check")
    members = (
        await harness.client.get(f"/api/v1/tenants/{globex.id}/members", headers=globex_headers)
    ).json()["members"]
    assert [(m["email"], m["role"]) for m in members] == [(globex.owner_email, "owner")]
    keys = (await harness.client.get("/api/v1/api-keys", headers=globex_headers)).json()
    assert keys["api_keys"][0]["revoked_at"] is None
    sessions = (await harness.client.get("/api/v1/auth/sessions", headers=globex_headers)).json()
    assert world["globex_session"] in [s["id"] for s in sessions["sessions"]]


async def test_lists_only_show_the_callers_tenant(harness: Harness) -> None:
    world = await _world(harness)
    acme_owner = world["callers"]["acme owner"]
    tenants = (await harness.client.get("/api/v1/tenants", headers=acme_owner)).json()["tenants"]
    assert [t["slug"] for t in tenants] == ["acme"]
    keys = (await harness.client.get("/api/v1/api-keys", headers=acme_owner)).json()["api_keys"]
    assert [k["name"] for k in keys] == ["a"]
    sessions = (await harness.client.get("/api/v1/auth/sessions", headers=acme_owner)).json()
    assert world["globex_session"] not in [s["id"] for s in sessions["sessions"]]
    key_view = await harness.client.get("/api/v1/tenants", headers=world["callers"]["acme api key"])
    assert [t["slug"] for t in key_view.json()["tenants"]] == ["acme"]


async def _globex_sync(harness: Harness, headers: dict[str, str]) -> str:
    """Globex's private collection, a record and a pending conflict; returns the conflict id."""
    created = await harness.client.post(
        "/api/v1/collections",
        json={"name": "orders", "read": "tenant", "write": "tenant", "conflict_policy": "manual"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    change = {"collection": "orders", "id": "o1", "op": "upsert", "data": {"total": 5}}
    first = await harness.client.post(
        "/api/v1/sync/push", json={"idempotency_key": "a", "changes": [change]}, headers=headers
    )
    assert first.json()["results"][0]["status"] == "applied"
    second = await harness.client.post(
        "/api/v1/sync/push", json={"idempotency_key": "b", "changes": [change]}, headers=headers
    )
    conflict_id: str = second.json()["conflicts"][0]["conflict_id"]
    return conflict_id


async def test_other_tenants_sync_objects_are_not_found(harness: Harness) -> None:
    world = await _world(harness)
    globex = world["globex"]
    globex_headers = await harness.owner_headers(globex, "g-sync")
    conflict_id = await _globex_sync(harness, globex_headers)
    acme_owner = world["callers"]["acme owner"]
    spec = {"read": "tenant", "write": "tenant"}
    requests = [
        ("GET", "/api/v1/collections/orders", None),
        ("PUT", "/api/v1/collections/orders", spec),
        ("DELETE", "/api/v1/collections/orders", None),
        ("GET", f"/api/v1/sync/policies/{globex.id}/orders", None),
        ("PUT", f"/api/v1/sync/policies/{globex.id}/orders", {"resolution_policy": "client_wins"}),
        ("POST", f"/api/v1/sync/conflicts/{conflict_id}/resolve", {"resolution": "accept_client"}),
        ("DELETE", f"/api/v1/sync/conflicts/{conflict_id}", None),
        ("POST", "/api/v1/devices/g-sync/inbox", {"kind": "wipe", "body": {}}),
    ]
    for method, path, body in requests:
        response = await harness.client.request(method, path, json=body, headers=acme_owner)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "NOT_FOUND"
    acme_pull = await harness.client.get("/api/v1/sync/pull", headers=acme_owner)
    assert acme_pull.json()["changes"] == []
    conflicts = await harness.client.get(
        "/api/v1/sync/conflicts", params={"tenant_id": globex.id}, headers=acme_owner
    )
    assert conflicts.json()["conflicts"] == []
    # Nothing changed for globex.
    policy = await harness.client.get(
        f"/api/v1/sync/policies/{globex.id}/orders", headers=globex_headers
    )
    assert policy.json()["resolution_policy"] == "manual"
    pending = await harness.client.get("/api/v1/sync/conflicts", headers=globex_headers)
    assert [c["resolution_result"] for c in pending.json()["conflicts"]] == ["pending"]


async def test_other_tenants_files_and_uploads_are_not_found(harness: Harness) -> None:
    import hashlib

    world = await _world(harness)
    globex_headers = await harness.owner_headers(world["globex"], "g-files")
    data = b"globex secret plans " * 100
    digest = hashlib.sha256(data).hexdigest()
    init_body = {"filename": "plans.txt", "total_size": len(data), "file_hash": digest}

    async def start() -> str:
        response = await harness.client.post(
            "/api/v1/uploads/init", json=init_body, headers=globex_headers
        )
        assert response.status_code == 201, response.text
        upload_id: str = response.json()["upload_id"]
        return upload_id

    finished_upload = await start()
    chunk_headers = {**globex_headers, "X-Chunk-Checksum": digest}
    sent = await harness.client.post(
        f"/api/v1/uploads/{finished_upload}/chunk/0", content=data, headers=chunk_headers
    )
    assert sent.status_code == 200, sent.text
    final = await harness.client.post(
        f"/api/v1/uploads/{finished_upload}/finalize", headers=globex_headers
    )
    file_id = final.json()["file_id"]
    open_upload = await start()
    tus = await harness.client.post(
        "/api/v1/tus/",
        headers={**globex_headers, "Tus-Resumable": "1.0.0", "Upload-Length": "10"},
    )
    tus_id = tus.headers["location"].rsplit("/", 1)[-1]
    tus_headers = {"Tus-Resumable": "1.0.0"}
    requests: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("POST", f"/api/v1/uploads/{open_upload}/chunk/0", {"X-Chunk-Checksum": digest}, data),
        ("GET", f"/api/v1/uploads/{open_upload}/status", {}, None),
        ("POST", f"/api/v1/uploads/{open_upload}/finalize", {}, None),
        ("DELETE", f"/api/v1/uploads/{open_upload}", {}, None),
        ("HEAD", f"/api/v1/tus/{tus_id}", tus_headers, None),
        (
            "PATCH",
            f"/api/v1/tus/{tus_id}",
            {
                **tus_headers,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            b"0123456789",
        ),
        ("DELETE", f"/api/v1/tus/{tus_id}", tus_headers, None),
        ("GET", f"/api/v1/files/{file_id}", {}, None),
        ("DELETE", f"/api/v1/files/{file_id}", {}, None),
    ]
    acme_key = (
        await harness.client.post(
            "/api/v1/api-keys",
            json={"name": "files", "scopes": ["files:read", "files:write"]},
            headers=world["callers"]["acme owner"],
        )
    ).json()["key"]
    for caller in (world["callers"]["acme owner"], {"X-API-Key": acme_key}):
        for method, path, extra, body in requests:
            response = await harness.client.request(
                method, path, content=body, headers={**caller, **extra}
            )
            assert response.status_code == 404, (method, path, response.text)
            if method != "HEAD":
                assert response.json()["code"] == "NOT_FOUND"
                assert "secret" not in response.text
        listed = await harness.client.get("/api/v1/files", headers=caller)
        assert listed.json()["files"] == []
    # A signed URL is bound to its file: acme cannot reuse one for globex's file.
    acme_data = b"acme"
    acme_upload = (
        await harness.client.post(
            "/api/v1/uploads/init",
            json={
                "filename": "a.txt",
                "total_size": 4,
                "file_hash": hashlib.sha256(acme_data).hexdigest(),
            },
            headers=world["callers"]["acme owner"],
        )
    ).json()["upload_id"]
    await harness.client.post(
        f"/api/v1/uploads/{acme_upload}/chunk/0",
        content=acme_data,
        headers={
            **world["callers"]["acme owner"],
            "X-Chunk-Checksum": hashlib.sha256(acme_data).hexdigest(),
        },
    )
    acme_file = await harness.client.post(
        f"/api/v1/uploads/{acme_upload}/finalize", headers=world["callers"]["acme owner"]
    )
    query = acme_file.json()["file_url"].split("?", 1)[1]
    forged = await harness.client.get(f"/api/v1/files/{file_id}/content?{query}")
    assert forged.status_code == 403
    # Globex still has everything.
    status = await harness.client.get(
        f"/api/v1/uploads/{open_upload}/status", headers=globex_headers
    )
    assert status.json()["status"] == "open"
    mine = await harness.client.get(f"/api/v1/files/{file_id}", headers=globex_headers)
    assert mine.status_code == 200
    assert (await harness.client.get(mine.json()["url"])).content == data


async def test_other_tenants_records_are_not_found(harness: Harness) -> None:
    world = await _world(harness)
    globex_headers = await harness.owner_headers(world["globex"], "g-records")
    await _globex_sync(harness, globex_headers)
    acme_key = await harness.client.post(
        "/api/v1/api-keys",
        json={"name": "rw", "scopes": ["collections:read", "collections:write"]},
        headers=world["callers"]["acme owner"],
    )
    callers = {
        "acme owner": world["callers"]["acme owner"],
        "acme records key": {"X-API-Key": acme_key.json()["key"]},
    }
    records = "/api/v1/collections/orders/records"
    requests = [
        ("GET", records, None),
        ("POST", records, {"id": "o2", "total": 1}),
        ("GET", f"{records}/o1", None),
        ("PUT", f"{records}/o1", {"total": 0}),
        ("PATCH", f"{records}/o1", {"total": 0}),
        ("DELETE", f"{records}/o1", None),
        ("POST", f"{records}:batch", {"operations": [{"op": "delete", "id": "o1"}]}),
    ]
    for caller, headers in callers.items():
        for method, path, body in requests:
            response = await harness.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 404, (caller, method, path, response.text)
            assert response.json()["code"] == "NOT_FOUND"
    # Nothing changed for globex.
    record = await harness.client.get(f"{records}/o1", headers=globex_headers)
    assert record.status_code == 200
    assert record.json()["version"] == 1
    assert record.json()["data"] == {"total": 5}
