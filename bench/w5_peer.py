"""W5 beside its peer: Homeport's tus endpoint and a Node tus server (@tus/server with its
file store, bench/peer_tus), on the same machine in the same minutes, one upload each in turn.

The machine's speed drifts by tens of percent within an hour (see docs/benchmarks.md, W5), so
a peer measured on another day says little about a figure measured today. Here every run of
one is followed by a run of the other, with the same client (the lean HTTP/1.1 client), the
same file size and chunk size, new random bytes each time, the page cache written back before
each run and the last run's file removed (off the clock). MiB/s as in W5: the file size over
the wall time from creation to the last PATCH's answer; the resume case sends half, then a new
client asks HEAD and sends the rest. Each server's CPU time per MiB comes from /proc.

What the peer does not do that Homeport does in the same request: authenticate the caller,
record the upload and its offset in a database, hash the whole file (the finished file's
SHA-256 is checked and stored), sniff the content type, and turn the upload into a file
object. Its bytes are checked after each run (off the clock) against the payload.

Run: .venv/bin/python -m bench.w5_peer [--chunk-mib 1] [--runs 7] [--size-mib 32]
(needs Node.js >= 20.19 and npm; `npm ci` in bench/peer_tus on first use)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.server import Server, free_port, init_tenant, running_server
from bench.w5_uploads import (
    EMAIL,
    MIB,
    PASSWORD,
    TUS_HEADERS,
    Finished,
    Measured,
    Payload,
    Run,
    _check,
    _login,
    _remove,
    lean_clients,
    stored_bytes,
    tus_resume,
    tus_upload,
)

PEER_DIR = Path(__file__).with_name("peer_tus")
PEER_ENDPOINT = "/files"


@contextmanager
def running_peer() -> Iterator[tuple[str, int, Path]]:
    """The Node tus server on a free port: (base URL, pid, its upload directory)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("the peer needs Node.js and npm")
    if not (PEER_DIR / "node_modules").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=PEER_DIR, check=True
        )
    directory = Path(tempfile.mkdtemp(prefix="homeport-bench-peer-"))
    port = free_port()
    process = subprocess.Popen(
        ["node", "server.mjs", str(directory), str(port)],
        cwd=PEER_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "listening":
            raise RuntimeError("the Node tus server did not start")
        yield f"http://127.0.0.1:{port}", process.pid, directory
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def peer_finished(payload: Payload) -> Finished:
    """The peer's upload is known by its URL, once its last PATCH took the whole file."""

    def finished(url: str, last: httpx.Response | None) -> str:
        assert last is not None
        assert int(last.headers["Upload-Offset"]) == len(payload.data)
        return url

    return finished


async def _compare(
    homeport: Server, peer: tuple[str, int, Path], size: int, chunk_size: int, runs: int
) -> dict[str, object]:
    token = await _login(homeport.base_url)
    ours = lean_clients(homeport.base_url, {"Authorization": f"Bearer {token}"})
    peer_url, peer_pid, peer_dir = peer
    theirs = lean_clients(peer_url, {})
    results: dict[str, object] = {}
    async with ours() as our_client, theirs() as their_client:

        async def remove_ours(file_id: str, payload: Payload, keep: int) -> None:
            await _remove(our_client, file_id, homeport.data_dir / "files", keep)

        async def remove_theirs(url: str, payload: Payload, keep: int) -> None:
            stored = peer_dir / url.rsplit("/", 1)[1]
            if hashlib.sha256(stored.read_bytes()).hexdigest() != payload.file_hash:
                raise RuntimeError("the peer stored other bytes than it was sent")
            _check(await their_client.delete(url, headers=TUS_HEADERS), 204)
            if stored_bytes(peer_dir) > keep:  # the file store deletes before it answers
                raise RuntimeError("the peer kept the bytes of a terminated upload")

        label = f"{chunk_size / MIB:g}MiB"
        cases: dict[str, tuple[Run, Run]] = {
            f"tus_{label}": (
                lambda payload, name: tus_upload(our_client, payload, name),
                lambda payload, name: tus_upload(
                    their_client, payload, name, PEER_ENDPOINT, peer_finished(payload)
                ),
            ),
            f"tus_resume_{label}": (
                lambda payload, name: tus_resume(ours, payload, name),
                lambda payload, name: tus_resume(
                    theirs, payload, name, PEER_ENDPOINT, peer_finished(payload)
                ),
            ),
        }
        # One unmeasured upload each warms both (imports, JIT, SQLite pages).
        for warm in cases[f"tus_{label}"]:
            await warm(Payload.random(2 * MIB, MIB), "warm.bin")
        for case, (our_run, their_run) in cases.items():
            ours_measured = Measured(
                homeport.pid, homeport.data_dir / "files", our_run, remove_ours
            )
            theirs_measured = Measured(peer_pid, peer_dir, their_run, remove_theirs)
            for number in range(runs):
                # Alternating which goes first, so neither always follows the other's writes.
                order = [ours_measured, theirs_measured]
                for side in order if number % 2 == 0 else reversed(order):
                    await side.run_once(Payload.random(size, chunk_size), f"{case}-{number}.bin")
            results[case] = {"homeport": ours_measured.summary(), "peer": theirs_measured.summary()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--chunk-mib", type=float, default=1)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    size = args.size_mib * MIB
    chunk_size = int(args.chunk_mib * MIB)
    limits = {
        "rate_limit_upload_init": "1000000/minute",
        "rate_limit_upload_chunk": "1000000/minute",
        "uploads_max_chunk_bytes": str(chunk_size),
    }
    with running_server(**limits) as homeport, running_peer() as peer:
        init_tenant(homeport, EMAIL, PASSWORD, "bench")
        results = asyncio.run(_compare(homeport, peer, size, chunk_size, args.runs))
    print(
        json.dumps(
            {
                "workload": "W5 beside a Node tus server",
                "file_mib": args.size_mib,
                "chunk_mib": args.chunk_mib,
                "runs": args.runs,
                "client": "lean",
                "cpus": os.cpu_count(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
