"""The user documentation must keep up with the code.

A setting, an error code or a CLI command or option that is not in docs/ fails the suite, and so
does a documented setting or error code that no longer exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperGroup

from homeport.cli import app
from homeport.config import Settings
from homeport.kit.errors import ErrorCode

DOCS = Path(__file__).resolve().parents[1] / "docs"
ENV_PREFIX = "HOMEPORT_"


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _mentions(text: str, word: str) -> bool:
    """``word`` appears as a whole token (``HOMEPORT_PORT`` is not found in ``..._PORTS``)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def _env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _table_rows(text: str) -> Iterator[str]:
    return (line for line in text.splitlines() if line.lstrip().startswith("|"))


def _cli_commands() -> list[tuple[str, list[str]]]:
    """Every runnable ``homeport ...`` command with its long options, sub-apps walked."""
    found: list[tuple[str, list[str]]] = []

    def walk(command: object, path: list[str]) -> None:
        if isinstance(command, TyperGroup):
            for name, sub in sorted(command.commands.items()):
                walk(sub, [*path, name])
            return
        params = getattr(command, "params", [])
        options = sorted(
            opt for param in params for opt in getattr(param, "opts", []) if opt.startswith("--")
        )
        found.append((" ".join(path), options))

    walk(typer.main.get_command(app), ["homeport"])
    return found


SETTINGS_FIELDS = sorted(Settings.model_fields)
ERROR_CODES = list(ErrorCode)
CLI_COMMANDS = _cli_commands()


def test_the_walkers_find_something() -> None:
    assert len(SETTINGS_FIELDS) > 10
    assert len(ERROR_CODES) > 10
    names = {name for name, _ in CLI_COMMANDS}
    assert {"homeport serve", "homeport init", "homeport keys rotate"} <= names


@pytest.mark.parametrize("field", SETTINGS_FIELDS)
def test_every_setting_is_documented(field: str) -> None:
    text = _read("configuration.md")
    assert _mentions(text, _env_name(field)), (
        f"docs/configuration.md does not document {_env_name(field)} (Settings.{field})"
    )


def test_no_documented_setting_is_stale() -> None:
    known = {_env_name(field) for field in SETTINGS_FIELDS}
    documented = set(re.findall(rf"\b{ENV_PREFIX}[A-Z0-9_]+\b", _read("configuration.md")))
    assert documented - known == set(), "docs/configuration.md names settings that do not exist"


@pytest.mark.parametrize("code", ERROR_CODES, ids=[code.name for code in ERROR_CODES])
def test_every_error_code_is_documented_with_its_status(code: ErrorCode) -> None:
    text = _read("errors.md")
    assert _mentions(text, code.name), f"docs/errors.md does not document {code.name}"
    rows = [row for row in _table_rows(text) if _mentions(row, code.name)]
    assert rows, f"docs/errors.md has no table row for {code.name}"
    assert any(_mentions(row, str(code.status)) for row in rows), (
        f"docs/errors.md does not give {code.name} its status {code.status}"
    )


def test_no_documented_error_code_is_stale() -> None:
    known = {code.name for code in ErrorCode}
    documented: set[str] = set()
    for row in _table_rows(_read("errors.md")):
        first_cell = row.strip().strip("|").split("|")[0]
        documented.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    assert documented, "docs/errors.md has no table of codes"
    assert documented - known == set(), "docs/errors.md lists codes that do not exist"


@pytest.mark.parametrize(
    ("command", "options"), CLI_COMMANDS, ids=[name for name, _ in CLI_COMMANDS]
)
def test_every_cli_command_and_option_is_documented(command: str, options: list[str]) -> None:
    text = _read("cli.md")
    assert _mentions(text, command), f"docs/cli.md does not document `{command}`"
    missing = [option for option in options if not _mentions(text, option)]
    assert missing == [], f"docs/cli.md does not document {missing} of `{command}`"
