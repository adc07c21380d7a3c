"""The follow-up schedule: windows, visit statuses on a date, long-term follow-up and off-study."""

from datetime import UTC, date, datetime, timedelta
from functools import reduce

import pytest

from services.followup.projections.journey import Journey, apply
from services.followup.projections.schedule import ScheduledVisit, missed, schedule
from shared.contract.envelope import Envelope
from shared.contract.events import (
    AgentDose,
    ConsentWithdrawn,
    Enrolled,
    InfusionCorrected,
    LostToFollowUp,
    LymphodepletionGiven,
    Payload,
    PersistenceSampled,
    ResponseAssessed,
    StudyCompleted,
    SubjectDied,
    SurvivalStatusRecorded,
    UCARTInfused,
    VisitCompleted,
)
from shared.protocol import Protocol, load_protocol
from tests.services.followup.envelopes import envelope as recorded

# A small protocol with asymmetric windows, so that "before" and "after" cannot be swapped unnoticed.
PROTOCOL = Protocol.model_validate(
    {
        **load_protocol().model_dump(),
        "protocol": {"id": "SCHED-TEST", "version": "1"},
        "followup": {
            "main_followup_end_day": 84,
            "long_term_end_day": 365,
            "survival_end_day": 168,
            "visits": [
                {"code": "V4", "kind": "safety", "target_day": 4, "window_before": 1, "window_after": 2},  # days 3-6
                {
                    "code": "RESP_W4",
                    "kind": "response",
                    "target_day": 28,
                    "window_before": 3,
                    "window_after": 7,
                },  # 25-35
                {"code": "PERS_D28", "kind": "persistence", "target_day": 28, "window_before": 3, "window_after": 3},
                {"code": "RESP_W12", "kind": "response", "target_day": 84, "window_before": 7, "window_after": 7},
                {"code": "LTFU_M6", "kind": "ltfu", "target_day": 182, "window_before": 14, "window_after": 14},
            ],
        },
        "response_visits": {"W4": "RESP_W4", "W12": "RESP_W12", "M6": "LTFU_M6"},
    }
)
SUBJECT = "UCT-04-005"
DAY0 = date(2025, 3, 12)
FLU = LymphodepletionGiven(agents=(AgentDose(agent="fludarabine", dose=30, unit="mg/m2"),))


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def envelope(payload: Payload, on: date) -> Envelope:
    occurred_at = datetime(on.year, on.month, on.day, 10, tzinfo=UTC)
    return recorded(payload, occurred_at, subject_id=SUBJECT, recorded_at=datetime.now(UTC))


def journey(*events: tuple[Payload, date], infused: bool = True) -> Journey:
    history = [
        (
            Enrolled(
                site_id="04",
                consent_signed_on=day(-12),
                year_of_birth=1990,
                sex="F",
                disease_status="relapsed",
                cd19_positive=True,
            ),
            day(-10),
        ),
        (FLU, day(-5)),
        (FLU, day(-4)),
        (FLU, day(-3)),
    ]
    if infused:
        history.append((UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="L", donor_id="D"), DAY0))
    return reduce(lambda j, e: apply(j, envelope(*e), e[0]), [*history, *events], Journey(subject_id=SUBJECT))


def visit(code: str, j: Journey, today: date, protocol: Protocol = PROTOCOL) -> ScheduledVisit:
    return next(v for v in schedule(j, protocol, today) if v.code == code)


def done(code: str, on: date) -> tuple[Payload, date]:
    return VisitCompleted(visit_code=code), on


def w(timepoint: str, result: str, on: date) -> tuple[Payload, date]:
    return ResponseAssessed(
        timepoint=timepoint, response=result, marrow_blasts_pct=60 if result in ("NR", "RELAPSE", "PD") else 2
    ), on


def test_nothing_is_scheduled_before_the_infusion():
    assert schedule(journey(infused=False), PROTOCOL, day(10)) == []


def test_dates_are_counted_from_day_0():
    v = visit("V4", journey(), DAY0)
    assert (v.study_day, v.target_date, v.window_start, v.window_end) == (4, day(4), day(3), day(6))
    assert [v.code for v in schedule(journey(), PROTOCOL, DAY0)] == ["V4", "PERS_D28", "RESP_W4", "RESP_W12"]


@pytest.mark.parametrize(
    ("completed_day", "expected"),
    [
        (2, "completed_out_of_window"),
        (3, "completed"),
        (4, "completed"),
        (6, "completed"),
        (7, "completed_out_of_window"),
    ],
)
def test_completion_window_is_inclusive_on_both_ends(completed_day, expected):
    v = visit("V4", journey(done("V4", day(completed_day))), day(100))
    assert (v.status, v.completed_on) == (expected, day(completed_day))


@pytest.mark.parametrize(("today", "expected"), [(2, "upcoming"), (3, "due"), (6, "due"), (7, "overdue")])
def test_open_visit_status_on_the_boundary_days(today, expected):
    assert visit("V4", journey(), day(today)).status == expected


@pytest.mark.parametrize(
    ("assessed_day", "expected"),
    [(24, "completed_out_of_window"), (25, "completed"), (35, "completed"), (36, "completed_out_of_window")],
)
def test_a_response_assessment_completes_its_response_visit(assessed_day, expected):
    v = visit("RESP_W4", journey(w("W4", "NR", day(assessed_day))), day(100))
    assert (v.status, v.completed_on) == (expected, day(assessed_day))
    assert visit("PERS_D28", journey(w("W4", "NR", day(assessed_day))), day(100)).status == "overdue"


@pytest.mark.parametrize(("w12", "has_ltfu"), [("CR", True), ("CRi", True), ("NR", False), ("RELAPSE", False)])
def test_long_term_visits_only_after_w12_remission(w12, has_ltfu):
    codes = [v.code for v in schedule(journey(w("W12", w12, day(84))), PROTOCOL, day(100))]
    assert ("LTFU_M6" in codes) is has_ltfu
    if has_ltfu:
        assert visit("LTFU_M6", journey(w("W12", w12, day(84))), day(100)).status == "upcoming"


def test_no_long_term_visits_without_a_w12_assessment():
    j = journey(w("W4", "CR", day(28)), w("UNSCHEDULED", "CR", day(84)))
    assert "LTFU_M6" not in [v.code for v in schedule(j, PROTOCOL, day(200))]


@pytest.mark.parametrize(
    "exit_event",
    [
        ConsentWithdrawn(withdrawal_reason="moved"),
        SubjectDied(primary_cause="other"),
        LostToFollowUp(last_contact_on=date(2025, 3, 28)),
    ],
    ids=lambda e: type(e).__name__,
)
def test_off_study_cancels_what_is_left(exit_event):
    j = journey(done("V4", day(4)), (exit_event, day(20)))
    before_exit = {v.code: v.status for v in schedule(j, PROTOCOL, day(19))}
    assert before_exit == {"V4": "completed", "PERS_D28": "upcoming", "RESP_W4": "upcoming", "RESP_W12": "upcoming"}
    for today in (day(20), day(30), day(100)):  # from the exit day on
        statuses = {v.code: v.status for v in schedule(j, PROTOCOL, today)}
        assert statuses == {
            "V4": "completed",
            "PERS_D28": "not_applicable",
            "RESP_W4": "not_applicable",
            "RESP_W12": "not_applicable",
        }


def test_shipped_protocol_schedule_has_long_term_visits_in_w12_remission_and_survival_contacts_otherwise():
    shipped = load_protocol()
    ltfu = {v.code for v in shipped.followup.visits if v.kind == "ltfu"}
    survival = {v.code for v in shipped.followup.visits if v.kind == "survival"}
    in_remission = schedule(journey(w("W12", "CR", day(84))), shipped, day(90))
    not_in_remission = schedule(journey(w("W12", "NR", day(84))), shipped, day(90))
    assert {v.code for v in in_remission} == shipped.visit_codes - survival
    assert {v.code for v in not_in_remission} == shipped.visit_codes - ltfu
    assert ltfu and survival == {"SURV_W16", "SURV_W20", "SURV_W24"}
    assert {v.code for v in schedule(journey(), shipped, day(10))} == shipped.visit_codes - ltfu  # W12 not yet in
    assert [v.target_date for v in in_remission] == sorted(v.target_date for v in in_remission)
    assert next(v for v in in_remission if v.code == "RESP_W12").status == "completed"


def test_completing_the_main_follow_up_cancels_the_later_visits():
    shipped = load_protocol()
    j = journey(w("W12", "NR", day(84)), (StudyCompleted(completed="main_follow_up"), day(88)))
    statuses = {v.code: v.status for v in schedule(j, shipped, day(100))}
    assert statuses["RESP_W12"] == "completed"
    assert statuses["D28"] == "overdue"  # missed long before, stays a deviation
    assert {code for code, s in statuses.items() if s == "not_applicable"} == {
        "PERS_W12",
        "PERS_W16",
        "PERS_W20",
        "PERS_W24",
    }  # PERS_W12's window (77-91) was still open on day 88
    still_on_study = {v.code: v.status for v in schedule(j, shipped, day(87))}
    assert (still_on_study["PERS_W12"], still_on_study["PERS_W16"]) == ("due", "upcoming")
    assert (statuses["SURV_W16"], statuses["SURV_W24"]) == ("due", "upcoming")  # survival contacts go on


def test_a_corrected_infusion_moves_the_schedule():
    corrected = journey(
        done("V4", day(4)),
        (InfusionCorrected(dose_cells_per_kg=1e7, dose_level=1, product_lot="L", donor_id="D"), day(2)),
    )
    v = visit("V4", corrected, day(100))
    assert (v.target_date, v.window_start, v.window_end) == (day(6), day(5), day(8))
    assert (v.status, v.completed_on) == ("completed_out_of_window", day(4))  # in window for the old day 0 only
    assert visit("RESP_W4", corrected, day(100)).target_date == day(30)
    assert schedule(corrected, PROTOCOL, day(1)) == []  # before the corrected day 0


@pytest.mark.parametrize(("visit_code", "status"), [("PERS_D28", "completed"), (None, "overdue")])
def test_a_persistence_sample_completes_its_visit(visit_code, status):
    sample = PersistenceSampled(visit_code=visit_code, flow_car_pct_of_cd3=5.0), day(27)
    assert visit("PERS_D28", journey(sample), day(60)).status == status
    assert visit("RESP_W4", journey(sample), day(60)).status == "overdue"


def test_a_visit_missed_before_leaving_the_study_stays_overdue():
    j = journey((ConsentWithdrawn(withdrawal_reason="moved"), day(20)))
    statuses = {v.code: v.status for v in schedule(j, PROTOCOL, day(30))}
    assert statuses == {
        "V4": "overdue",
        "PERS_D28": "not_applicable",
        "RESP_W4": "not_applicable",
        "RESP_W12": "not_applicable",
    }


def test_a_visit_missed_before_leaving_is_a_deviation_but_a_missed_survival_contact_is_still_to_do():
    withdrawn = journey((ConsentWithdrawn(withdrawal_reason="moved"), day(20)))
    assert missed(withdrawn, visit("V4", withdrawn, day(30)), day(30))  # overdue, and off study
    assert not missed(withdrawn, visit("V4", withdrawn, day(19)), day(19))  # before leaving: still to do
    shipped = load_protocol()
    completed = journey(w("W12", "NR", day(84)), (StudyCompleted(completed="main_follow_up"), day(88)))
    late = {v.code: v for v in schedule(completed, shipped, day(130))}
    assert late["SURV_W16"].status == "overdue" and not missed(completed, late["SURV_W16"], day(130))
    assert late["D28"].status == "overdue" and missed(completed, late["D28"], day(130))


def test_a_long_term_assessment_completes_its_long_term_visit():
    j = journey(w("W12", "CR", day(84)), w("M6", "CR", day(190)))
    v = visit("LTFU_M6", j, day(200))
    assert (v.status, v.completed_on) == ("completed", day(190))
    assert visit("LTFU_M6", j, day(189)).status == "due"  # as of a date before the assessment


def test_completion_is_as_known_on_the_date():
    j = journey(done("V4", day(4)), w("W4", "NR", day(28)))
    assert (visit("V4", j, day(3)).status, visit("V4", j, day(3)).completed_on) == ("due", None)
    assert visit("RESP_W4", j, day(27)).status == "due"


# --- survival contacts (shipped protocol: SURV_W16, W20, W24 on days 112, 140, 168, +-14 days) -------

SHIPPED = load_protocol()


def contact(on: date, **changes) -> tuple[Payload, date]:
    return SurvivalStatusRecorded(**({"status": "alive", "method": "phone"} | changes)), on


def survival(j: Journey, today: date) -> dict[str, tuple[str, date | None]]:
    return {v.code: (v.status, v.completed_on) for v in schedule(j, SHIPPED, today) if v.kind == "survival"}


def test_survival_contacts_are_due_in_their_windows():
    j = journey(w("W12", "NR", day(84)))
    assert survival(j, day(97)) == {code: ("upcoming", None) for code in ("SURV_W16", "SURV_W20", "SURV_W24")}
    assert survival(j, day(98))["SURV_W16"] == ("due", None)
    assert survival(j, day(127))["SURV_W16"] == ("overdue", None)
    v = next(v for v in schedule(j, SHIPPED, day(98)) if v.code == "SURV_W20")
    assert (v.kind, v.study_day, v.target_date, v.window_start, v.window_end) == (
        "survival",
        140,
        day(140),
        day(126),
        day(154),
    )


def test_a_contact_naming_the_visit_completes_it_in_or_out_of_its_window():
    j = journey(
        w("W12", "NR", day(84)), contact(day(110), visit_code="SURV_W16"), contact(day(160), visit_code="SURV_W20")
    )
    assert survival(j, day(170)) == {
        "SURV_W16": ("completed", day(110)),
        "SURV_W20": ("completed_out_of_window", day(160)),
        "SURV_W24": ("due", None),  # the day-160 contact named W20: it does not complete W24 as well
    }
    assert survival(j, day(109))["SURV_W16"] == ("due", None)  # not yet contacted then


def test_an_alive_contact_inside_the_window_completes_it():
    j = journey(w("W12", "NR", day(84)), contact(day(135), method="visit"))
    assert survival(j, day(200)) == {
        "SURV_W16": ("overdue", None),
        "SURV_W20": ("completed", day(135)),
        "SURV_W24": ("overdue", None),
    }


def test_other_records_do_not_complete_a_survival_contact():
    j = journey(w("W12", "NR", day(84)), (PersistenceSampled(visit_code="PERS_W16", flow_car_pct_of_cd3=1.0), day(112)))
    assert survival(j, day(120))["SURV_W16"] == ("due", None)


def test_survival_contacts_outlast_the_main_follow_up_but_not_death_withdrawal_or_loss():
    nr = w("W12", "NR", day(84))
    completed = journey(nr, (StudyCompleted(completed="main_follow_up"), day(88)))
    assert survival(completed, day(130)) == {
        "SURV_W16": ("overdue", None),
        "SURV_W20": ("due", None),
        "SURV_W24": ("upcoming", None),
    }
    for leaving in (
        SubjectDied(primary_cause="disease_progression"),
        ConsentWithdrawn(withdrawal_reason="moved"),
        LostToFollowUp(last_contact_on=day(110)),
    ):
        left = journey(nr, contact(day(110), visit_code="SURV_W16"), (leaving, day(130)))
        assert survival(left, day(130)) == {
            "SURV_W16": ("completed", day(110)),
            "SURV_W20": ("not_applicable", None),
            "SURV_W24": ("not_applicable", None),
        }, type(leaving).__name__


def test_no_survival_contacts_in_long_term_follow_up_whose_visits_are_unchanged():
    j = journey(w("W12", "CR", day(84)), contact(day(112), visit_code="SURV_W16"))
    visits = {v.code: v.status for v in schedule(j, SHIPPED, day(170))}
    assert not any(code.startswith("SURV_") for code in visits)
    assert (visits["LTFU_M6"], visits["LTFU_M9"], visits["LTFU_M12"]) == ("due", "upcoming", "upcoming")
