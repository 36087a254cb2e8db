"""``create_app(settings)``: the FastAPI application and the lifespan that owns its resources."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis_asyncio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.types import Scope

from homeport import __version__
from homeport.auth import tasks as auth_tasks
from homeport.auth.endpoints import router as auth_router
from homeport.auth.tokens import API_KEY_MARK, read_access_token
from homeport.config import Settings
from homeport.files import tasks as files_tasks
from homeport.files.endpoints import IMAGES_PATH
from homeport.files.endpoints import router as files_router
from homeport.kit.broker import Broker, MemoryBroker, RedisBroker
from homeport.kit.clock import utcnow
from homeport.kit.compression import CompressionMiddleware
from homeport.kit.db import Database
from homeport.kit.direct import DirectRoutesMiddleware, check_direct_routes
from homeport.kit.errors import ErrorCode
from homeport.kit.http import (
    BodyLimitMiddleware,
    ForwardedHeadersMiddleware,
    NulGuardMiddleware,
    PrefixHeadersMiddleware,
    RateLimitMiddleware,
    TraceMiddleware,
    client_ip,
)
from homeport.kit.jobs import JobRegistry, JobRunner
from homeport.kit.logging import configure_logging, get_logger
from homeport.kit.problems import install_problem_handlers
from homeport.kit.ratelimit import RateLimiter, make_storage
from homeport.kit.routing import include_flat
from homeport.kit.security import KeyRing, PasswordHashing, hash_token, load_or_create_secrets
from homeport.kit.storage import Storage, open_storage
from homeport.ops.endpoints import router as ops_router
from homeport.realtime import tasks as realtime_tasks
from homeport.realtime.endpoints import router as realtime_router
from homeport.realtime.hub import Hub
from homeport.records.direct import DIRECT_ROUTES as RECORD_ROUTES
from homeport.records.endpoints import router as records_router
from homeport.records.writes import GroupedWrites
from homeport.search.endpoints import router as search_router
from homeport.state import AppState
from homeport.sync import tasks as sync_tasks
from homeport.sync.endpoints import PUSH_PATH
from homeport.sync.endpoints import router as sync_router
from homeport.tenants.endpoints import router as tenants_router
from homeport.uploads import tasks as uploads_tasks
from homeport.uploads.digests import RunningDigests
from homeport.uploads.direct import DIRECT_ROUTES as UPLOAD_ROUTES
from homeport.uploads.endpoints import INIT_PATH
from homeport.uploads.endpoints import router as uploads_router
from homeport.uploads.known import KnownUploads
from homeport.uploads.tus import TUS_VERSION
from homeport.uploads.tus_endpoints import TUS_PREFIX
from homeport.uploads.tus_endpoints import router as tus_router
from homeport.uploads.tus_endpoints import versioned as tus_versioned_router

log = get_logger("homeport.app")

LOGIN_PATH = "/api/v1/auth/login"


def resolve_secrets(settings: Settings) -> tuple[str, KeyRing]:
    """Secrets from settings when given (needed when several instances share them), else
    from ``secrets.json`` in the data directory, created on first start."""
    import json

    stored = None
    if settings.secret_key is None or settings.jwt_keys is None:
        stored = load_or_create_secrets(settings.data_dir / "secrets.json", utcnow())
    secret_key = settings.secret_key or (stored.secret_key if stored else "")
    if settings.jwt_keys is not None:
        keys = json.loads(settings.jwt_keys)
        active = settings.jwt_active_kid or next(reversed(keys))
        keyring = KeyRing(keys=dict(keys), active_kid=active)
    else:
        assert stored is not None
        keyring = stored.keyring
    return secret_key, keyring


def open_configured_storage(settings: Settings) -> Storage:
    return open_storage(
        settings.storage_backend,
        root=settings.resolved_storage_dir,
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        prefix=settings.s3_prefix,
    )


def build_registry(
    settings: Settings, storage_of: Callable[[], Storage] | None = None
) -> JobRegistry:
    """``storage_of`` hands the running app's storage to file jobs (opened on first use when
    none is given, e.g. by a CLI or a test that runs jobs on their own)."""
    if storage_of is None:
        opened: list[Storage] = []

        def storage_of() -> Storage:
            if not opened:
                opened.append(open_configured_storage(settings))
            return opened[0]

    registry = JobRegistry()
    auth_tasks.register(registry, settings.session_cleanup_cron)
    sync_tasks.register(registry, settings)
    realtime_tasks.register(registry, settings.sync_compaction_cron)
    files_tasks.register(registry, storage_of, settings.images_max_pixels)
    uploads_tasks.register(registry, storage_of, settings.uploads_cleanup_cron)
    return registry


def create_app(
    settings: Settings | None = None,
    registry: JobRegistry | None = None,
    *,
    direct_routes: bool = True,
) -> FastAPI:
    """``direct_routes=False`` leaves every request to FastAPI (a test compares the two)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_json)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secret_key, keyring = resolve_secrets(settings)
        database = Database(
            settings.resolved_database_url,
            pool_size=settings.database_pool_size,
            echo=settings.database_echo,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        redis_client: Any = None
        if settings.redis_url:
            redis_client = redis_asyncio.from_url(settings.redis_url)
        limiter = RateLimiter(
            make_storage(
                settings.redis_url,
                connection_pool=redis_client.connection_pool if redis_client else None,
                key_prefix=f"{settings.redis_key_prefix}:rl",
            ),
            {
                "default": settings.rate_limit_default,
                "login": settings.rate_limit_login,
                "health": settings.rate_limit_health,
                "upload_init": settings.rate_limit_upload_init,
                "upload_chunk": settings.rate_limit_upload_chunk,
            },
        )
        storage = open_configured_storage(settings)
        await storage.start()
        runner = None
        if settings.jobs_enabled:
            runner = JobRunner(
                database,
                registry or build_registry(settings, lambda: storage),
                worker_id=f"{os.uname().nodename}-{os.getpid()}-{id(app):x}",
                poll_interval=settings.jobs_poll_interval_seconds,
                lease_seconds=settings.jobs_lease_seconds,
                default_max_attempts=settings.jobs_max_attempts,
            )
        broker: Broker = (
            RedisBroker(redis_client, f"{settings.redis_key_prefix}:realtime")
            if redis_client is not None
            else MemoryBroker()
        )
        hub = Hub(database, settings, secret_key, broker, redis_client)
        app.state.homeport = AppState(
            settings=settings,
            database=database,
            keyring=keyring,
            secret_key=secret_key,
            passwords=PasswordHashing(
                settings.argon2_time_cost,
                settings.argon2_memory_cost_kib,
                settings.argon2_parallelism,
            ),
            rate_limiter=limiter,
            redis=redis_client,
            job_runner=runner,
            broker=broker,
            hub=hub,
            storage=storage,
            upload_digests=RunningDigests(),
            known_uploads=KnownUploads(),
        )
        app.state.homeport.record_writes = GroupedWrites(app.state.homeport)
        await hub.start()
        if runner is not None:
            await runner.start()
        log.info("started", version=__version__, database=database.dialect)
        try:
            yield
        finally:
            await hub.stop()
            if runner is not None:
                await runner.stop()
            await storage.close()
            if redis_client is not None:
                await redis_client.aclose()
            await database.dispose()
            app.state.homeport = None

    app = FastAPI(
        title="Homeport",
        version=__version__,
        summary="Self-hosted backend for offline-first mobile apps",
        lifespan=lifespan,
        docs_url="/api-docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.homeport = None
    install_problem_handlers(app)
    app.add_api_route("/api/v1", _api_root, methods=["GET"], include_in_schema=False)
    include_flat(
        app,
        ops_router,
        auth_router,
        tenants_router,
        sync_router,
        records_router,
        realtime_router,
        search_router,
        uploads_router,
        tus_router,
        tus_versioned_router,
        files_router,
    )

    async def identify(scope: Scope) -> tuple[str, str]:
        path: str = scope["path"]
        ip = client_ip(scope)
        if path == LOGIN_PATH:
            return "login", f"ip:{ip}"
        if path.startswith("/health/"):
            return "health", f"ip:{ip}"
        method = scope.get("method", "")
        if (path == INIT_PATH or path.rstrip("/") == TUS_PREFIX) and method == "POST":
            return "upload_init", _caller_identity(scope, app, ip)
        if ("/chunk/" in path and path.startswith("/api/v1/uploads/")) or (
            path.startswith(TUS_PREFIX + "/") and method == "PATCH"
        ):
            return "upload_chunk", _caller_identity(scope, app, ip)
        return "default", _caller_identity(scope, app, ip)

    def limiter() -> RateLimiter | None:
        state: AppState | None = app.state.homeport
        if state is None or not settings.rate_limit_enabled:
            return None
        return state.rate_limiter

    # Added innermost first: the trace id is set before anything else runs.
    if direct_routes:
        hot_routes = (*RECORD_ROUTES, *UPLOAD_ROUTES)
        check_direct_routes(app.router.routes, hot_routes)
        app.add_middleware(DirectRoutesMiddleware, fastapi_app=app, routes=hot_routes)
    # gzip level 5 / brotli quality 4: most of the size gain of the top levels at a fraction
    # of their CPU (pull pages are large).
    app.add_middleware(CompressionMiddleware, minimum_size=1024, gzip_level=5, brotli_quality=4)
    app.add_middleware(RateLimitMiddleware, limiter=limiter, identify=identify)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "X-Trace-Id",
                "RateLimit",
                "RateLimit-Policy",
                "Retry-After",
                "ETag",
                "Content-Range",
                "Location",
                "Tus-Resumable",
                "Tus-Version",
                "Tus-Extension",
                "Tus-Max-Size",
                "Tus-Checksum-Algorithm",
                "Upload-Offset",
                "Upload-Length",
                "Upload-Metadata",
                "Upload-Expires",
                "Homeport-File-Id",
                "Homeport-File-Url",
            ],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_body_bytes,
        path_limits={
            PUSH_PATH: (settings.sync_max_batch_bytes, ErrorCode.SYNC_001),
            # base64 is 4/3 of the bytes, plus the JSON around it
            IMAGES_PATH: (
                settings.images_max_inline_bytes * 4 // 3 + 64 * 1024,
                ErrorCode.UPLOAD_007,
            ),
        },
        prefix_limits={
            "/api/v1/uploads/": (settings.uploads_max_chunk_bytes, ErrorCode.UPLOAD_007),
            TUS_PREFIX + "/": (settings.uploads_max_file_bytes, ErrorCode.UPLOAD_007),
        },
    )
    app.add_middleware(
        PrefixHeadersMiddleware, prefix=TUS_PREFIX, headers={"Tus-Resumable": TUS_VERSION}
    )
    app.add_middleware(NulGuardMiddleware)
    # Every /api answer names the API version, errors from the middlewares included.
    app.add_middleware(PrefixHeadersMiddleware, prefix="/api/", headers={"API-Version": "1"})
    app.add_middleware(TraceMiddleware)
    if settings.trusted_proxies:
        # Outermost: the client address and scheme are settled before anything uses them.
        app.add_middleware(ForwardedHeadersMiddleware, trusted=settings.trusted_proxies)
    return app


async def _api_root() -> dict[str, str]:
    return {"name": "homeport", "version": __version__}


def _caller_identity(scope: Scope, app: FastAPI, ip: str) -> str:
    """Per API key (one that authenticated lately), per user (verified token), else per IP.

    No database lookup: an API key not yet seen valid by this instance counts against the
    client's address, so made-up keys cannot each get a fresh counter.
    """
    headers = Headers(scope=scope)
    api_key = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
    state: AppState | None = app.state.homeport
    if api_key or token.startswith(API_KEY_MARK):
        key = api_key or token
        if state is not None and hash_token(key) in state.verified_api_keys:
            return "key:" + key.removeprefix(API_KEY_MARK).partition("_")[0][:16]
        return f"ip:{ip}"
    if token and state is not None:
        try:
            claims = read_access_token(state.keyring, token, issuer=state.settings.jwt_issuer)
        except Exception:
            return f"ip:{ip}"
        return f"user:{claims.user_id}"
    return f"ip:{ip}"
