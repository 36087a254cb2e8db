"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

from datetime import datetime
from ipaddress import ip_network
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from homeport.kit.text import UtcDatetime, email_address, plain_text

Email = Annotated[str, StringConstraints(max_length=254), AfterValidator(email_address)]
# A name a person gives (an API key's, a tenant's, their own): one line of text.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(plain_text)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
DeviceId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
]
Slug = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$"),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(StrictModel):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    device_id: DeviceId
    tenant: Slug | None = None


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int
    session_id: str
    tenant_id: str


class RefreshRequest(StrictModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class MeResponse(BaseModel):
    kind: Literal["user", "api_key"]
    tenant_id: str
    tenant_slug: str
    user_id: str | None = None
    email: str | None = None
    display_name: str | None = None
    role: str | None = None
    is_platform_admin: bool = False
    session_id: str | None = None
    device_id: str | None = None
    api_key_id: str | None = None
    scopes: list[str] = Field(default_factory=list)


class SessionOut(BaseModel):
    id: str
    device_id: str
    user_agent: str | None
    ip_address: str | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    current: bool


class SessionList(BaseModel):
    sessions: list[SessionOut]


def _check_network(value: str) -> str:
    try:
        return str(ip_network(value, strict=False))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from exc


Network = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_network)]


Scope = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ApiKeyCreate(StrictModel):
    name: Name
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=32)]
    expires_at: UtcDatetime | None = Field(
        default=None, description="When the key stops working; with a time zone (`Z` or an offset)."
    )
    allowed_ips: Annotated[list[Network], Field(max_length=64)] = Field(default_factory=list)


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    allowed_ips: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown only in this answer; store it now.")


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyOut]


class InvitationAccept(StrictModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    password: Password
    display_name: (
        Annotated[str, StringConstraints(max_length=200), AfterValidator(plain_text)] | None
    ) = None


class InvitationAccepted(BaseModel):
    accepted: bool
    tenant_id: str
    tenant_slug: str
    email: str
