"""The ops dashboard, served by the follow-up service: logging in (`session`), the pages (`pages`,
`study`, `worklists`, `audit`), a subject's swimmer lane (`swimmer`) and survival curves (`km`), and live
updates (`live`)."""

from fastapi import APIRouter

from services.followup.dashboard import live, pages, session, study

router = APIRouter(include_in_schema=False)
router.include_router(session.router)
router.include_router(pages.router)
router.include_router(study.router)
router.include_router(live.router)
