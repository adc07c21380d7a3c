"""Treatment rules: lymphodepletion days, the UCAR-T infusion and its correction (shipped protocol: 3-5 LD
days, infusion 1-7 days after the last one, one infusion)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from services.treatment import domain
from shared.contract.envelope import RecordedBy
from shared.contract.events import (
    AgentDose,
    InfusionCorrected,
    LymphodepletionGiven,
    UCARTInfused,
)
from shared.errors import InvalidCommand, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta
from shared.facts import SubjectFacts
from shared.protocol import load_protocol

PROTOCOL = load_protocol()
SUBJECT = "UCT-01-002"
ENROLLED_ON = date(2025, 3, 3)
LD1 = date(2025, 3, 5)
FLU_CY = LymphodepletionGiven(
    agents=(
        AgentDose(agent="fludarabine", dose=30, unit="mg/m2"),
        AgentDose(agent="cyclophosphamide", dose=500, unit="mg/m2"),
    )
)
INFUSION = UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="LOT-1", donor_id="D-1")


CORRECTED = InfusionCorrected(dose_cells_per_kg=2e7, dose_level=2, product_lot="LOT-2", donor_id="D-1")


def meta(on: date, reason: str | None = None) -> EventMeta:
    return EventMeta(
        subject_id=SUBJECT,
        occurred_at=datetime(on.year, on.month, on.day, 9, tzinfo=UTC),
        recorded_by=RecordedBy(user_id="nurse-1", role="investigator"),
        protocol_version=PROTOCOL.version,
        reason=reason,
    )


def facts(**changes) -> SubjectFacts:
    return SubjectFacts(**({"subject_id": SUBJECT, "site_id": "01", "enrolled_on": ENROLLED_ON} | changes))


def day(n: int) -> date:
    return LD1 + timedelta(days=n)


def with_ld_days(n: int) -> domain.TreatmentSubject | None:
    subject = None
    for i in range(n):
        subject = domain.give_lymphodepletion(subject, meta(day(i)), FLU_CY, facts(), PROTOCOL)
    return subject


def infused(ld_days: int = 3, gap: int = 2) -> domain.TreatmentSubject:
    return domain.infuse(with_ld_days(ld_days), meta(day(ld_days - 1 + gap)), INFUSION, facts(), PROTOCOL)


# --- lymphodepletion ----------------------------------------------------------------------------


def test_first_ld_day_opens_the_stream_and_days_accumulate():
    subject = with_ld_days(3)
    assert subject.ld_days == [day(0), day(1), day(2)]
    assert [e.payload for e in subject.collect_events()] == [FLU_CY] * 3


def test_up_to_five_ld_days_then_refused():
    subject = with_ld_days(5)
    with pytest.raises(RuleViolation, match=r"already has 5 lymphodepletion days.*at most 5"):
        domain.give_lymphodepletion(subject, meta(day(5)), FLU_CY, facts(), PROTOCOL)
    assert len(subject.ld_days) == 5


def test_same_day_twice_is_refused():
    with pytest.raises(RuleViolation, match=f"on {day(1)} is already recorded"):
        domain.give_lymphodepletion(with_ld_days(2), meta(day(1)), FLU_CY, facts(), PROTOCOL)


def test_days_are_recorded_in_order():
    subject = domain.give_lymphodepletion(None, meta(day(2)), FLU_CY, facts(), PROTOCOL)
    with pytest.raises(RuleViolation, match=f"{day(1)} is before the last recorded day \\({day(2)}\\)"):
        domain.give_lymphodepletion(subject, meta(day(1)), FLU_CY, facts(), PROTOCOL)


def test_ld_before_enrolment_is_refused():
    with pytest.raises(RuleViolation, match="before enrolment"):
        domain.give_lymphodepletion(None, meta(ENROLLED_ON - timedelta(days=1)), FLU_CY, facts(), PROTOCOL)
    assert domain.give_lymphodepletion(None, meta(ENROLLED_ON), FLU_CY, facts(), PROTOCOL).ld_days == [ENROLLED_ON]


def test_ld_after_infusion_is_refused():
    with pytest.raises(RuleViolation, match=r"was infused on .*lymphodepletion comes before"):
        domain.give_lymphodepletion(infused(), meta(day(10)), FLU_CY, facts(), PROTOCOL)


# --- infusion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ld_days", [0, 1, 2])
def test_infusion_needs_at_least_three_ld_days(ld_days):
    with pytest.raises(RuleViolation, match=f"has {ld_days} lymphodepletion day\\(s\\).*at least 3"):
        domain.infuse(with_ld_days(ld_days), meta(day(4)), INFUSION, facts(), PROTOCOL)


@pytest.mark.parametrize("ld_days", [3, 5])
def test_infusion_after_enough_ld_days(ld_days):
    subject = infused(ld_days=ld_days)
    assert subject.infusions == [meta(day(ld_days + 1)).occurred_at]


@pytest.mark.parametrize("gap", [1, 7])
def test_infusion_gap_bounds_are_inclusive(gap):
    assert len(infused(gap=gap).infusions) == 1


@pytest.mark.parametrize("gap", [0, 8])
def test_infusion_outside_the_gap_window_is_refused(gap):
    with pytest.raises(RuleViolation, match=f"is {gap} day\\(s\\) after the last lymphodepletion day.*1 to 7 days"):
        infused(gap=gap)


def test_only_one_infusion():
    with pytest.raises(RuleViolation, match=r"already infused.*allows 1 infusion"):
        domain.infuse(infused(), meta(day(4)), INFUSION, facts(), PROTOCOL)


# --- infusion correction -----------------------------------------------------------------------


def correct(subject: domain.TreatmentSubject | None, on: date, reason: str | None = "Wrong date entered"):
    return domain.correct_infusion(subject, meta(on, reason), CORRECTED, facts(), PROTOCOL)


def test_a_correction_moves_the_infusion_and_is_recorded_with_its_reason():
    subject = infused()  # LD days 0-2, infused on day 4
    subject.collect_events()
    subject = correct(subject, day(5))
    assert subject.infusions == [meta(day(5)).occurred_at]
    [event] = subject.collect_events()
    assert (event.payload, event.meta.reason) == (CORRECTED, "Wrong date entered")


def test_only_a_recorded_infusion_can_be_corrected():
    with pytest.raises(RuleViolation, match="has no infusion to correct; record the infusion instead"):
        correct(None, day(4))
    with pytest.raises(RuleViolation, match="has no infusion to correct"):
        correct(with_ld_days(3), day(4))


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_correction_needs_a_reason(reason):
    with pytest.raises(InvalidCommand, match="needs a reason"):
        correct(infused(), day(4), reason)


@pytest.mark.parametrize(("corrected_day", "allowed"), [(2, False), (3, True), (9, True), (10, False)])
def test_the_gap_rule_applies_to_the_corrected_date(corrected_day, allowed):
    # last LD day is day 2: the corrected infusion must fall 1 to 7 days later, days 3 to 9
    if allowed:
        assert correct(infused(), day(corrected_day)).infusions == [meta(day(corrected_day)).occurred_at]
    else:
        with pytest.raises(RuleViolation, match=f"is {corrected_day - 2} day\\(s\\) after the last lymphodepletion"):
            correct(infused(), day(corrected_day))


def test_a_corrected_infusion_still_counts_as_the_one_infusion():
    subject = correct(infused(), day(6))
    with pytest.raises(RuleViolation, match=f"already infused on {day(6)}"):
        domain.infuse(subject, meta(day(7)), INFUSION, facts(), PROTOCOL)


# --- who may be treated -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ld", "infuse"])
@pytest.mark.parametrize("known", [None, SubjectFacts(subject_id=SUBJECT, site_id="01")])
def test_not_yet_known_enrolment_is_retryable(command, known):
    with pytest.raises(SubjectNotFound, match=f"no enrolment for {SUBJECT}.*retry") as refused:
        if command == "ld":
            domain.give_lymphodepletion(None, meta(day(0)), FLU_CY, known, PROTOCOL)
        else:
            domain.infuse(with_ld_days(3), meta(day(3)), INFUSION, known, PROTOCOL)
    assert refused.value.retryable is True


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"enrolled_on": None, "screen_failed": True}, "failed screening"),
        ({"withdrawn_on": date(2025, 3, 4)}, "withdrew consent on 2025-03-04"),
        ({"died_on": date(2025, 3, 4)}, "died on 2025-03-04"),
    ],
)
@pytest.mark.parametrize("command", ["ld", "infuse"])
def test_off_study_subjects_are_not_treated(state, message, command):
    with pytest.raises(RuleViolation, match=message) as refused:
        if command == "ld":
            domain.give_lymphodepletion(None, meta(day(0)), FLU_CY, facts(**state), PROTOCOL)
        else:
            domain.infuse(with_ld_days(3), meta(day(3)), INFUSION, facts(**state), PROTOCOL)
    assert refused.value.retryable is False


@pytest.mark.parametrize("exit_field", ["withdrawn_on", "died_on"])
def test_an_infusion_given_before_leaving_the_study_may_be_entered_late(exit_field):
    infusion_day = day(4)
    subject = domain.infuse(
        with_ld_days(3), meta(infusion_day), INFUSION, facts(**{exit_field: infusion_day}), PROTOCOL
    )
    assert subject.infusions == [meta(infusion_day).occurred_at]
    with pytest.raises(RuleViolation, match="no further treatment"):
        domain.infuse(with_ld_days(3), meta(day(5)), INFUSION, facts(**{exit_field: infusion_day}), PROTOCOL)


@pytest.mark.parametrize("exit_field", ["withdrawn_on", "died_on"])
def test_a_dose_given_before_leaving_the_study_may_be_entered_late(exit_field):
    subject = domain.give_lymphodepletion(None, meta(day(0)), FLU_CY, facts(**{exit_field: day(0)}), PROTOCOL)
    assert subject.ld_days == [day(0)]
    with pytest.raises(RuleViolation, match="no further treatment"):
        domain.give_lymphodepletion(subject, meta(day(1)), FLU_CY, facts(**{exit_field: day(0)}), PROTOCOL)
