"""W5 (uploads): one 32 MiB file, in 1 MiB and in 8 MiB chunks, by the REST chunk protocol
(init, chunks, finalize) and by tus (create, one PATCH per chunk), local directory, SQLite.

MiB/s is the file size over the wall time of the whole upload, from init/creation to the
answer that names the finished file (so finalize and its whole-file check are included);
median of --runs runs, each with new random bytes (no dedupe shortcut). The client's own
SHA-256 of the chunks and the file is computed before the clock starts (a phone hashes while it
reads the file; this measures the server). Each case also reports the server process's CPU
time per MiB (median), which other load on the machine does not distort. The resume case
uploads half, then a new client (new connections) asks where the upload stands (REST status /
tus HEAD) and sends the rest; MiB/s of the whole. After each run (off the clock) its file is
deleted through the API and its bytes awaited gone, so every run starts from the same storage.

Run: .venv/bin/python -m bench.w5_uploads [--size-mib 32] [--chunk-mib 1,8] [--runs 3]
     [--only tus_] [--client httpx|lean] [--profile-seconds N --profile-out FILE]
     (py-spy records the server N s). ``--client lean``: the lean HTTP/1.1 client of
     bench.lean_http, whose own CPU per request is a fraction of httpx's, so that the figure is
     the server's more than the client's (one upload runs one request after the other, so the
     client's time adds to every chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import lean_http
from bench.server import Server, init_tenant, profiling, running_server

PASSWORD = "bench-password-123"
EMAIL = "bench@example.com"
MIB = 1024 * 1024
TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS_HEADERS, "Content-Type": "application/offset+octet-stream"}


@dataclass(frozen=True)
class Payload:
    data: bytes
    chunk_size: int
    file_hash: str
    chunk_hashes: list[str]

    @classmethod
    def random(cls, size: int, chunk_size: int) -> Payload:
        data = os.urandom(size)
        chunks = [data[start : start + chunk_size] for start in range(0, size, chunk_size)]
        return cls(
            data,
            chunk_size,
            hashlib.sha256(data).hexdigest(),
            [hashlib.sha256(chunk).hexdigest() for chunk in chunks],
        )

    def chunk(self, index: int) -> bytes:
        return self.data[index * self.chunk_size : (index + 1) * self.chunk_size]

    @property
    def count(self) -> int:
        return len(self.chunk_hashes)


def _check(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response


# REST chunk protocol


async def rest_init(client: httpx.AsyncClient, payload: Payload, name: str) -> str:
    created = await client.post(
        "/api/v1/uploads/init",
        json={
            "filename": name,
            "total_size": len(payload.data),
            "mime_type": "application/octet-stream",
            "file_hash": payload.file_hash,
            "chunk_size": payload.chunk_size,
        },
    )
    body = _check(created, 201).json()
    assert body["chunk_size"] == payload.chunk_size, body
    return str(body["upload_id"])


async def rest_chunks(
    client: httpx.AsyncClient, payload: Payload, upload_id: str, indexes: list[int]
) -> None:
    for index in indexes:
        _check(
            await client.post(
                f"/api/v1/uploads/{upload_id}/chunk/{index}",
                content=payload.chunk(index),
                headers={
                    "Content-Type": "application/octet-stream",
                    "X-Chunk-Checksum": payload.chunk_hashes[index],
                },
            ),
            200,
        )


async def rest_finalize(client: httpx.AsyncClient, payload: Payload, upload_id: str) -> str:
    """The finished file's id."""
    body = _check(await client.post(f"/api/v1/uploads/{upload_id}/finalize"), 200).json()
    assert body["checksum"] == payload.file_hash, body
    assert body["file_size"] == len(payload.data), body
    return str(body["file_id"])


async def rest_upload(client: httpx.AsyncClient, payload: Payload, name: str) -> str:
    upload_id = await rest_init(client, payload, name)
    await rest_chunks(client, payload, upload_id, list(range(payload.count)))
    return await rest_finalize(client, payload, upload_id)


async def rest_resume(
    new_client: Callable[[], httpx.AsyncClient], payload: Payload, name: str
) -> str:
    half = payload.count // 2
    async with new_client() as first:
        upload_id = await rest_init(first, payload, name)
        await rest_chunks(first, payload, upload_id, list(range(half)))
    async with new_client() as second:  # the app was killed; a new one asks what is missing
        status = _check(await second.get(f"/api/v1/uploads/{upload_id}/status"), 200).json()
        assert len(status["missing_chunks"]) == payload.count - half, status
        await rest_chunks(second, payload, upload_id, status["missing_chunks"])
        return await rest_finalize(second, payload, upload_id)


# tus


def _metadata(name: str) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}"
        for key, value in {"filename": name, "filetype": "application/octet-stream"}.items()
    )


async def tus_create(
    client: httpx.AsyncClient, payload: Payload, name: str, endpoint: str = "/api/v1/tus/"
) -> str:
    created = await client.post(
        endpoint,
        headers={
            **TUS_HEADERS,
            "Upload-Length": str(len(payload.data)),
            "Upload-Metadata": _metadata(name),
        },
    )
    return str(_check(created, 201).headers["Location"])


async def tus_patches(
    client: httpx.AsyncClient, payload: Payload, url: str, offset: int, stop: int | None = None
) -> httpx.Response | None:
    last = None
    while offset < (len(payload.data) if stop is None else stop):
        block = payload.data[offset : offset + payload.chunk_size]
        last = _check(
            await client.patch(
                url, content=block, headers={**PATCH_HEADERS, "Upload-Offset": str(offset)}
            ),
            204,
        )
        offset = int(last.headers["Upload-Offset"])
    return last


# What a finished tus upload is known by, from its URL and its last PATCH's answer.
Finished = Callable[[str, httpx.Response | None], str]


def homeport_file_id(url: str, last: httpx.Response | None) -> str:
    """The finished file's id, from the last PATCH's answer."""
    assert last is not None
    assert "Homeport-File-Id" in last.headers, last.headers
    return str(last.headers["Homeport-File-Id"])


async def tus_upload(
    client: httpx.AsyncClient,
    payload: Payload,
    name: str,
    endpoint: str = "/api/v1/tus/",
    finished: Finished = homeport_file_id,
) -> str:
    url = await tus_create(client, payload, name, endpoint)
    return finished(url, await tus_patches(client, payload, url, 0))


async def tus_resume(
    new_client: Callable[[], httpx.AsyncClient],
    payload: Payload,
    name: str,
    endpoint: str = "/api/v1/tus/",
    finished: Finished = homeport_file_id,
) -> str:
    half = (payload.count // 2) * payload.chunk_size
    async with new_client() as first:
        url = await tus_create(first, payload, name, endpoint)
        await tus_patches(first, payload, url, 0, stop=half)
    async with new_client() as second:
        head = _check(await second.head(url, headers=TUS_HEADERS), 200)
        offset = int(head.headers["Upload-Offset"])
        assert offset == half, (offset, half)
        return finished(url, await tus_patches(second, payload, url, offset))


# Measuring


def lean_clients(base_url: str, headers: dict[str, str]) -> Callable[[], httpx.AsyncClient]:
    # Typed as httpx's: it has the part of its interface the workload uses.
    return lambda: lean_http.Client(base_url, headers)  # type: ignore[return-value]


def _client_factory(base_url: str, token: str, kind: str) -> Callable[[], httpx.AsyncClient]:
    if kind == "lean":
        return lean_clients(base_url, {"Authorization": f"Bearer {token}"})
    # Built once: a TLS context per client (unused on http://) would cost the resume case
    # milliseconds of client-side certificate loading.
    tls = ssl.create_default_context()

    def new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=base_url,
            verify=tls,
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )

    return new_client


async def _login(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as client:
        login = await client.post(
            "/api/v1/auth/login",
            json={"email": EMAIL, "password": PASSWORD, "device_id": "bench-uploader"},
        )
        return str(_check(login, 200).json()["access_token"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): robust to other load on the
    machine, unlike wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored_bytes(storage_dir: Path) -> int:
    return sum(path.stat().st_size for path in storage_dir.rglob("*") if path.is_file())


async def _remove(client: httpx.AsyncClient, file_id: str, storage_dir: Path, keep: int) -> None:
    """Delete the run's file through the API and wait until the server's job has removed its
    bytes from the storage directory (back to ``keep`` bytes or fewer)."""
    _check(await client.delete(f"/api/v1/files/{file_id}"), 204)
    deadline = time.monotonic() + 60
    while stored_bytes(storage_dir) > keep:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the file {file_id} was deleted but its bytes stay stored")
        await asyncio.sleep(0.1)


# Uploads a payload under a name; returns what the upload is known by (a file id, a URL).
Run = Callable[[Payload, str], Awaitable[str]]
# Removes a measured run's upload (its handle, its payload, the stored bytes to go back to).
Remove = Callable[[str, Payload, int], Awaitable[None]]


async def _measure(
    run: Run,
    size: int,
    chunk_size: int,
    runs: int,
    tag: str,
    server: Server,
    client: httpx.AsyncClient,
) -> Measured:
    storage_dir = server.data_dir / "files"

    async def remove(file_id: str, _payload: Payload, keep: int) -> None:
        await _remove(client, file_id, storage_dir, keep)

    measured = Measured(server.pid, storage_dir, run, remove)
    for number in range(runs):
        await measured.run_once(Payload.random(size, chunk_size), f"{tag}-{number}.bin")
    return measured


@dataclass
class Measured:
    """The runs of one case on one server (its process, its storage directory): MiB/s and the
    server's CPU ms per MiB."""

    pid: int
    storage_dir: Path
    run: Run
    remove: Remove
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    async def run_once(self, payload: Payload, name: str) -> None:
        # Every run starts from the same storage and page cache: the last run's file is deleted
        # (its bytes awaited gone) and the dirty pages are written back. Otherwise the figure
        # depends on the run's place in the sequence, not on the server: on the 2-core VM, with
        # ~200 MB dirty, writes fall into the kernel's writer throttling (from GB/s to the
        # disk's ~390 MiB/s), and past ~600 MB of new files the kernel's cost per written page
        # rises fourfold (the server's system CPU time per 32 MiB upload from ~30 to ~120 ms,
        # its user time unchanged).
        size = len(payload.data)
        keep = stored_bytes(self.storage_dir)
        os.sync()
        cpu_before = cpu_seconds(self.pid)
        started = time.perf_counter()
        handle = await self.run(payload, name)
        self.rates.append(size / MIB / (time.perf_counter() - started))
        self.cpu.append((cpu_seconds(self.pid) - cpu_before) * 1000 / (size / MIB))
        await self.remove(handle, payload, keep)

    def summary(self) -> dict[str, object]:
        return {
            "mib_per_s": round(statistics.median(self.rates), 1),
            "runs": [round(rate, 1) for rate in self.rates],
            "server_cpu_ms_per_mib": round(statistics.median(self.cpu), 2),
        }


async def _all(
    server: Server,
    size: int,
    chunk_sizes: list[int],
    runs: int,
    only: str,
    client_kind: str,
) -> dict[str, object]:
    new_client = _client_factory(server.base_url, await _login(server.base_url), client_kind)
    results: dict[str, object] = {}
    async with new_client() as client:
        # One unmeasured upload warms the server (imports, connection pool, SQLite pages).
        await rest_upload(client, Payload.random(2 * MIB, MIB), "warm.bin")
        for chunk_size in chunk_sizes:
            label = f"{chunk_size // MIB}MiB"
            cases: dict[str, Run] = {
                f"rest_{label}": lambda payload, name: rest_upload(client, payload, name),
                f"tus_{label}": lambda payload, name: tus_upload(client, payload, name),
                f"rest_resume_{label}": lambda payload, name: rest_resume(
                    new_client, payload, name
                ),
                f"tus_resume_{label}": lambda payload, name: tus_resume(new_client, payload, name),
            }
            for case, run in cases.items():
                if only and only not in case:
                    continue
                measured = await _measure(run, size, chunk_size, runs, case, server, client)
                results[case] = measured.summary()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--chunk-mib", default="1,8")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the cases whose name has this")
    parser.add_argument(
        "--client",
        choices=["httpx", "lean"],
        default="httpx",
        help="the uploading client: httpx, or the lean HTTP/1.1 client of bench.lean_http",
    )
    parser.add_argument("--profile-seconds", type=int, default=0)
    parser.add_argument("--profile-out", type=Path, default=Path("w5-profile.txt"))
    args = parser.parse_args()
    size = args.size_mib * MIB
    chunk_sizes = [int(float(mib) * MIB) for mib in args.chunk_mib.split(",")]
    limits = {
        "rate_limit_upload_init": "1000000/minute",
        "rate_limit_upload_chunk": "1000000/minute",
        "uploads_max_chunk_bytes": str(max(chunk_sizes)),
    }
    with running_server(**limits) as server:
        init_tenant(server, EMAIL, PASSWORD, "bench")
        with profiling(server.pid, args.profile_seconds, args.profile_out):
            results = asyncio.run(
                _all(
                    server,
                    size,
                    chunk_sizes,
                    args.runs,
                    args.only,
                    args.client,
                )
            )
    print(
        json.dumps(
            {
                "workload": "W5 uploads",
                "database": "sqlite",
                "storage": "fs",
                "file_mib": args.size_mib,
                "runs": args.runs,
                "client": args.client,
                "cpus": os.cpu_count(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
