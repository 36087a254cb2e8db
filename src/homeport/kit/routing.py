"""One flat route table for the app, matched cheaply."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette._utils import get_route_path  # what Route.matches uses (FastAPI imports it too)
from starlette.routing import Match
from starlette.types import Scope


class Route(APIRoute):
    """An APIRoute that refuses a request whose path does not start with the route's literal
    prefix (its path up to the first parameter) before running FastAPI's matching.

    A router tries its routes one after the other; each miss through FastAPI's ``matches``
    (scope bookkeeping, then the path regex) cost about 2.5 µs, and a records write passed some
    forty routes: a tenth of its CPU (py-spy, W3). The regex is anchored and starts with that
    literal text, so a path without the prefix can never match: the answer is the same.
    """

    def __init__(self, path: str, endpoint: Any, **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.literal_prefix = self.path_format.split("{", 1)[0]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # The path the regex is matched against (without the root path), taken the way
        # Starlette's and FastAPI's own matching take it.
        if not get_route_path(scope).startswith(self.literal_prefix):
            return Match.NONE, {}
        return super().matches(scope)


def api_router(**options: Any) -> APIRouter:
    """An APIRouter whose routes are :class:`Route` (what :func:`include_flat` takes)."""
    return APIRouter(route_class=Route, **options)


def include_flat(app: FastAPI, *routers: APIRouter) -> None:
    """Add the routers' routes to the app's own table instead of nesting the routers.

    FastAPI keeps an included router as a branch that every request walks level by level,
    saving and restoring scope bookkeeping on each; over this app's route table that was about
    a tenth of a small request's CPU (py-spy, W5). An APIRouter's routes already carry its
    prefix, tags and dependencies, so the flat table routes and documents the same. A router
    that itself includes routers is refused: the context of those would be lost; so is a route
    that is not a :class:`Route` (made by :func:`api_router`), which every request would pay for.
    """
    for each in routers:
        for route in each.routes:
            if not isinstance(route, Route | APIWebSocketRoute):
                raise TypeError(
                    f"{route!r}: only routes of kit.routing.api_router() are added flat"
                )
        app.router.routes.extend(each.routes)
