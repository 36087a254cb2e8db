from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import httpx
import pytest
import rfc8785

from homeport_client import HomeportClient, HomeportError, HomeportNetworkError
from homeport_fake import FakeServer

pytestmark = pytest.mark.anyio

BASE = "http://homeport.test"


def pushes(server: FakeServer) -> list[httpx.Request]:
    return [r for r in server.requests if r.url.path == "/api/v1/sync/push"]


def pulls(server: FakeServer) -> list[httpx.Request]:
    return [r for r in server.requests if r.url.path == "/api/v1/sync/pull"]


# -- push ------------------------------------------------------------------------------------


async def test_push_body_and_applied_versions(client: HomeportClient, server: FakeServer) -> None:
    client.put("people", "p1", {"verification_id": "V1", "name": "Al"})
    client.delete("people", "p2")
    report = await client.push()
    assert report.applied == 2
    assert report.batches == 1
    assert client.pending() == 0
    body = json.loads(pushes(server)[0].content)
    assert body["device_id"] == "dev-a"
    assert body["mode"] == "best_effort"
    upsert, delete = body["changes"]
    assert upsert["collection"] == "people"
    assert upsert["id"] == "p1"
    assert upsert["op"] == "upsert"
    assert upsert["data"] == {"verification_id": "V1", "name": "Al"}
    assert upsert["base_version"] is None
    assert upsert["hash"] == hashlib.sha256(rfc8785.dumps(upsert["data"])).hexdigest()
    assert upsert["hlc"] < delete["hlc"]
    assert upsert["hlc"].endswith(":dev-a")
    assert delete["op"] == "delete"
    assert delete["data"] is None
    assert delete["hash"] is None
    assert client.version("people", "p1") == 1
    assert client.get("people", "p1") == {"verification_id": "V1", "name": "Al"}
    # the next change of that record is based on the version the server answered
    client.patch("people", "p1", {"name": "Alan"})
    await client.push()
    patch = json.loads(pushes(server)[1].content)["changes"][0]
    assert patch["op"] == "patch"
    assert patch["base_version"] == 1
    assert patch["data"] == {"name": "Alan"}
    assert client.get("people", "p1") == {"verification_id": "V1", "name": "Alan"}
    assert client.version("people", "p1") == 2


async def test_every_request_sends_the_protocol_header(
    client: HomeportClient, server: FakeServer
) -> None:
    client.put("c", "a", {"x": 1})
    await client.sync()
    assert {r.headers["x-homeport-protocol"] for r in server.requests} == {"1"}
    assert all(r.headers["authorization"].startswith("Bearer ") for r in server.requests[1:])


async def test_push_in_batches_never_twice_the_same_record(
    client: HomeportClient, server: FakeServer
) -> None:
    with client.transaction():
        for i in range(1200):
            client.put("notes", f"n{i:04d}", {"i": i})
        client.patch("notes", "n0000", {"j": 1})  # collapses into the first upsert
    report = await client.push(batch_size=500)
    sizes = [len(json.loads(r.content)["changes"]) for r in pushes(server)]
    assert sizes == [500, 500, 200]
    assert report.batches == 3
    assert report.applied == 1200
    keys = {json.loads(r.content)["idempotency_key"] for r in pushes(server)}
    assert len(keys) == 3
    assert client.pending() == 0
    assert server.records[("notes", "n0000")].data == {"i": 0, "j": 1}


async def test_batch_size_is_validated(client: HomeportClient) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await client.push(batch_size=1001)


async def test_lost_answer_is_resent_with_same_key_and_body(
    client: HomeportClient, server: FakeServer
) -> None:
    client.put("people", "p1", {"name": "Al"})
    client.put("people", "p2", {"name": "Bo"})
    server.lose_push_answers = 1  # the server applies the batch but the answer never arrives
    with pytest.raises(HomeportNetworkError):
        await client.push()
    assert client.pending() == 2
    # an edit made meanwhile must not change the unanswered batch
    client.patch("people", "p1", {"name": "Alan"})
    report = await client.push()
    first, resent, follow_up = pushes(server)
    assert resent.content == first.content
    assert (
        json.loads(resent.content)["idempotency_key"]
        == json.loads(first.content)["idempotency_key"]
    )
    assert report.batches == 2
    assert report.conflicts == []
    assert client.pending() == 0
    # each record was applied exactly once by the first batch
    assert server.records[("people", "p2")].version == 1
    follow = json.loads(follow_up.content)["changes"]
    assert follow == [
        {
            "collection": "people",
            "id": "p1",
            "op": "patch",
            "data": {"name": "Alan"},
            "base_version": 1,
            "hlc": follow[0]["hlc"],
            "hash": follow[0]["hash"],
        }
    ]
    assert client.get("people", "p1") == {"name": "Alan"}


async def test_unanswered_batch_survives_a_restart(server: FakeServer, store_path: str) -> None:
    async with HomeportClient(BASE, store_path, "dev-a", transport=server.transport) as c:
        await c.login("a@example.com", "pw")
        c.put("notes", "n1", {"text": "hi"})
        server.lose_push_answers = 1
        with pytest.raises(HomeportNetworkError):
            await c.push()
    async with HomeportClient(BASE, store_path, "dev-a", transport=server.transport) as c:
        assert c.pending() == 1
        report = await c.push()  # tokens were persisted too
        assert report.applied == 1
        assert c.pending() == 0
    first, resent = pushes(server)
    assert first.content == resent.content


async def test_server_error_keeps_the_batch(client: HomeportClient, server: FakeServer) -> None:
    client.put("notes", "n1", {"text": "hi"})
    server.fail_push_before_apply = 1
    with pytest.raises(HomeportError) as info:
        await client.push()
    assert info.value.status == 503
    assert info.value.code == "UNAVAILABLE"
    assert info.value.trace_id == "trace-1"
    await client.push()
    first, second = pushes(server)
    assert first.content == second.content
    assert client.pending() == 0


async def test_idempotency_key_reused_with_another_body_gets_a_new_key(
    client: HomeportClient, server: FakeServer
) -> None:
    client.put("notes", "n1", {"text": "hi"})
    batch = client._store.build_batch("taken-key", "dev-a", "best_effort", 500)
    assert batch is not None
    server.idempotency["taken-key"] = (b"another body", {})
    report = await client.push()
    assert report.applied == 1
    first, second = pushes(server)
    assert json.loads(first.content)["idempotency_key"] == "taken-key"
    assert json.loads(second.content)["idempotency_key"] != "taken-key"
    assert json.loads(second.content)["changes"] == json.loads(first.content)["changes"]


async def test_conflict_calls_the_callback_and_applies_server_state(
    client: HomeportClient, server: FakeServer
) -> None:
    server.write("people", "p1", {"name": "Server"})
    await client.pull()
    assert client.version("people", "p1") == 1
    server.write("people", "p1", {"name": "Other device"})  # version 2, not seen by us
    client.patch("people", "p1", {"name": "Mine"})
    assert client.get("people", "p1") == {"name": "Mine"}
    seen: list[dict[str, Any]] = []
    client.on_conflict(seen.append)

    async def async_callback(conflict: dict[str, Any]) -> None:
        seen.append(conflict)

    client.on_conflict(async_callback)
    report = await client.push()
    assert json.loads(pushes(server)[0].content)["changes"][0]["base_version"] == 1
    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert seen[0]["id"] == "p1"
    assert seen[0]["server"]["version"] == 2
    assert report.conflicts == [seen[0]]
    assert client.pending() == 0
    assert client.get("people", "p1") == {"name": "Other device"}
    assert client.version("people", "p1") == 2


async def test_rejected_changes_go_to_the_error_callback(
    client: HomeportClient, server: FakeServer
) -> None:
    client.put("forbidden", "x1", {"a": 1})
    client.put("notes", "n1", {"a": 1})
    errors: list[dict[str, Any]] = []
    client.on_error(errors.append)
    report = await client.push()
    assert errors == [{"item_id": "x1", "error": "FORBIDDEN", "message": "no"}]
    assert report.errors == errors
    assert report.applied == 1
    assert report.failed_items == 1
    assert client.pending() == 0
    assert client.get("forbidden", "x1") is None


async def test_changes_missing_from_the_answer_stay_queued(
    client: HomeportClient, server: FakeServer
) -> None:
    client.put("notes", "n1", {"a": 1})
    client.put("notes", "n2", {"a": 2})
    server.silent_ids = {"n2"}
    report = await client.push()
    assert report.requeued == 1
    assert client.pending() == 1
    server.silent_ids = set()
    client.patch("notes", "n2", {"b": 3})  # merges into the requeued change
    await client.push()
    assert client.pending() == 0
    assert server.records[("notes", "n2")].data == {"a": 2, "b": 3}


# -- pull ------------------------------------------------------------------------------------


async def test_pull_pages_and_persists_the_cursor(server: FakeServer, store_path: str) -> None:
    for i in range(25):
        server.write("notes", f"n{i:02d}", {"i": i})
    async with HomeportClient(BASE, store_path, "dev-a", transport=server.transport) as c:
        await c.login("a@example.com", "pw")
        report = await c.pull(limit=10)
        assert report.applied == 25
        assert report.pages == 3
        assert report.cursor == "25"
        assert len(c.all("notes")) == 25
        assert "cursor" not in pulls(server)[0].url.params
        assert pulls(server)[1].url.params["cursor"] == "10"
    server.write("notes", "n00", None)
    server.write("notes", "new", {"i": 99})
    async with HomeportClient(BASE, store_path, "dev-a", transport=server.transport) as c:
        assert c.cursor() == "25"
        report = await c.pull(limit=10)
        assert pulls(server)[-1].url.params["cursor"] == "25"
        assert report.applied == 2
        assert c.get("notes", "n00") is None
        assert c.get("notes", "new") == {"i": 99}
        assert len(c.all("notes")) == 25


async def test_pull_with_collections_keeps_its_own_cursor(
    client: HomeportClient, server: FakeServer
) -> None:
    server.write("a", "1", {"v": 1})
    server.write("b", "1", {"v": 1})
    report = await client.pull(collections=["a"])
    assert pulls(server)[0].url.params["collections"] == "a"
    assert report.applied == 1
    assert client.get("b", "1") is None
    report = await client.pull()  # all collections: starts from its own (empty) cursor
    assert client.get("b", "1") == {"v": 1}


async def test_pending_local_change_wins_over_pulled_state(
    client: HomeportClient, server: FakeServer
) -> None:
    server.write("notes", "n1", {"text": "v1", "tag": "x"})
    await client.pull()
    client.patch("notes", "n1", {"text": "local"})
    server.write("notes", "n1", {"text": "v2", "tag": "y"})
    await client.pull()
    assert client.version("notes", "n1") == 2
    assert client.get("notes", "n1") == {"text": "local", "tag": "y"}
    client.delete("notes", "n1")
    await client.pull()
    assert client.get("notes", "n1") is None
    assert client.all("notes") == []


async def test_reset_required_wipes_replica_keeps_outbox(
    client: HomeportClient, server: FakeServer
) -> None:
    server.write("notes", "n1", {"v": 1})
    await client.pull()
    client._store._db.execute(
        "INSERT INTO records (collection, id, version, data) VALUES ('notes', 'ghost', 1, '{}')"
    )
    client.put("notes", "mine", {"v": 2})
    server.reset_required = True
    report = await client.pull()
    assert report.reset is True
    paths = [r.url.path for r in server.requests]
    assert "/api/v1/sync/force-sync" in paths
    assert pulls(server)[-1].url.params["cursor"] == "0"
    assert client.get("notes", "ghost") is None  # wiped
    assert client.get("notes", "n1") == {"v": 1}  # pulled again
    assert client.get("notes", "mine") == {"v": 2}  # outbox kept
    assert client.pending() == 1


async def test_force_sync(client: HomeportClient, server: FakeServer) -> None:
    server.write("notes", "n1", {"v": 1})
    report = await client.force_sync()
    assert report.reset is True
    assert client.get("notes", "n1") == {"v": 1}


async def test_sync_pushes_then_pulls(client: HomeportClient, server: FakeServer) -> None:
    server.write("notes", "theirs", {"v": 1})
    client.put("notes", "mine", {"v": 2})
    report = await client.sync()
    assert report.push.applied == 1
    assert report.pull.applied == 2
    assert client.pending() == 0
    assert [d["v"] for d in client.all("notes")] == [2, 1]


async def test_remote_hlc_in_pulls_advances_the_clock(
    client: HomeportClient, server: FakeServer
) -> None:
    ahead = "9999999999999:00000:other"
    original = server._pull

    def pull_with_hlc(request: httpx.Request) -> httpx.Response:
        response = original(request)
        page = json.loads(response.content)
        for change in page["changes"]:
            change["hlc"] = ahead
        return httpx.Response(200, json=page)

    server._pull = pull_with_hlc  # type: ignore[method-assign]
    server.write("notes", "n1", {"v": 1})
    await client.pull()
    client.put("notes", "n2", {"v": 2})
    assert client.last_hlc > ahead


# -- auth ------------------------------------------------------------------------------------


async def test_login_stores_tokens(client: HomeportClient, server: FakeServer) -> None:
    login = json.loads(server.requests[0].content)
    assert login == {"email": "a@example.com", "password": "pw", "device_id": "dev-a"}
    assert client.is_logged_in
    assert client.session_id == "sess-1"
    assert client.tenant_id == "tenant-1"


async def test_expired_access_token_is_refreshed_once(
    client: HomeportClient, server: FakeServer
) -> None:
    server.expired_tokens.add("at-1")
    client.put("notes", "n1", {"v": 1})
    report = await client.push()
    assert report.applied == 1
    assert server.used_refresh_tokens == ["rt-1"]
    assert client._store.get_meta("refresh_token") == "rt-2"
    assert client._store.get_meta("access_token") == "at-2"
    server.expired_tokens.add("at-2")
    await client.pull()
    assert server.used_refresh_tokens == ["rt-1", "rt-2"]  # never the same token twice


async def test_failed_refresh_raises_and_forgets_tokens(
    client: HomeportClient, server: FakeServer
) -> None:
    server.expired_tokens.add("at-1")
    server.refresh_token = "rotated-elsewhere"
    with pytest.raises(HomeportError) as info:
        await client.pull()
    assert info.value.code == "AUTH_003"
    assert not client.is_logged_in
    with pytest.raises(HomeportError) as info:
        await client.pull()
    assert info.value.code == "AUTH_001"
    assert server.used_refresh_tokens == ["rt-1"]


async def test_not_logged_in(store_path: str, server: FakeServer) -> None:
    async with HomeportClient(BASE, store_path, "dev-a", transport=server.transport) as c:
        with pytest.raises(HomeportError) as info:
            await c.pull()
    assert info.value.status == 401
    assert server.requests == []


async def test_problem_details_are_parsed() -> None:
    response = httpx.Response(
        400,
        json={
            "type": "t",
            "title": "Tenant required",
            "status": 400,
            "detail": "pick one",
            "code": "AUTH_007",
            "trace_id": "tr",
            "tenants": ["a", "b"],
        },
    )
    error = HomeportError.from_response(response)
    assert (error.status, error.code, error.detail) == (400, "AUTH_007", "pick one")
    assert error.problem["tenants"] == ["a", "b"]
    plain = HomeportError.from_response(httpx.Response(502, text="bad gateway"))
    assert (plain.status, plain.code, plain.detail) == (502, "HTTP_502", "bad gateway")


async def test_atomic_mode_is_sent(client: HomeportClient, server: FakeServer) -> None:
    client.put("notes", "n1", {"v": 1})
    await client.push(mode="atomic")
    assert json.loads(pushes(server)[0].content)["mode"] == "atomic"


async def test_connection_error_during_pull_keeps_the_cursor(
    client: HomeportClient, server: FakeServer
) -> None:
    for i in range(3):
        server.write("notes", f"n{i}", {"v": i})
    await client.pull(limit=2)
    assert client.cursor() == "3"
    server.write("notes", "n9", {"v": 9})
    original = server._pull

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down", request=request)

    server._pull = broken  # type: ignore[method-assign]
    with pytest.raises(HomeportNetworkError):
        await client.pull()
    assert client.cursor() == "3"
    server._pull = original  # type: ignore[method-assign]
    report = await client.pull()
    assert report.applied == 1
    assert client.get("notes", "n9") == {"v": 9}


async def test_concurrent_requests_refresh_only_once(
    client: HomeportClient, server: FakeServer
) -> None:
    server.expired_tokens.add("at-1")
    client.put("notes", "n1", {"v": 1})
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.push)
        tg.start_soon(client.pull)
    assert server.used_refresh_tokens == ["rt-1"]
    assert client.pending() == 0
