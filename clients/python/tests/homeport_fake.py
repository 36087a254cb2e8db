"""A tiny in-memory stand-in for the Homeport server, for the SDK's own unit tests only.

It follows the wire protocol closely enough to exercise the client's logic; the real
end-to-end tests run against the real server.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import rfc8785

PROBLEM = "application/problem+json"


def problem(status: int, code: str, detail: str) -> httpx.Response:
    body = {
        "type": f"https://homeport.dev/problems/{code.lower()}",
        "title": code,
        "status": status,
        "detail": detail,
        "code": code,
        "trace_id": "trace-1",
    }
    return httpx.Response(status, content=json.dumps(body), headers={"content-type": PROBLEM})


@dataclass
class Record:
    version: int
    data: dict[str, Any] | None
    deleted: bool = False


@dataclass
class FakeServer:
    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    idempotency: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    push_bodies: list[dict[str, Any]] = field(default_factory=list)
    # failure injection
    lose_push_answers: int = 0  # apply the push, then drop the answer (ReadTimeout)
    fail_push_before_apply: int = 0  # 503 without applying
    reset_required: bool = False
    expired_tokens: set[str] = field(default_factory=set)
    silent_ids: set[str] = field(default_factory=set)  # ids left out of push results
    # auth state
    token_counter: int = 0
    access_token: str | None = None
    refresh_token: str | None = None
    used_refresh_tokens: list[str] = field(default_factory=list)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- helpers for tests ------------------------------------------------------------------

    def write(self, collection: str, record_id: str, data: dict[str, Any] | None) -> int:
        """A change made by another device."""
        current = self.records.get((collection, record_id))
        version = (current.version if current else 0) + 1
        self.records[(collection, record_id)] = Record(version, data, data is None)
        self.log.append((collection, record_id))
        return version

    def _issue(self) -> dict[str, Any]:
        self.token_counter += 1
        self.access_token = f"at-{self.token_counter}"
        self.refresh_token = f"rt-{self.token_counter}"
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "bearer",
            "expires_in": 900,
            "session_id": "sess-1",
            "tenant_id": "tenant-1",
        }

    # -- handler ----------------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/v1/auth/login":
            return httpx.Response(200, json=self._issue())
        if path == "/api/v1/auth/refresh":
            token = json.loads(request.content)["refresh_token"]
            self.used_refresh_tokens.append(token)
            if token != self.refresh_token:
                return problem(401, "AUTH_003", "reused")
            return httpx.Response(200, json=self._issue())
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        if token in self.expired_tokens:
            return problem(401, "AUTH_002", "Token expired")
        if token != self.access_token:
            return problem(401, "AUTH_001", "Invalid token")
        if request.headers.get("x-homeport-protocol") != "1":
            return problem(426, "SYNC_005", "protocol header missing")
        if path == "/api/v1/sync/push":
            return self._push(request)
        if path == "/api/v1/sync/pull":
            return self._pull(request)
        if path == "/api/v1/sync/force-sync":
            self.reset_required = False
            return httpx.Response(200, json={"cursor": "0"})
        return problem(404, "NOT_FOUND", path)

    def _push(self, request: httpx.Request) -> httpx.Response:
        if self.fail_push_before_apply:
            self.fail_push_before_apply -= 1
            return problem(503, "UNAVAILABLE", "try later")
        body = json.loads(request.content)
        self.push_bodies.append(body)
        key = body["idempotency_key"]
        if key in self.idempotency:
            stored_body, answer = self.idempotency[key]
            if stored_body != body_identity(body):
                return problem(409, "SYNC_003", "key reused with another body")
        else:
            answer = self._apply(body)
            self.idempotency[key] = (body_identity(body), answer)
        if self.lose_push_answers:
            self.lose_push_answers -= 1
            raise httpx.ReadTimeout("answer lost", request=request)
        return httpx.Response(200, json=answer)

    def _apply(self, body: dict[str, Any]) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        conflicts: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for change in body["changes"]:
            key = (change["collection"], change["id"])
            assert key not in seen, "a batch must not hold two changes for one record"
            seen.add(key)
            if change["data"] is not None:
                expected = hashlib.sha256(rfc8785.dumps(change["data"])).hexdigest()
                assert change["hash"] == expected
            else:
                assert change["hash"] is None
            if change["id"] in self.silent_ids:
                continue
            if change["collection"] == "forbidden":
                results.append({**_ref(key), "status": "rejected", "version": None})
                errors.append({"item_id": change["id"], "error": "FORBIDDEN", "message": "no"})
                continue
            current = self.records.get(key)
            current_version = current.version if current else None
            if current is not None and change["base_version"] != current_version:
                results.append(
                    {
                        **_ref(key),
                        "status": "conflict",
                        "version": current.version,
                        "resolution": "server_wins",
                    }
                )
                conflicts.append(
                    {
                        "conflict_id": f"c-{len(conflicts)}",
                        **_ref(key),
                        "resolution": "server_wins",
                        "status": "resolved",
                        "server": {
                            "version": current.version,
                            "data": current.data,
                            "deleted": current.deleted,
                        },
                    }
                )
                continue
            if change["op"] == "delete":
                data = None
            elif change["op"] == "patch":
                data = {**((current.data if current else None) or {}), **change["data"]}
            else:
                data = change["data"]
            version = self.write(key[0], key[1], data)
            results.append({**_ref(key), "status": "applied", "version": version})
        applied = sum(1 for r in results if r["status"] == "applied")
        return {
            "synced_items": applied,
            "failed_items": len(body["changes"]) - applied,
            "results": results,
            "conflicts": conflicts,
            "errors": errors,
            "cursor": str(len(self.log)),
        }

    def _pull(self, request: httpx.Request) -> httpx.Response:
        if self.reset_required:
            return problem(410, "SYNC_006", "reset required")
        params = request.url.params
        start = int(params.get("cursor", "0"))
        limit = int(params["limit"])
        wanted = params.get("collections")
        allowed = set(wanted.split(",")) if wanted else None
        changes: list[dict[str, Any]] = []
        position = start
        while position < len(self.log) and len(changes) < limit:
            key = self.log[position]
            position += 1
            if allowed is not None and key[0] not in allowed:
                continue
            record = self.records[key]
            changes.append(
                {
                    **_ref(key),
                    "op": "delete" if record.deleted else "upsert",
                    "version": record.version,
                    "data": record.data,
                    "deleted": record.deleted,
                    "updated_at": "2026-01-01T00:00:00Z",
                }
            )
        return httpx.Response(
            200,
            json={
                "changes": changes,
                "cursor": str(position),
                "has_more": position < len(self.log),
            },
        )


def body_identity(body: dict[str, Any]) -> bytes:
    """What identifies a push body for idempotency (like the server: key order is ignored), so
    a body sent over REST and over the live WebSocket is the same body."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _ref(key: tuple[str, str]) -> dict[str, str]:
    return {"collection": key[0], "id": key[1]}
