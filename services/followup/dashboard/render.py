"""The dashboard's templates (Jinja2, autoescaped) and its plain message page."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from services.followup.dashboard import dates

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(moment=dates.moment, on_day=dates.on_day, zone_label=dates.zone_label)


def message(request: Request, status: int, title: str, text: str, user: str | None = None) -> Response:
    """A page that says one thing: why a page cannot be shown, or that one is logged out."""
    return templates.TemplateResponse(
        request, "message.html", {"title": title, "text": text, "user": user}, status_code=status
    )
