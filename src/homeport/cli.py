"""The ``homeport`` command: serve, migrate, init, apply, tenants, users, api-keys, keys."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from homeport.auth.principal import Principal, Role
from homeport.auth.schemas import ApiKeyCreate, Email, Password, Slug, StrictModel
from homeport.auth.service import AuthService
from homeport.config import Settings
from homeport.kit.clock import utcnow
from homeport.kit.db import Database
from homeport.kit.errors import ProblemError
from homeport.kit.security import KeyRing, PasswordHashing, rotate_jwt_key
from homeport.sync.collections import CollectionService
from homeport.sync.manifest import (
    ManifestError,
    ManifestPlan,
    ManifestRefused,
    apply_manifest,
    load_manifest,
    plan_manifest,
)
from homeport.tenants.repository import TenantRepository
from homeport.tenants.schemas import MemberAdd, TenantCreate
from homeport.tenants.service import TenantService

app = typer.Typer(
    help="Homeport: a self-hosted backend for offline-first mobile apps.",
    no_args_is_help=True,
    add_completion=False,
)
tenants_app = typer.Typer(help="List and create tenants.", no_args_is_help=True)
users_app = typer.Typer(help="List users, create them, add them to tenants.", no_args_is_help=True)
api_keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="Token signing keys.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(users_app, name="users")
app.add_typer(api_keys_app, name="api-keys")
app.add_typer(keys_app, name="keys")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (SQLite file, secrets). Default ./homeport-data or HOMEPORT_DATA_DIR.",
    ),
]
T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=BaseModel)


class _InitInput(StrictModel):
    email: Email
    password: Password
    tenant: Slug


def _settings(data_dir: Path | None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _migrate(settings: Settings) -> None:
    from homeport.migrate import upgrade

    upgrade(settings.resolved_database_url)


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _run(settings: Settings, work: Callable[[Database, PasswordHashing], Awaitable[T]]) -> T:
    async def runner() -> T:
        database = Database(
            settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        passwords = PasswordHashing(
            settings.argon2_time_cost, settings.argon2_memory_cost_kib, settings.argon2_parallelism
        )
        try:
            return await work(database, passwords)
        finally:
            await database.dispose()

    try:
        return asyncio.run(runner())
    except ProblemError as exc:
        raise _fail(f"error: {exc.detail or exc.code.title}") from exc


# Options whose name differs from the schema field they fill.
_OPTION_OF_FIELD = {"allowed_ips": "--allow-ip", "scopes": "--scope"}


def _validated(schema: type[ModelT], **values: object) -> ModelT:
    """Check command-line input with the API's own schema: the CLI stores nothing the API would
    refuse. Every offending option is named."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            option = _OPTION_OF_FIELD.get(field, "--" + field.replace("_", "-"))
            problems.append(f"{option}: {error['msg'].removeprefix('Value error, ')}")
        raise _fail("error: " + "; ".join(problems)) from exc


def _system_principal(tenant_id: str) -> Principal:
    return Principal(kind="user", tenant_id=tenant_id, role=Role.OWNER, is_platform_admin=True)


async def _require_tenant(database: Database, slug: str) -> str:
    async with database.transaction() as session:
        tenant = await TenantRepository(session).get_tenant_by_slug(slug)
    if tenant is None:
        raise _fail(f"error: no tenant {slug!r}")
    return tenant.id


# Collection thresholds of the serving process (young, middle, old generation): see serve.
GC_THRESHOLDS = (20_000, 50, 100)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Create or upgrade the database schema (safe to run again)."""
    settings = _settings(data_dir)
    _migrate(settings)
    typer.echo("database is up to date")


def _bootstrap(settings: Settings) -> None:
    """First start: a tenant and an owner with a generated password, printed once."""

    async def work(database: Database, passwords: PasswordHashing) -> str | None:
        async with database.transaction() as session:
            if await TenantRepository(session).count_users() > 0:
                return None
            password = secrets.token_urlsafe(12)
            await TenantService(session, passwords).create_tenant_with_owner(
                settings.bootstrap_tenant,
                settings.bootstrap_tenant.capitalize(),
                settings.bootstrap_email,
                password,
                platform_admin=True,
            )
            return password

    password = _run(settings, work)
    if password is None:
        return
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    typer.echo(
        "\n".join(
            [
                "",
                "First start: created tenant "
                f"{settings.bootstrap_tenant!r} and its owner (also platform admin).",
                f"  email:    {settings.bootstrap_email}",
                f"  password: {password}",
                "This password is shown only now. Log in with:",
                f"  curl -s -X POST {base}/api/v1/auth/login \\",
                "    -H 'Content-Type: application/json' \\",
                f'    -d \'{{"email": "{settings.bootstrap_email}", "password": "{password}",'
                ' "device_id": "laptop"}\'',
                "",
            ]
        )
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Migrate, create the first tenant on first start, and serve the API."""
    import uvicorn

    from homeport.app import create_app
    from homeport.kit.http_protocol import ProblemHttpToolsProtocol, ProblemWebSocketProtocol

    settings = _settings(data_dir)
    updates: dict[str, object] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    settings = settings.model_copy(update=updates)
    _migrate(settings)
    _bootstrap(settings)
    typer.echo(
        f"Homeport listening on http://{settings.host}:{settings.port}"
        f" (API docs at /api-docs, data in {settings.data_dir}); Ctrl+C stops it."
    )
    application = create_app(settings)
    # Everything built so far (modules, the route table, schemas) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it. Unfrozen, those walks
    # stalled every request in flight for about 100 ms every second under load (W3's p99).
    gc.collect()
    gc.freeze()
    # A request allocates thousands of objects, nearly all freed by reference counting; at the
    # default threshold (700) the young generation was collected several times per request.
    # Measured on W3, alternating with the defaults: 5 to 12 % more creates per second, the
    # p99 the same or lower; cyclic garbage waits a little longer (a few MB at most).
    gc.set_threshold(*GC_THRESHOLDS)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools, with unparseable requests answered as problem+json instead of text/plain.
        http=ProblemHttpToolsProtocol,
        ws=ProblemWebSocketProtocol,  # refused handshakes as problem+json, too
        # Forwarded headers are handled by the app (only from HOMEPORT_TRUSTED_PROXIES).
        proxy_headers=False,
        log_config=None,
        access_log=False,
        server_header=False,
        # Compressing every small sync frame per connection costs more CPU than it saves
        # bytes, and fan-out sends the same frame to many connections.
        ws_per_message_deflate=settings.realtime_compression,
    )


@app.command()
def init(
    email: Annotated[str, typer.Option(help="Owner's email.")],
    password: Annotated[str, typer.Option(help="Owner's password (at least 8 characters).")],
    tenant: Annotated[str, typer.Option(help="Tenant slug.")] = "default",
    name: Annotated[str | None, typer.Option(help="Tenant display name.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a tenant and its owner non-interactively (exit 1 if either exists)."""
    checked = _validated(_InitInput, email=email, password=password, tenant=tenant)
    email = checked.email
    settings = _settings(data_dir)
    _migrate(settings)

    async def work(database: Database, passwords: PasswordHashing) -> None:
        async with database.transaction() as session:
            first = await TenantRepository(session).count_users() == 0
            await TenantService(session, passwords).create_tenant_with_owner(
                tenant, name or tenant.capitalize(), email, password, platform_admin=first
            )

    _run(settings, work)
    typer.echo(f"created tenant {tenant!r} with owner {email}")


@app.command()
def apply(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="The manifest (YAML) declaring the collections.")
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant slug; overrides the manifest's tenant.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Apply breaking schema changes too (recorded).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff and apply nothing.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Declare a tenant's collections from a manifest: all or nothing; never deletes."""
    try:
        manifest = load_manifest(file)
    except OSError as exc:
        raise _fail(f"error: cannot read {file}: {exc.strerror or exc}") from exc
    except ManifestError as exc:
        raise _fail(
            "\n".join([f"error: invalid manifest {exc.source}:", *(f"  {p}" for p in exc.problems)])
        ) from exc
    slug = tenant or manifest.tenant
    if slug is None:
        raise _fail("error: no tenant: pass --tenant or set tenant: in the manifest")
    settings = _settings(data_dir)

    async def work(database: Database, _passwords: PasswordHashing) -> tuple[ManifestPlan, bool]:
        tenant_id = await _require_tenant(database, slug)
        try:
            async with database.transaction() as session:
                service = CollectionService(session, settings.records_max_field_indexes)
                if dry_run:
                    return await plan_manifest(service, tenant_id, manifest, force=force), False
                plan = await apply_manifest(
                    service, tenant_id, manifest, force=force, actor="cli:homeport apply"
                )
                return plan, False
        except ManifestRefused as refused:  # rolled back; nothing was declared
            return refused.plan, True

    plan, refused = _run(settings, work)
    for line in plan.lines():
        typer.echo(line)
    if refused:
        names = ", ".join(change.name for change in plan.breaking)
        raise _fail(f"error: breaking changes in {names}; nothing applied (use --force)")
    if dry_run:
        typer.echo("dry run: nothing applied")
        return
    counts = [f"{plan.count(action)} {action}" for action in ("created", "updated", "unchanged")]
    typer.echo(f"applied to {slug}: " + ", ".join(counts))


@tenants_app.command("list")
def tenants_list(data_dir: DataDir = None) -> None:
    """List tenants."""

    async def work(database: Database, _passwords: PasswordHashing) -> None:
        async with database.transaction() as session:
            for tenant in await TenantRepository(session).list_tenants():
                typer.echo(f"{tenant.id}  {tenant.slug}  {tenant.name}")

    _run(_settings(data_dir), work)


@tenants_app.command("create")
def tenants_create(
    slug: Annotated[str, typer.Option(help="Short name used at login, e.g. acme.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    owner_email: Annotated[
        str | None, typer.Option(help="Owner; a new person gets an invitation token.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a tenant, optionally with its owner."""
    checked = _validated(TenantCreate, slug=slug, name=name, owner_email=owner_email)

    async def work(database: Database, passwords: PasswordHashing) -> None:
        async with database.transaction() as session:
            tenant, added = await TenantService(session, passwords).create_tenant(
                checked.slug, checked.name, checked.owner_email
            )
        typer.echo(f"created tenant {tenant.slug} ({tenant.id})")
        if added and added.invitation:
            typer.echo(f"invitation token for {added.user.email}: {added.invitation.token}")

    _run(_settings(data_dir), work)


@users_app.command("list")
def users_list(data_dir: DataDir = None) -> None:
    """List users."""

    async def work(database: Database, _passwords: PasswordHashing) -> None:
        async with database.transaction() as session:
            for user in await TenantRepository(session).list_users():
                admin = "  platform-admin" if user.is_platform_admin else ""
                typer.echo(f"{user.id}  {user.email}{admin}")

    _run(_settings(data_dir), work)


@users_app.command("add")
def users_add(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    email: Annotated[str, typer.Option(help="The person's email.")],
    role: Annotated[Role, typer.Option(help="Role in the tenant.")] = Role.MEMBER,
    password: Annotated[
        str | None, typer.Option(help="Set a password now instead of an invitation.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Add a person to a tenant (created if new)."""
    checked = _validated(MemberAdd, email=email, role=role, password=password)

    async def work(database: Database, passwords: PasswordHashing) -> None:
        tenant_id = await _require_tenant(database, tenant)
        async with database.transaction() as session:
            added = await TenantService(session, passwords).add_member(
                _system_principal(tenant_id),
                tenant_id,
                checked.email,
                checked.role,
                None,
                checked.password,
            )
        typer.echo(f"added {added.user.email} to {tenant} as {role.value}")
        if added.invitation:
            typer.echo(f"invitation token: {added.invitation.token}")

    _run(_settings(data_dir), work)


@api_keys_app.command("create")
def api_keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[list[str], typer.Option(help="A scope; repeat for several.")],
    expires_days: Annotated[
        int | None, typer.Option(min=1, max=36500, help="Expire after N days.")
    ] = None,
    allow_ip: Annotated[
        list[str] | None, typer.Option(help="Allowed address or CIDR; repeatable.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key; the key is printed once."""
    expires = utcnow() + timedelta(days=expires_days) if expires_days else None
    checked = _validated(
        ApiKeyCreate, name=name, scopes=scope, expires_at=expires, allowed_ips=allow_ip or []
    )
    settings = _settings(data_dir)

    async def work(database: Database, passwords: PasswordHashing) -> None:
        tenant_id = await _require_tenant(database, tenant)
        async with database.transaction() as session:
            service = AuthService(session, settings, _no_keyring(), passwords)
            api_key, key = await service.create_api_key(
                _system_principal(tenant_id),
                name=checked.name,
                scopes=checked.scopes,
                expires_at=checked.expires_at,
                allowed_ips=checked.allowed_ips,
            )
        typer.echo(f"id:  {api_key.id}")
        typer.echo(f"key: {key}   (shown once)")

    _run(settings, work)


@api_keys_app.command("list")
def api_keys_list(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")], data_dir: DataDir = None
) -> None:
    """List a tenant's API keys (prefixes only)."""
    settings = _settings(data_dir)

    async def work(database: Database, passwords: PasswordHashing) -> None:
        tenant_id = await _require_tenant(database, tenant)
        async with database.transaction() as session:
            service = AuthService(session, settings, _no_keyring(), passwords)
            for key in await service.list_api_keys(_system_principal(tenant_id)):
                if key.revoked_at is not None:
                    state = "revoked"
                elif key.expires_at is not None and key.expires_at <= utcnow():
                    state = "expired"
                else:
                    state = "active"
                typer.echo(
                    f"{key.id}  hpk_{key.prefix}_…  {key.name}  {state}  {','.join(key.scopes)}"
                )

    _run(settings, work)


@api_keys_app.command("revoke")
def api_keys_revoke(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    key_id: Annotated[str, typer.Option("--id", help="The key's id.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke an API key."""
    settings = _settings(data_dir)

    async def work(database: Database, passwords: PasswordHashing) -> None:
        tenant_id = await _require_tenant(database, tenant)
        async with database.transaction() as session:
            service = AuthService(session, settings, _no_keyring(), passwords)
            await service.revoke_api_key(_system_principal(tenant_id), key_id)
        typer.echo(f"revoked {key_id}")

    _run(settings, work)


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None) -> None:
    """Make a new token signing key active; older keys still verify live tokens."""
    settings = _settings(data_dir)
    path = settings.data_dir / "secrets.json"
    if settings.jwt_keys:
        raise _fail("error: keys come from HOMEPORT_JWT_KEYS; rotate them there")
    if not path.exists():
        raise _fail(f"error: no secrets file in {settings.data_dir}; start the server once first")
    kid = rotate_jwt_key(path, utcnow())
    typer.echo(f"active signing key is now {kid}; restart the server to use it")


def _no_keyring() -> KeyRing:
    """API key commands issue no tokens; the service only needs a key ring to exist."""
    return KeyRing(keys={"cli": secrets.token_urlsafe(32)}, active_kid="cli")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
