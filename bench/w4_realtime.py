"""W4 (realtime): live fan-out latency to many subscribers, and the memory of idle connections.

- fan-out: S devices (default 200) are connected to /ws/mobile/sync/ and subscribed to `tasks`;
  a writer creates N records (default 100) through REST, about R per second (default 10).
  Latency per delivery = the subscriber's receipt time minus the moment the writer got its
  push acknowledged (same clock: one process). Negative values mean the change reached the
  subscriber before the writer's answer did. Completeness = deliveries / (S * N).
- idle: I connections (default 1000) that only connect; the server's resident memory before
  and after, divided by I.

Run: .venv/bin/python -m bench.w4_realtime [--postgres ADMIN_URL] [--subscribers 200]
     [--records 100] [--rate 10] [--idle 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.server import Server, fresh_postgres, init_tenant, running_server

PASSWORD = "bench-password-123"
EMAIL = "bench@example.com"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _login(client: httpx.AsyncClient, device: str) -> str:
    answer = await client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD, "device_id": device}
    )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def _ws_url(server: Server, device: str, token: str) -> str:
    base = server.base_url.replace("http://", "ws://")
    return f"{base}/ws/mobile/sync/?device_id={device}&token={token}"


async def _subscriber(
    server: Server,
    device: str,
    token: str,
    ready: asyncio.Event,
    received: dict[str, float],
    expected: int,
    warm: asyncio.Event,
    done: asyncio.Event,
) -> None:
    async with websockets.connect(_ws_url(server, device, token), max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "payload": {"collections": ["tasks"]}}))
        ready.set()
        while len(received) < expected:
            message = json.loads(await ws.recv())
            if message["type"] != "server_push":
                continue
            now = time.perf_counter()
            for update in message["payload"]["updates"]:
                received.setdefault(update["entity_id"], now)
            if "warmup" in received:
                warm.set()
        done.set()


async def _fanout(server: Server, subscribers: int, records: int, rate: float) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        admin = await _login(client, "bench-writer")
        headers = {"Authorization": f"Bearer {admin}"}
        created = await client.post(
            "/api/v1/collections",
            json={"name": "tasks", "schema": {"type": "object"}, "read": "tenant"},
            headers=headers,
        )
        created.raise_for_status()
        devices = [f"sub-{number:04d}" for number in range(subscribers)]
        tokens = [await _login(client, device) for device in devices]
        ids = ["warmup"] + [f"task-{number:05d}" for number in range(records)]
        receipts: list[dict[str, float]] = [{} for _ in devices]
        ready = [asyncio.Event() for _ in devices]
        warm = [asyncio.Event() for _ in devices]
        finished = [asyncio.Event() for _ in devices]
        tasks = [
            asyncio.create_task(
                _subscriber(server, d, t, ready[i], receipts[i], len(ids), warm[i], finished[i])
            )
            for i, (d, t) in enumerate(zip(devices, tokens, strict=True))
        ]
        await asyncio.gather(*(event.wait() for event in ready))

        async def push(record_id: str) -> float:
            answer = await client.post(
                "/api/v1/sync/push",
                json={
                    "idempotency_key": uuid.uuid4().hex,
                    "changes": [
                        {
                            "collection": "tasks",
                            "id": record_id,
                            "op": "upsert",
                            "data": {"title": f"Task {record_id}", "status": "open"},
                        }
                    ],
                },
                headers=headers,
            )
            answer.raise_for_status()
            return time.perf_counter()

        # Every subscriber must be live before measuring: wait for the warm-up record.
        await push("warmup")
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in warm)), timeout=60)
        acked: dict[str, float] = {}
        for record_id in ids[1:]:
            started = time.perf_counter()
            acked[record_id] = await push(record_id)
            await asyncio.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - started)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(event.wait() for event in finished)), timeout=30
            )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [
        (receipt[record_id] - acked[record_id]) * 1000
        for receipt in receipts
        for record_id in acked
        if record_id in receipt
    ]
    wanted = subscribers * records
    return {
        "subscribers": subscribers,
        "records": records,
        "rate_per_s": rate,
        "deliveries": len(latencies),
        "completeness_pct": round(100.0 * len(latencies) / wanted, 2),
        "latency_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "latency_max_ms": round(max(latencies), 2) if latencies else None,
    }


async def _idle(server: Server, connections: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        token = await _login(client, "idle-device")
    await asyncio.sleep(1.0)
    before = _rss_kib(server.pid)
    opened = []
    for _ in range(connections):
        opened.append(await websockets.connect(_ws_url(server, "idle-device", token)))
    await asyncio.sleep(2.0)
    after = _rss_kib(server.pid)
    for ws in opened:
        await ws.close()
    return {
        "idle_connections": connections,
        "server_rss_before_mib": round(before / 1024, 1),
        "server_rss_after_mib": round(after / 1024, 1),
        "kib_per_idle_connection": round((after - before) / connections, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    settings = {
        # Logins are not what W4 measures: cheap hashes and no login limit.
        "argon2_time_cost": "1",
        "argon2_memory_cost_kib": "8192",
        "argon2_parallelism": "1",
        "jobs_enabled": "false",
    }
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres(args.postgres)) if args.postgres else None
        with running_server(database_url, **settings) as server:
            init_tenant(server, EMAIL, PASSWORD, "bench")
            result = asyncio.run(_fanout(server, args.subscribers, args.records, args.rate))
            if args.idle:
                result.update(asyncio.run(_idle(server, args.idle)))
    result.update(workload="W4 realtime", database="postgresql" if args.postgres else "sqlite")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
