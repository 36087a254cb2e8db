"""Running the shell examples of the README and docs/ as a reader pastes them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any


def shell_blocks(text: str) -> list[str]:
    """The ``sh`` code blocks of a Markdown page, in order."""
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def run_bash(script: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``script`` in ``bash -euo pipefail`` (a failing command or pipe stops it)."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_objects(output: str) -> list[dict[str, Any]]:
    """The JSON objects printed, in order (some examples print one without a newline)."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    while (position := output.find("{", position)) != -1:
        value, position = decoder.raw_decode(output, position)
        found.append(value)
    return found
