"""The ops dashboard, served by the follow-up service: logging in (`session`), the pages (`pages`,
`study`, `worklists`, `audit`), a subject's swimmer lane (`swimmer`) and survival curves (`km`), and live
updates (`live`)."""

from fastapi import APIRouter

from services.followup.dashboard import audit, live, pages, session, study, worklists

router = APIRouter(include_in_schema=False)
for module in (session, pages, study, worklists, audit, live):
    router.include_router(module.router)
