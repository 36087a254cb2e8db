"""A real S3-compatible server for tests: moto's server in its own process on 127.0.0.1.

Its own process, not a thread: it then has its own interpreter (and core) and the tests talk to
it over real HTTP exactly as they would to MinIO or AWS. One server per test session; tests keep
apart by using their own bucket names.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT_S = 30.0
# moto accepts any credentials; these only make the requests signed like real ones.
ACCESS_KEY_ID = "homeport-test-key"
SECRET_ACCESS_KEY = "homeport-test-secret"
REGION = "us-east-1"


class S3ServerUnavailable(RuntimeError):
    """The server could not be started."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True  # it answered, so it is up
    except OSError:
        return False


@contextlib.contextmanager
def running_s3_server(log_dir: Path) -> Iterator[str]:
    """Start the server, yield its endpoint URL, stop it afterwards."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = log_dir / "moto-server.log"
    environment = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(endpoint):
            if process.poll() is not None:
                output = log_path.read_text(errors="replace")[-2000:]
                raise S3ServerUnavailable(f"moto server exited ({process.returncode}): {output}")
            if time.monotonic() > deadline:
                raise S3ServerUnavailable(f"moto server did not answer in {STARTUP_TIMEOUT_S}s")
            time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
