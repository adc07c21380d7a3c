"""Payload models: one frozen pydantic model per (event type, schema version).

These classes are the single definition used by the HTTP APIs (request bodies), the event stores
(stored as the model's JSON) and the consumers (validated again on receipt). Clinical time lives in
the envelope's ``occurred_at``; payloads hold the clinical facts.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID, uuid4

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from shared import clinical
from shared.clinical import AECategory, Relatedness, ResponseCode, Timepoint
from shared.contract.findings import CRSFindings, GvHDStaging, ICANSFindings
from shared.contract.strict import ContractModel, IsoAwareDatetime, IsoDate
from shared.contract.topics import Source


class Payload(ContractModel):
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    source: ClassVar[Source]

    def is_clinical_record(self) -> bool:
        """A dated record of the subject (contact: the subject was alive and on study that day), as opposed
        to a record about the data (a query, a report, a rule's bookkeeping)."""
        return not clinical.administrative(self.event_type)


# --- enrollment ---------------------------------------------------------------------------------


class Enrolled(Payload):
    """The subject signed consent, met eligibility and was enrolled (occurred_at = enrolment)."""

    event_type: ClassVar[str] = "Enrolled"
    source: ClassVar[Source] = "enrollment"

    site_id: str = Field(pattern=r"^[A-Z0-9]{2,8}$", description="Study site code, e.g. 01.")
    consent_signed_on: IsoDate
    year_of_birth: StrictInt = Field(ge=1900, le=2100)
    sex: Literal["F", "M", "U"]
    disease_status: Literal["relapsed", "refractory"]
    cd19_positive: StrictBool = Field(description="CD19 expression on blasts confirmed at screening.")


class ScreenFailed(Payload):
    """The subject was screened but not enrolled. The subject code is used up."""

    event_type: ClassVar[str] = "ScreenFailed"
    source: ClassVar[Source] = "enrollment"
    free_text: ClassVar[frozenset[str]] = frozenset({"failure_reason"})

    site_id: str = Field(pattern=r"^[A-Z0-9]{2,8}$")
    failure_reason: str = Field(min_length=3, max_length=500)


class ConsentWithdrawn(Payload):
    """The subject withdrew consent: no further treatment or visits."""

    event_type: ClassVar[str] = "ConsentWithdrawn"
    source: ClassVar[Source] = "enrollment"
    free_text: ClassVar[frozenset[str]] = frozenset({"withdrawal_reason"})

    withdrawal_reason: str = Field(min_length=3, max_length=500)


# --- treatment ----------------------------------------------------------------------------------


class AgentDose(ContractModel):
    agent: Literal["fludarabine", "cyclophosphamide", "alemtuzumab"]
    dose: StrictFloat = Field(gt=0, le=10_000)
    unit: Literal["mg/m2", "mg/kg", "mg"]


class LymphodepletionGiven(Payload):
    """One day of lymphodepleting chemotherapy (occurred_at = that day)."""

    event_type: ClassVar[str] = "LymphodepletionGiven"
    source: ClassVar[Source] = "treatment"

    agents: tuple[AgentDose, ...] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _one_dose_per_agent(self) -> LymphodepletionGiven:
        names = [a.agent for a in self.agents]
        if len(names) != len(set(names)):
            raise ValueError("each agent may appear once per day; record the day's total dose")
        return self


class UCARTInfused(Payload):
    """The UCAR-T infusion: study day 0 (occurred_at = infusion time)."""

    event_type: ClassVar[str] = "UCARTInfused"
    source: ClassVar[Source] = "treatment"

    dose_cells_per_kg: StrictFloat = Field(gt=0, le=1e9, description="Viable CAR+ cells per kg, e.g. 1e7.")
    dose_level: StrictInt = Field(ge=1, le=10)
    product_lot: str = Field(min_length=1, max_length=64)
    donor_id: str = Field(min_length=1, max_length=64)


class InfusionCorrected(Payload):
    """A correction of the infusion record (the envelope's reason says why; occurred_at = the
    corrected infusion time). Study day 0, and so the schedule, move with it."""

    event_type: ClassVar[str] = "InfusionCorrected"
    source: ClassVar[Source] = "treatment"

    dose_cells_per_kg: StrictFloat = Field(gt=0, le=1e9)
    dose_level: StrictInt = Field(ge=1, le=10)
    product_lot: str = Field(min_length=1, max_length=64)
    donor_id: str = Field(min_length=1, max_length=64)


# --- follow-up ----------------------------------------------------------------------------------


SeriousnessCriterion = Literal[
    "death",
    "life_threatening",
    "hospitalisation",
    "disability",
    "congenital_anomaly",
    "important_medical_event",
    "not_specified",  # only on events recorded with schema v1, before the criteria were captured
]


class AEFields(ContractModel):
    """What the investigator records of an adverse event (reported, or corrected)."""

    term: str = Field(min_length=2, max_length=200)
    category: AECategory
    grade: StrictInt = Field(ge=1, le=5, description="The investigator's CTCAE v5 / ASTCT grade, 1 to 5 (death).")
    serious: StrictBool = Field(description="ICH E2A seriousness, independent of the grade.")
    seriousness_criteria: tuple[SeriousnessCriterion, ...] = Field(
        default=(), description="Why it is serious (ICH E2A); required when serious."
    )
    relatedness: Relatedness = Field(description="To the UCAR-T product; possible and above = suspected.")
    expected: StrictBool | None = Field(
        default=None, description="Listed in the investigator's brochure; None until assessed."
    )
    aware_at: IsoAwareDatetime = Field(description="When the site became aware of the AE (starts the SAE clock).")
    crs: CRSFindings | None = Field(default=None, description="Findings for a CRS (grade derived by ASTCT).")
    icans: ICANSFindings | None = Field(default=None, description="Findings for ICANS (grade derived by ASTCT).")
    gvhd: GvHDStaging | None = Field(default=None, description="Organ staging for GvHD (MAGIC).")

    @model_validator(mode="after")
    def _consistent(self) -> AEFields:
        if self.serious != bool(self.seriousness_criteria):
            raise ValueError("a serious AE needs seriousness_criteria, and only a serious one has them")
        if "death" in self.seriousness_criteria and self.grade != 5:
            raise ValueError("seriousness criterion 'death' goes with grade 5")
        wrong = [
            name
            for name, category in (("crs", "CRS"), ("icans", "ICANS"), ("gvhd", "GVHD"))
            if getattr(self, name) is not None and self.category != category
        ]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} findings belong to an AE of that category, not {self.category}")
        return self

    @property
    def suspected(self) -> bool:
        return clinical.suspected(self.relatedness)


class AEReported(AEFields, Payload):
    """An adverse event (occurred_at = onset, from enrolment on; the grade is the one at onset). Severity
    (grade) and seriousness are separate. Treatment-emergent when the onset is on or after the first
    lymphodepletion day (derived, not sent)."""

    event_type: ClassVar[str] = "AEReported"
    schema_version: ClassVar[int] = 3
    source: ClassVar[Source] = "followup"

    ae_id: UUID = Field(default_factory=uuid4, description="Identifies the AE for later updates.")


class AEUpdated(Payload):
    """The course of an AE changed (occurred_at = when): a new grade, or its outcome."""

    event_type: ClassVar[str] = "AEUpdated"
    source: ClassVar[Source] = "followup"

    ae_id: UUID
    grade: StrictInt | None = Field(default=None, ge=1, le=5, description="The grade from now on.")
    outcome: Literal["recovering", "recovered", "recovered_with_sequelae", "not_recovered", "fatal"] | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> AEUpdated:
        if self.grade is None and self.outcome is None:
            raise ValueError("give the new grade, the outcome, or both")
        if self.outcome == "fatal" and self.grade not in (None, 5):
            raise ValueError("a fatal outcome goes with grade 5")
        return self


class AECorrected(AEFields, Payload):
    """A correction of what was reported for an AE (the envelope's reason says why). The earlier
    report stays in the history; this one replaces it from now on."""

    event_type: ClassVar[str] = "AECorrected"
    schema_version: ClassVar[int] = 2
    source: ClassVar[Source] = "followup"

    ae_id: UUID


class DataQueryOpened(Payload):
    """A data query: recorded values disagree (e.g. the investigator's grade and the derived one).
    Neither value is changed; the site answers and a monitor or data manager closes it."""

    event_type: ClassVar[str] = "DataQueryOpened"
    source: ClassVar[Source] = "followup"
    free_text: ClassVar[frozenset[str]] = frozenset({"text"})

    query_id: UUID = Field(default_factory=uuid4)
    ae_id: UUID | None = None
    field: str = Field(max_length=100)
    recorded_value: str = Field(max_length=200)
    expected_value: str = Field(max_length=200)
    text: str = Field(max_length=1000)


class DataQueryUpdated(Payload):
    """An open data query restated: a correction changed the values but they still disagree. The query
    stays the same one (one open query per AE and field); it needs an answer again."""

    event_type: ClassVar[str] = "DataQueryUpdated"
    source: ClassVar[Source] = "followup"
    free_text: ClassVar[frozenset[str]] = frozenset({"text"})

    query_id: UUID
    recorded_value: str = Field(max_length=200)
    expected_value: str = Field(max_length=200)
    text: str = Field(max_length=1000)


class DataQueryAnswered(Payload):
    event_type: ClassVar[str] = "DataQueryAnswered"
    source: ClassVar[Source] = "followup"
    free_text: ClassVar[frozenset[str]] = frozenset({"answer"})

    query_id: UUID
    answer: str = Field(min_length=2, max_length=1000)


class DataQueryClosed(Payload):
    event_type: ClassVar[str] = "DataQueryClosed"
    source: ClassVar[Source] = "followup"
    free_text: ClassVar[frozenset[str]] = frozenset({"resolution"})

    query_id: UUID
    resolution: str = Field(min_length=2, max_length=1000)


class SafetyReportSubmitted(Payload):
    """An expedited report was sent: an SAE to the sponsor, or a SUSAR to the regulator."""

    event_type: ClassVar[str] = "SafetyReportSubmitted"
    source: ClassVar[Source] = "followup"

    ae_id: UUID
    report: Literal["sae_to_sponsor", "susar_to_regulator"]
    received_at: IsoAwareDatetime = Field(
        description="When the recipient received it (sponsor receipt starts the SUSAR clock)."
    )


class ResponseAssessed(Payload):
    """A B-ALL response assessment (occurred_at = sample time): weeks 4, 8 and 12, months 6, 9 and 12
    in long-term follow-up, or unscheduled. The response criteria (blast and count thresholds, the
    rise that makes progressive disease) are checked against the protocol file."""

    event_type: ClassVar[str] = "ResponseAssessed"
    schema_version: ClassVar[int] = 3
    source: ClassVar[Source] = "followup"

    timepoint: Timepoint
    response: ResponseCode = Field(
        description="CR, CRi, NR (no response), RELAPSE (after a CR/CRi) or PD (progression, never in remission)."
    )
    marrow_blasts_pct: StrictFloat = Field(ge=0, le=100)
    circulating_blasts: StrictBool | None = None
    circulating_blasts_pct: StrictFloat | None = Field(
        default=None, ge=0, le=100, description="Blasts in peripheral blood, % (for progressive disease)."
    )
    extramedullary_disease: StrictBool | None = None
    anc_10e9_per_l: StrictFloat | None = Field(default=None, ge=0, le=500, description="Absolute neutrophil count.")
    platelets_10e9_per_l: StrictFloat | None = Field(default=None, ge=0, le=5000)
    mrd_pct: StrictFloat | None = Field(default=None, ge=0, le=100, description="Measurable residual disease, %.")
    mrd_assay: Literal["flow", "qpcr", "ngs"] | None = None
    mrd_sensitivity_pct: StrictFloat | None = Field(default=None, gt=0, le=100, description="Assay sensitivity, %.")
    mrd_negative: StrictBool | None = Field(
        default=None, description="Below the protocol's MRD threshold; derived from mrd_pct when that is given."
    )
    cd19_status: Literal["CD19+", "CD19-", "lineage_switch"] | None = Field(
        default=None, description="Blast CD19 status, for a relapse."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ResponseAssessed:
        if self.cd19_status is not None and self.response != "RELAPSE":
            raise ValueError("cd19_status is recorded only for a RELAPSE")
        if self.mrd_pct is not None and self.mrd_assay is None:
            raise ValueError("give mrd_assay (flow, qpcr or ngs) with mrd_pct")
        if self.circulating_blasts_pct and self.circulating_blasts is False:
            raise ValueError("circulating_blasts_pct is above 0 but circulating_blasts is false")
        return self


class PersistenceSampled(Payload):
    """CAR-T persistence in blood (occurred_at = sample time): qPCR and/or flow cytometry."""

    event_type: ClassVar[str] = "PersistenceSampled"
    source: ClassVar[Source] = "followup"

    visit_code: str | None = Field(
        default=None,
        pattern=r"^PERS_[A-Z0-9]{2,8}$",
        description="The persistence visit this sample completes, if any.",
    )
    qpcr_copies_per_ug_dna: StrictFloat | None = Field(default=None, ge=0)
    flow_car_pct_of_cd3: StrictFloat | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _has_a_result(self) -> PersistenceSampled:
        if self.qpcr_copies_per_ug_dna is None and self.flow_car_pct_of_cd3 is None:
            raise ValueError("give qpcr_copies_per_ug_dna, flow_car_pct_of_cd3, or both")
        return self


class SubsequentTherapyStarted(Payload):
    """A new anti-leukaemia therapy after UCAR-T (occurred_at = start), e.g. allo-HSCT."""

    event_type: ClassVar[str] = "SubsequentTherapyStarted"
    source: ClassVar[Source] = "followup"
    free_text: ClassVar[frozenset[str]] = frozenset({"details"})

    therapy: Literal["allo_hsct", "chemotherapy", "blinatumomab", "inotuzumab", "car_t", "other"]
    details: str | None = Field(default=None, max_length=500)


class LongTermFollowUpStarted(Payload):
    """The subject was in remission at week 12 and continues to month 12 (recorded automatically
    with the week-12 response)."""

    event_type: ClassVar[str] = "LongTermFollowUpStarted"
    source: ClassVar[Source] = "followup"

    week12_response: Literal["CR", "CRi"]


class LostToFollowUp(Payload):
    """The site can no longer reach the subject (occurred_at = when declared)."""

    event_type: ClassVar[str] = "LostToFollowUp"
    source: ClassVar[Source] = "followup"
    free_text: ClassVar[frozenset[str]] = frozenset({"details"})

    last_contact_on: IsoDate
    details: str | None = Field(default=None, max_length=500)


class SurvivalStatusRecorded(Payload):
    """A survival-status contact (occurred_at = the contact): the subject was alive that day, or the site
    learned of the death. Not a visit: a phone call is enough. Collected to week 24 for every infused
    subject and to month 12 in long-term follow-up, also after the main follow-up ended."""

    event_type: ClassVar[str] = "SurvivalStatusRecorded"
    source: ClassVar[Source] = "followup"
    free_text: ClassVar[frozenset[str]] = frozenset({"details"})

    status: Literal["alive", "dead"]
    method: Literal["phone", "visit", "medical_records", "other"]
    visit_code: str | None = Field(
        default=None, pattern=r"^SURV_[A-Z0-9]{2,8}$", description="The planned survival contact this completes."
    )
    died_on: IsoDate | None = Field(default=None, description="For the news of a death: the date of death.")
    primary_cause: Literal["disease_progression", "adverse_event", "other", "unknown"] | None = Field(
        default=None, description="For the news of a death: its primary cause."
    )
    details: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _death_news(self) -> SurvivalStatusRecorded:
        if (self.status == "dead") != (self.died_on is not None and self.primary_cause is not None):
            raise ValueError("the news of a death gives died_on and primary_cause, and only that news does")
        if self.status == "dead" and self.visit_code is not None:
            raise ValueError("a planned survival contact (visit_code) is completed by a subject seen alive")
        return self

    def is_clinical_record(self) -> bool:
        return self.status == "alive"  # the news of a death is not contact with the subject


class StudyCompleted(Payload):
    """The subject finished the study as planned (occurred_at = last visit)."""

    event_type: ClassVar[str] = "StudyCompleted"
    source: ClassVar[Source] = "followup"

    completed: Literal["main_follow_up", "long_term_follow_up"]


class VisitCompleted(Payload):
    """A planned visit of the schedule took place (occurred_at = visit date)."""

    event_type: ClassVar[str] = "VisitCompleted"
    source: ClassVar[Source] = "followup"

    visit_code: str = Field(pattern=r"^[A-Z0-9_]{2,16}$", description="A code of the protocol schedule.")


class SubjectDied(Payload):
    """Death from any cause (occurred_at = date of death)."""

    event_type: ClassVar[str] = "SubjectDied"
    source: ClassVar[Source] = "followup"
    free_text: ClassVar[frozenset[str]] = frozenset({"details"})

    primary_cause: Literal["disease_progression", "adverse_event", "other", "unknown"]
    details: str | None = Field(default=None, max_length=500)
