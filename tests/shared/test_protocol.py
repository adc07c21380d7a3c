"""The versioned protocol file: the shipped one loads, and a changed file changes the rules."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.enrollment import domain as enrollment
from services.followup import domain as followup
from services.treatment import domain
from shared.contract.envelope import RecordedBy
from shared.contract.events import (
    AgentDose,
    Enrolled,
    LymphodepletionGiven,
    ResponseAssessed,
    UCARTInfused,
)
from shared.errors import InvalidCommand, RuleViolation
from shared.eventstore import EventMeta
from shared.facts import SubjectFacts
from shared.protocol import DEFAULT_PROTOCOL_FILE, Protocol, load_protocol

SHIPPED = load_protocol()
SUBJECT = "UCT-05-001"
LD1 = date(2025, 3, 5)
FLU = LymphodepletionGiven(agents=(AgentDose(agent="fludarabine", dose=30, unit="mg/m2"),))
INFUSION = UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="LOT-1", donor_id="D-1")
FACTS = SubjectFacts(subject_id=SUBJECT, site_id="05", enrolled_on=date(2025, 3, 1))


def amended(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    """A copy of the shipped file with each `old` text replaced once by `new`, in a fresh path."""
    text = DEFAULT_PROTOCOL_FILE.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "amended-protocol.toml"
    path.write_text(text)
    return path


def meta(n: int, protocol: Protocol) -> EventMeta:
    on = LD1 + timedelta(days=n)
    return EventMeta(
        subject_id=SUBJECT,
        occurred_at=datetime(on.year, on.month, on.day, 9, tzinfo=UTC),
        recorded_by=RecordedBy(user_id="inv-1", role="investigator"),
        protocol_version=protocol.version,
    )


def ld_days(n: int, protocol: Protocol) -> domain.TreatmentSubject | None:
    subject = None
    for i in range(n):
        subject = domain.give_lymphodepletion(subject, meta(i, protocol), FLU, FACTS, protocol)
    return subject


def infuse_after(days: int, gap: int, protocol: Protocol) -> domain.TreatmentSubject:
    return domain.infuse(ld_days(days, protocol), meta(days - 1 + gap, protocol), INFUSION, FACTS, protocol)


def test_shipped_protocol_loads_with_the_seed_rules():
    assert isinstance(SHIPPED, Protocol)
    assert load_protocol(DEFAULT_PROTOCOL_FILE) == SHIPPED
    ld = SHIPPED.lymphodepletion
    assert (ld.min_days, ld.max_days) == (3, 5)  # DOMAIN.md: 3 to 5 lymphodepletion days
    assert SHIPPED.dlt.window_days == 28  # DLT window: days 0-28
    assert SHIPPED.infusion.max_infusions == 1
    assert len(SHIPPED.visit_codes) == len(SHIPPED.followup.visits)  # codes are unique
    kinds = {v.code: v.kind for v in SHIPPED.followup.visits}
    # DOMAIN.md: disease assessed at weeks 4, 8, 12 and, in long-term follow-up, months 6, 9, 12
    assert {t: kinds[code] for t, code in SHIPPED.response_visits.items()} == {
        "W4": "response",
        "W8": "response",
        "W12": "response",
        "M6": "ltfu",
        "M9": "ltfu",
        "M12": "ltfu",
    }
    fu = SHIPPED.followup
    assert (fu.main_followup_end_day, fu.long_term_end_day) == (84, 365)  # week 12, month 12
    assert fu.survival_end_day == 168  # week 24: the OS endpoint
    assert SHIPPED.response.pd_min_blast_increase_pct == 25.0  # DOMAIN.md: a rise of at least 25 %


def test_shipped_response_criteria_are_the_b_all_ones():
    r = SHIPPED.response
    assert (r.cr_max_marrow_blasts_pct, r.cr_min_anc_10e9_per_l, r.cr_min_platelets_10e9_per_l) == (5.0, 1.0, 100.0)
    assert (r.mrd_negative_below_pct, r.relapse_min_marrow_blasts_pct) == (0.01, 5.0)


def test_dlt_rules_and_safety_clocks_load():
    # DOMAIN.md: CRS and/or neurotoxicity grade >= 3, days 0-28, attribution at least possible.
    assert [(r.category, r.min_grade, r.min_relatedness) for r in SHIPPED.dlt.rules] == [
        ("CRS", 3, "possible"),
        ("ICANS", 3, "possible"),
    ]
    clocks = SHIPPED.safety_reporting
    assert (clocks.sae_to_sponsor_hours, clocks.fatal_or_life_threatening_susar_days, clocks.other_susar_days) == (
        24,
        7,
        15,
    )


def test_enrolment_rules_load():
    # Children and adults (1 to 75 years at consent, in calendar years), consents from the study start.
    rules = SHIPPED.enrolment
    assert (rules.min_age_years, rules.max_age_years, rules.study_start_date) == (1, 75, date(2024, 1, 1))


def test_min_age_above_max_age_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="min_age_years is greater than max_age_years"):
        load_protocol(amended(tmp_path, ("min_age_years = 1", "min_age_years = 80")))


def test_study_start_comes_from_the_file(tmp_path):
    later = load_protocol(amended(tmp_path, ("study_start_date = 2024-01-01", "study_start_date = 2025-03-01")))
    enrolled = Enrolled(
        site_id="05",
        consent_signed_on=date(2025, 2, 28),
        year_of_birth=1980,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    assert enrollment.enrol(None, meta(0, SHIPPED), enrolled, SHIPPED).status == "enrolled"
    with pytest.raises(InvalidCommand, match="before the study started \\(2025-03-01\\)"):
        enrollment.enrol(None, meta(0, later), enrolled, later)


def test_a_dlt_rule_needs_a_known_relatedness(tmp_path):
    with pytest.raises(ValidationError, match="min_relatedness"):
        load_protocol(
            amended(
                tmp_path,
                (
                    '{ category = "CRS",   min_grade = 3, min_relatedness = "possible" }',
                    '{ category = "CRS",   min_grade = 3, min_relatedness = "maybe" }',
                ),
            )
        )


def test_a_new_version_is_reported(tmp_path):
    protocol = load_protocol(amended(tmp_path, ('version = "1.4"', 'version = "1.5"')))
    assert protocol.version == SHIPPED.version.replace("@1.4", "@1.5")


def test_each_listed_site_has_its_time_zone_and_any_other_site_counts_in_utc():
    assert SHIPPED.zone("01") == ZoneInfo("Europe/Paris")
    assert SHIPPED.zone("02") == ZoneInfo("Asia/Shanghai")
    assert SHIPPED.zone("77") is UTC and SHIPPED.zone(None) is UTC


def test_a_site_zone_must_be_an_iana_name(tmp_path):
    for wrong in ("Europe/Pariss", "UTC+1", "../../etc/passwd"):
        with pytest.raises(ValidationError, match="is not an IANA time zone"):
            load_protocol(amended(tmp_path, ('time_zone = "Europe/Paris"', f'time_zone = "{wrong}"')))


def test_a_protocol_without_sites_counts_every_site_in_utc(tmp_path):
    text = DEFAULT_PROTOCOL_FILE.read_text()
    start, end = text.index("\n[sites]"), text.index("\n[lymphodepletion]")
    (tmp_path / "no-sites.toml").write_text(text[:start] + text[end:])
    protocol = load_protocol(tmp_path / "no-sites.toml")
    assert protocol.sites == {} and protocol.zone("01") is UTC


def test_max_days_4_refuses_a_fifth_day_the_shipped_protocol_allows(tmp_path):
    four = load_protocol(amended(tmp_path, ("max_days = 5", "max_days = 4")))
    assert len(ld_days(5, SHIPPED).ld_days) == 5
    with pytest.raises(RuleViolation, match="already has 4 lymphodepletion days; the protocol allows at most 4"):
        domain.give_lymphodepletion(ld_days(4, four), meta(4, four), FLU, FACTS, four)


def test_min_days_4_refuses_infusion_after_three_days(tmp_path):
    four = load_protocol(amended(tmp_path, ("min_days = 3", "min_days = 4")))
    assert len(infuse_after(3, 2, SHIPPED).infusions) == 1
    with pytest.raises(RuleViolation, match="infusion needs at least 4 first"):
        infuse_after(3, 2, four)
    assert len(infuse_after(4, 2, four).infusions) == 1


def test_gap_window_comes_from_the_file(tmp_path):
    tight = load_protocol(
        amended(
            tmp_path,
            ("min_gap_days_to_infusion = 1", "min_gap_days_to_infusion = 0"),
            ("max_gap_days_to_infusion = 7", "max_gap_days_to_infusion = 2"),
        )
    )
    assert len(infuse_after(3, 3, SHIPPED).infusions) == 1
    with pytest.raises(RuleViolation, match=r"is 3 day\(s\) after .* requires 0 to 2 days"):
        infuse_after(3, 3, tight)
    assert len(infuse_after(3, 0, tight).infusions) == 1  # same day as the last LD day, now allowed
    with pytest.raises(RuleViolation, match="is 0 day\\(s\\)"):
        infuse_after(3, 0, SHIPPED)


def test_a_second_infusion_when_the_protocol_allows_it(tmp_path):
    two = load_protocol(amended(tmp_path, ("max_infusions = 1", "max_infusions = 2")))
    subject = domain.infuse(infuse_after(3, 1, two), meta(4, two), INFUSION, FACTS, two)
    assert len(subject.infusions) == 2
    with pytest.raises(RuleViolation, match="allows 2 infusion"):
        domain.infuse(subject, meta(5, two), INFUSION, FACTS, two)


def test_min_days_above_max_days_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="min_days is greater than max_days"):
        load_protocol(amended(tmp_path, ("min_days = 3", "min_days = 6")))


def test_response_visit_missing_from_the_schedule_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="response_visits name visits not in the schedule: \\['RESP_W16'\\]"):
        load_protocol(amended(tmp_path, ('W12 = "RESP_W12"', 'W12 = "RESP_W16"')))


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="max_dayz"):
        load_protocol(amended(tmp_path, ("max_days = 5", "max_days = 5\nmax_dayz = 6")))


def assess(response: ResponseAssessed, protocol: Protocol) -> followup.FollowupSubject:
    infused = SubjectFacts(
        subject_id=SUBJECT, site_id="05", enrolled_on=date(2025, 3, 1), infused_at=datetime(2025, 3, 10, 10, tzinfo=UTC)
    )
    return followup.assess_response(None, meta(40, protocol), response, infused, protocol)


def test_response_thresholds_come_from_the_file(tmp_path):
    stricter = load_protocol(
        amended(tmp_path, ("cr_min_platelets_10e9_per_l = 100.0", "cr_min_platelets_10e9_per_l = 150.0"))
    )
    counts = dict(timepoint="W4", marrow_blasts_pct=1.0, anc_10e9_per_l=1.5, platelets_10e9_per_l=120)
    assert assess(ResponseAssessed(response="CR", **counts), SHIPPED)
    with pytest.raises(InvalidCommand, match=r"platelets below the CR thresholds .*platelets >= 150\.0.*this is a CRi"):
        assess(ResponseAssessed(response="CR", **counts), stricter)
    assert assess(ResponseAssessed(response="CRi", **counts), stricter)
    with pytest.raises(InvalidCommand, match="this is a CR"):
        assess(ResponseAssessed(response="CRi", **counts), SHIPPED)


def test_blast_threshold_comes_from_the_file(tmp_path):
    ten = load_protocol(amended(tmp_path, ("cr_max_marrow_blasts_pct = 5.0", "cr_max_marrow_blasts_pct = 10.0")))
    seven_pct = ResponseAssessed(timepoint="W4", response="CR", marrow_blasts_pct=7.0)
    with pytest.raises(InvalidCommand, match=r"marrow blasts must be < 5\.0%"):
        assess(seven_pct, SHIPPED)
    assert assess(seven_pct, ten).in_remission
