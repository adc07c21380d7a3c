"""The routes of an app, included routers opened up (FastAPI keeps an included router whole)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from starlette.routing import BaseRoute


def every_route(app: FastAPI) -> Iterator[BaseRoute]:
    routes = list(app.router.routes)
    while routes:
        route = routes.pop()
        if hasattr(route, "original_router"):
            routes.extend(route.original_router.routes)
        else:
            yield route
