"""Expedited safety reporting clocks: SAE to the sponsor 24 h from site awareness; SUSAR to the regulator
7 days (fatal or life-threatening) or 15 days from sponsor receipt (shipped protocol)."""

from datetime import UTC, date, datetime, timedelta
from functools import reduce

import pytest

from services.followup.projections.journey import Journey, apply
from services.followup.projections.reporting import ReportDue, reports_due
from shared.contract.envelope import Envelope
from shared.contract.events import (
    AECorrected,
    AEReported,
    AEUpdated,
    Enrolled,
    Payload,
    SafetyReportSubmitted,
)
from shared.protocol import load_protocol
from tests.services.followup.envelopes import envelope as recorded

PROTOCOL = load_protocol()
SUBJECT = "UCT-06-001"
ONSET = datetime(2025, 4, 2, 3, 0, tzinfo=UTC)
AWARE = datetime(2025, 4, 2, 8, 30, tzinfo=UTC)
SECOND = timedelta(seconds=1)
SAE_DUE = AWARE + timedelta(hours=24)
SPONSOR_RECEIPT = AWARE + timedelta(hours=20)


def envelope(payload: Payload, occurred_at: datetime) -> Envelope:
    return recorded(payload, occurred_at, subject_id=SUBJECT)


def journey(*events: Payload) -> Journey:
    enrolled = Enrolled(
        site_id="06",
        consent_signed_on=date(2025, 3, 1),
        year_of_birth=1970,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    return reduce(lambda j, p: apply(j, envelope(p, ONSET), p), [enrolled, *events], Journey(subject_id=SUBJECT))


def ae(**changes) -> AEReported:
    """A serious (hospitalisation), suspected, unexpected grade 3 CRS: a SUSAR."""
    return AEReported(
        **(
            {
                "term": "Cytokine release syndrome",
                "category": "CRS",
                "grade": 3,
                "serious": True,
                "seriousness_criteria": ("hospitalisation",),
                "relatedness": "possible",
                "expected": False,
                "aware_at": AWARE,
            }
            | changes
        )
    )


def submitted(reported: AEReported, kind: str, received_at: datetime) -> SafetyReportSubmitted:
    return SafetyReportSubmitted(ae_id=reported.ae_id, report=kind, received_at=received_at)


def due(j: Journey, now: datetime, kind: str) -> ReportDue:
    [found] = [r for r in reports_due(j, PROTOCOL, now) if r.report == kind]
    return found


# --- SAE to the sponsor -------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "expected"), [(AWARE, "due"), (SAE_DUE, "due"), (SAE_DUE + SECOND, "overdue")])
def test_sae_is_due_24_hours_after_the_site_became_aware(now, expected):
    reported = ae()
    r = due(journey(reported), now, "sae_to_sponsor")
    assert (r.subject_id, r.site_id, r.ae_id, r.term) == (SUBJECT, "06", reported.ae_id, "Cytokine release syndrome")
    assert (r.clock_started_at, r.due_at, r.received_at, r.status) == (AWARE, SAE_DUE, None, expected)


@pytest.mark.parametrize(("received_at", "expected"), [(SAE_DUE, "submitted"), (SAE_DUE + SECOND, "submitted_late")])
def test_sae_submitted_in_time_or_late_at_the_exact_boundary(received_at, expected):
    reported = ae()
    j = journey(reported, submitted(reported, "sae_to_sponsor", received_at))
    for now in (received_at, received_at + timedelta(days=30)):  # the verdict does not change with time
        r = due(j, now, "sae_to_sponsor")
        assert (r.received_at, r.status) == (received_at, expected)


def test_the_clock_starts_at_awareness_not_at_onset():
    late_aware = ONSET + timedelta(days=3)
    r = due(journey(ae(aware_at=late_aware)), ONSET + timedelta(days=2), "sae_to_sponsor")
    assert (r.clock_started_at, r.due_at, r.status) == (late_aware, late_aware + timedelta(hours=24), "due")


def test_non_serious_aes_have_no_reports():
    severe = ae(grade=4, serious=False, seriousness_criteria=())
    assert reports_due(journey(severe), PROTOCOL, AWARE + timedelta(days=30)) == []


@pytest.mark.parametrize(
    "changes", [{"expected": True}, {"expected": None}, {"relatedness": "unlikely"}, {"relatedness": "unrelated"}]
)
def test_a_serious_ae_that_is_not_a_susar_has_only_the_sae_report(changes):
    assert [r.report for r in reports_due(journey(ae(**changes)), PROTOCOL, AWARE)] == ["sae_to_sponsor"]


def test_each_serious_ae_has_its_own_clock():
    first, second = ae(expected=True), ae(expected=True, aware_at=AWARE + timedelta(days=2))
    reports = reports_due(
        journey(first, second, submitted(first, "sae_to_sponsor", AWARE)), PROTOCOL, AWARE + timedelta(days=2)
    )
    assert {(r.ae_id, r.status) for r in reports} == {(first.ae_id, "submitted"), (second.ae_id, "due")}


def test_clock_hours_come_from_the_protocol():
    slower = PROTOCOL.model_copy(
        update={"safety_reporting": PROTOCOL.safety_reporting.model_copy(update={"sae_to_sponsor_hours": 48})}
    )
    [r] = reports_due(journey(ae(expected=True)), slower, SAE_DUE + SECOND)
    assert (r.due_at, r.status) == (AWARE + timedelta(hours=48), "due")


# --- SUSAR to the regulator ---------------------------------------------------------------------


def test_the_susar_clock_waits_for_sponsor_receipt():
    r = due(journey(ae()), AWARE + timedelta(days=60), "susar_to_regulator")
    assert (r.clock_started_at, r.due_at, r.received_at, r.status) == (None, None, None, "awaiting_sponsor_receipt")


def test_a_susar_sent_before_the_sponsor_receipt_is_recorded_counts_as_submitted():
    reported = ae()
    j = journey(reported, submitted(reported, "susar_to_regulator", AWARE + timedelta(days=3)))
    r = due(j, AWARE + timedelta(days=60), "susar_to_regulator")
    assert (r.clock_started_at, r.due_at, r.status) == (None, None, "submitted")


@pytest.mark.parametrize(
    ("changes", "days"),
    [
        ({}, 15),  # grade 3, hospitalisation
        ({"grade": 4}, 7),
        ({"seriousness_criteria": ("life_threatening",)}, 7),
        ({"grade": 5, "seriousness_criteria": ("death",)}, 7),
        ({"seriousness_criteria": ("hospitalisation", "life_threatening")}, 7),
        ({"seriousness_criteria": ("important_medical_event",)}, 15),
    ],
)
def test_susar_due_7_days_if_fatal_or_life_threatening_else_15_from_sponsor_receipt(changes, days):
    reported = ae(**changes)
    j = journey(reported, submitted(reported, "sae_to_sponsor", SPONSOR_RECEIPT))
    deadline = SPONSOR_RECEIPT + timedelta(days=days)
    r = due(j, deadline, "susar_to_regulator")
    assert (r.clock_started_at, r.due_at, r.status) == (SPONSOR_RECEIPT, deadline, "due")
    assert due(j, deadline + SECOND, "susar_to_regulator").status == "overdue"


@pytest.mark.parametrize(("late", "expected"), [(timedelta(0), "submitted"), (SECOND, "submitted_late")])
def test_susar_submitted_in_time_or_late_at_the_exact_boundary(late, expected):
    reported = ae()
    deadline = SPONSOR_RECEIPT + timedelta(days=15)
    j = journey(
        reported,
        submitted(reported, "sae_to_sponsor", SPONSOR_RECEIPT),
        submitted(reported, "susar_to_regulator", deadline + late),
    )
    r = due(j, deadline + timedelta(days=10), "susar_to_regulator")
    assert (r.received_at, r.status) == (deadline + late, expected)


def test_a_susar_that_worsens_to_grade_4_gets_the_7_day_clock():
    reported = ae()
    j = journey(
        reported, submitted(reported, "sae_to_sponsor", SPONSOR_RECEIPT), AEUpdated(ae_id=reported.ae_id, grade=4)
    )
    assert due(j, SPONSOR_RECEIPT, "susar_to_regulator").due_at == SPONSOR_RECEIPT + timedelta(days=7)


def test_the_7_day_clock_counts_the_grade_reached_by_then():
    reported = ae()
    worsened = AEUpdated(ae_id=reported.ae_id, grade=4)
    worse_at = ONSET + timedelta(days=5)
    j = apply(
        journey(reported, submitted(reported, "sae_to_sponsor", SPONSOR_RECEIPT)),
        envelope(worsened, worse_at),
        worsened,
    )
    assert due(j, worse_at - timedelta(days=1), "susar_to_regulator").due_at == SPONSOR_RECEIPT + timedelta(days=15)
    assert due(j, worse_at, "susar_to_regulator").due_at == SPONSOR_RECEIPT + timedelta(days=7)


def test_a_correction_to_unexpected_makes_it_a_susar():
    reported = ae(expected=True)
    assert [r.report for r in reports_due(journey(reported), PROTOCOL, AWARE)] == ["sae_to_sponsor"]
    fix = AECorrected(ae_id=reported.ae_id, **ae(expected=False).model_dump(exclude={"ae_id"}))
    assert [r.report for r in reports_due(journey(reported, fix), PROTOCOL, AWARE)] == [
        "sae_to_sponsor",
        "susar_to_regulator",
    ]


def test_a_clock_started_at_the_end_of_time_does_not_overflow():
    # Accepted before input years were checked: the due date is the end of time, not an error.
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    reported = ae(aware_at=late)
    j = journey(reported, submitted(reported, "sae_to_sponsor", late))
    reports = {r.report: r for r in reports_due(j, PROTOCOL, AWARE)}
    assert {kind: r.status for kind, r in reports.items()} == {
        "sae_to_sponsor": "submitted",
        "susar_to_regulator": "due",
    }
    assert all(r.due_at == datetime.max.replace(tzinfo=UTC) for r in reports.values())
