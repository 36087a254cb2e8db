"""Search test helpers: a tenant with a searchable collection and devices that write to it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.realtime.conftest import live, live_server, live_settings
from tests.sync.conftest import Device, World, upsert, world

__all__ = [
    "NOTE_SCHEMA",
    "Device",
    "World",
    "hit_ids",
    "live",
    "live_server",
    "live_settings",
    "note",
    "push_ok",
    "search",
    "searchable",
    "upsert",
    "world",
]

NOTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "body": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "string"},
        "urgent": {"type": "boolean"},
        "priority": {"type": "integer"},
    },
}


def note(record_id: str, title: str, body: str = "", **fields: Any) -> dict[str, Any]:
    return upsert("notes", record_id, {"title": title, "body": body, **fields})


async def searchable(
    world: World,
    name: str = "notes",
    *,
    fields: tuple[str, ...] = ("title", "body", "tags"),
    facets: tuple[str, ...] = ("status", "urgent", "priority"),
    read: str = "tenant",
    write: str = "tenant",
) -> None:
    await world.collection(
        name,
        schema=NOTE_SCHEMA,
        read=read,
        write=write,
        searchable=list(fields),
        facets=list(facets),
    )


async def search(device: Device, q: str, **params: Any) -> httpx.Response:
    return await device.harness.client.get(
        "/api/v1/search", params={"q": q, **params}, headers=device.headers
    )


async def hit_ids(device: Device, q: str, **params: Any) -> list[str]:
    answer = await search(device, q, **params)
    assert answer.status_code == 200, answer.text
    return [hit["id"] for hit in answer.json()["hits"]]


async def push_ok(device: Device, changes: list[dict[str, Any]]) -> None:
    answer = await device.push(changes)
    assert answer.status_code == 200, answer.text
    assert answer.json()["failed_items"] == 0, answer.text
