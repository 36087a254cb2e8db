"""Read and write rules of a collection: ``owner``, ``tenant`` or ``role:<role>``.

- ``tenant``: every member of the tenant.
- ``role:<role>``: members with that role or a higher one (member < manager < admin < owner).
- ``owner``: only the record's owner: the user who created it, or the user named in the
  collection's owner field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from homeport.auth.principal import Role

RULE_TENANT = "tenant"
RULE_OWNER = "owner"
ROLE_PREFIX = "role:"


class Reach(enum.Enum):
    """How much of a collection a caller may read."""

    ALL = "all"
    OWN = "own"
    NONE = "none"


def parse_rule(rule: str) -> str:
    """The rule, normalised; ``ValueError`` for anything else."""
    rule = rule.strip()
    if rule in (RULE_TENANT, RULE_OWNER):
        return rule
    if rule.startswith(ROLE_PREFIX):
        Role(rule.removeprefix(ROLE_PREFIX))  # raises ValueError for an unknown role
        return rule
    raise ValueError(
        f"unknown rule {rule!r}: use owner, tenant or role:<owner|admin|manager|member>"
    )


def _has_role(rule: str, role: Role | None) -> bool:
    needed = Role(rule.removeprefix(ROLE_PREFIX))
    return role is not None and role.rank >= needed.rank


def read_reach(rule: str, role: Role | None) -> Reach:
    if rule == RULE_TENANT:
        return Reach.ALL
    if rule == RULE_OWNER:
        return Reach.OWN
    return Reach.ALL if _has_role(rule, role) else Reach.NONE


@dataclass(frozen=True)
class Writer:
    user_id: str
    role: Role | None


def may_write(rule: str, writer: Writer, record_owner: str | None) -> bool:
    """``record_owner``: the owner the record has (or would have after this write)."""
    if rule == RULE_TENANT:
        return True
    if rule == RULE_OWNER:
        return record_owner is None or record_owner == writer.user_id
    return _has_role(rule, writer.role)
