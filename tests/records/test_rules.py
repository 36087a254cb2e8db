"""The collection's read and write rules apply on every verb, exactly as for sync."""

from __future__ import annotations

from typing import Any

from tests.records.conftest import ORDERS_SCHEMA, Rest
from tests.sync.conftest import Device

NOTES = "/api/v1/collections/notes/records"
BOARD = "/api/v1/collections/board/records"
LEDGER = "/api/v1/collections/ledger/records"


async def _verbs(rest: Rest, path: str, device: Device, record_id: str) -> dict[str, int]:
    """The status of each verb for ``device`` on ``record_id`` (the writes change nothing when
    refused; a fresh id is used for the create)."""
    headers = device.headers
    client = rest.client
    return {
        "list": (await client.get(path, headers=headers)).status_code,
        "get": (await client.get(f"{path}/{record_id}", headers=headers)).status_code,
        "create": (await client.post(path, json={"title": "new"}, headers=headers)).status_code,
        "put": (
            await client.put(f"{path}/{record_id}", json={"title": "x"}, headers=headers)
        ).status_code,
        "patch": (
            await client.patch(f"{path}/{record_id}", json={"status": "y"}, headers=headers)
        ).status_code,
        "batch": (
            await client.post(
                f"{path}:batch",
                json={"operations": [{"op": "patch", "id": record_id, "data": {"status": "z"}}]},
                headers=headers,
            )
        ).json()["results"][0]["status"]
        if (await client.get(path, headers=headers)).status_code != 403
        else 403,
        "delete": (await client.delete(f"{path}/{record_id}", headers=headers)).status_code,
    }


async def _collection(rest: Rest, name: str, read: str, write: str) -> None:
    await rest.world.collection(name, schema=ORDERS_SCHEMA, read=read, write=write)


async def test_owner_rule_on_every_verb(rest: Rest) -> None:
    await _collection(rest, "notes", "owner", "owner")
    alice = await rest.world.device("alice@acme.example.com", "member")
    bob = await rest.world.device("bob@acme.example.com", "member")
    await rest.create({"id": "n1", "title": "alice's"}, alice.headers, NOTES)
    bob_sees = await _verbs(rest, NOTES, bob, "n1")
    # To bob, alice's record does not exist; he may create his own.
    assert bob_sees == {
        "list": 200, "get": 404, "create": 201, "put": 404, "patch": 404, "batch": 404,
        "delete": 404,
    }  # fmt: skip
    listed = (await rest.client.get(NOTES, headers=bob.headers)).json()["data"]
    assert [item["data"]["title"] for item in listed] == ["new"]
    kept = await rest.client.get(f"{NOTES}/n1", headers=alice.headers)
    assert kept.json()["data"] == {"id": "n1", "title": "alice's"}
    assert kept.json()["version"] == 1
    alice_sees = await _verbs(rest, NOTES, alice, "n1")
    assert alice_sees == {
        "list": 200, "get": 200, "create": 201, "put": 200, "patch": 200, "batch": 200,
        "delete": 204,
    }  # fmt: skip


async def test_tenant_rule_on_every_verb(rest: Rest) -> None:
    await _collection(rest, "board", "tenant", "tenant")
    alice = await rest.world.device("alice@acme.example.com", "member")
    bob = await rest.world.device("bob@acme.example.com", "member")
    await rest.create({"id": "b1", "title": "shared"}, alice.headers, BOARD)
    assert await _verbs(rest, BOARD, bob, "b1") == {
        "list": 200, "get": 200, "create": 201, "put": 200, "patch": 200, "batch": 200,
        "delete": 204,
    }  # fmt: skip


async def test_role_rule_on_every_verb(rest: Rest) -> None:
    await _collection(rest, "ledger", "role:manager", "role:manager")
    manager = await rest.world.device("manager@acme.example.com", "manager")
    member = await rest.world.device("member@acme.example.com", "member")
    await rest.create({"id": "l1", "title": "books"}, manager.headers, LEDGER)
    assert await _verbs(rest, LEDGER, member, "l1") == {
        "list": 403, "get": 403, "create": 403, "put": 404, "patch": 404, "batch": 403,
        "delete": 404,
    }  # fmt: skip
    unchanged = await rest.client.get(f"{LEDGER}/l1", headers=manager.headers)
    assert unchanged.json()["version"] == 1
    assert await _verbs(rest, LEDGER, manager, "l1") == {
        "list": 200, "get": 200, "create": 201, "put": 200, "patch": 200, "batch": 200,
        "delete": 204,
    }  # fmt: skip


async def test_read_tenant_write_role(rest: Rest) -> None:
    await _collection(rest, "board", "tenant", "role:admin")
    member = await rest.world.device("member@acme.example.com", "member")
    await rest.create({"id": "b1", "title": "notice"}, path=BOARD)
    statuses = await _verbs(rest, BOARD, member, "b1")
    assert statuses == {
        "list": 200, "get": 200, "create": 403, "put": 403, "patch": 403, "batch": 403,
        "delete": 403,
    }  # fmt: skip
    assert statuses["get"] == 200


async def test_api_keys_need_the_scope_and_are_not_bound_by_rules(rest: Rest) -> None:
    await _collection(rest, "notes", "owner", "owner")
    alice = await rest.world.device("alice@acme.example.com", "member")
    await rest.create({"id": "n1", "title": "alice's"}, alice.headers, NOTES)
    reader: dict[str, Any] = await rest.api_key("collections:read")
    writer: dict[str, Any] = await rest.api_key("collections:read", "collections:write")
    none: dict[str, Any] = await rest.api_key("tenant:read")
    assert (await rest.client.get(NOTES, headers=none)).status_code == 403
    listed = await rest.client.get(NOTES, headers=reader)
    assert [item["id"] for item in listed.json()["data"]] == ["n1"]
    refused = await rest.client.patch(f"{NOTES}/n1", json={"status": "x"}, headers=reader)
    assert refused.status_code == 403
    changed = await rest.client.patch(f"{NOTES}/n1", json={"status": "x"}, headers=writer)
    assert changed.status_code == 200, changed.text
    # The record stays alice's: she still sees the server's change.
    mine = await rest.client.get(f"{NOTES}/n1", headers=alice.headers)
    assert mine.json()["data"]["status"] == "x"
    created = await rest.client.post(NOTES, json={"title": "erp"}, headers=writer)
    assert created.status_code == 201
    # No owner: only tenant-wide callers (the key) see it, not alice.
    alice_list = await rest.client.get(NOTES, headers=alice.headers)
    assert [item["id"] for item in alice_list.json()["data"]] == ["n1"]


async def test_other_tenants_records_are_invisible(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "acme's"})
    other = await rest.harness.create_tenant("globex")
    headers = await rest.harness.owner_headers(other)
    answer = await rest.client.get("/api/v1/collections/orders/records/o1", headers=headers)
    assert answer.status_code == 404
    listed = await rest.client.get("/api/v1/collections/orders/records", headers=headers)
    assert listed.status_code == 404
    written = await rest.client.put(
        "/api/v1/collections/orders/records/o1", json={"title": "x"}, headers=headers
    )
    assert written.status_code == 404
