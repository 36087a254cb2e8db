"""One flat route table for the app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute


def include_flat(app: FastAPI, *routers: APIRouter) -> None:
    """Add the routers' routes to the app's own table instead of nesting the routers.

    FastAPI keeps an included router as a branch that every request walks level by level,
    saving and restoring scope bookkeeping on each; over this app's route table that was about
    a tenth of a small request's CPU (py-spy, W5). An APIRouter's routes already carry its
    prefix, tags and dependencies, so the flat table routes and documents the same. A router
    that itself includes routers is refused: the context of those would be lost.
    """
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute | APIWebSocketRoute):
                raise TypeError(f"{route!r}: only plain routes can be added flat")
        app.router.routes.extend(router.routes)
