"""The ops dashboard, served by the follow-up service: logging in (`session`), the pages (`pages`), and a
subject's swimmer lane (`swimmer`)."""

from fastapi import APIRouter

from services.followup.dashboard import pages, session, study

router = APIRouter(include_in_schema=False)
router.include_router(session.router)
router.include_router(pages.router)
router.include_router(study.router)
