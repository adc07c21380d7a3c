"""The ops dashboard, served by the follow-up service: logging in (`session`), the pages (`pages`), and a
subject's swimmer lane (`swimmer`)."""

from fastapi import APIRouter

from services.followup.dashboard import audit, pages, session, worklists

router = APIRouter(include_in_schema=False)
router.include_router(session.router)
router.include_router(pages.router)
router.include_router(worklists.router)
router.include_router(audit.router)
