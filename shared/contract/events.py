"""Payload models: one frozen pydantic model per (event type, schema version).

These classes are the single definition used by the HTTP APIs (request bodies), the event stores
(stored as the model's JSON) and the consumers (validated again on receipt). Clinical time lives in
the envelope's ``occurred_at``; payloads hold the clinical facts.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contract.envelope import Source


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    source: ClassVar[Source]


# --- enrollment ---------------------------------------------------------------------------------


class Enrolled(Payload):
    """The subject signed consent, met eligibility and was enrolled (occurred_at = enrolment)."""

    event_type: ClassVar[str] = "Enrolled"
    source: ClassVar[Source] = "enrollment"

    site_id: str = Field(pattern=r"^[A-Z0-9]{2,8}$", description="Study site code, e.g. 01.")
    consent_signed_on: date
    year_of_birth: int = Field(ge=1900, le=2100)
    sex: Literal["F", "M", "U"]
    disease_status: Literal["relapsed", "refractory"]
    cd19_positive: bool = Field(description="CD19 expression on blasts confirmed at screening.")


class ScreenFailed(Payload):
    """The subject was screened but not enrolled. The subject code is used up."""

    event_type: ClassVar[str] = "ScreenFailed"
    source: ClassVar[Source] = "enrollment"

    site_id: str = Field(pattern=r"^[A-Z0-9]{2,8}$")
    failure_reason: str = Field(min_length=3, max_length=500)


class ConsentWithdrawn(Payload):
    """The subject withdrew consent: no further treatment or visits."""

    event_type: ClassVar[str] = "ConsentWithdrawn"
    source: ClassVar[Source] = "enrollment"

    withdrawal_reason: str = Field(min_length=3, max_length=500)


# --- treatment ----------------------------------------------------------------------------------


class AgentDose(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: Literal["fludarabine", "cyclophosphamide", "alemtuzumab"]
    dose: float = Field(gt=0, le=10_000)
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

    dose_cells_per_kg: float = Field(gt=0, le=1e9, description="Viable CAR+ cells per kg, e.g. 1e7.")
    dose_level: int = Field(ge=1, le=10)
    product_lot: str = Field(min_length=1, max_length=64)
    donor_id: str = Field(min_length=1, max_length=64)


# --- follow-up ----------------------------------------------------------------------------------


class AEReported(Payload):
    """An adverse event (occurred_at = onset). Severity (CTCAE grade) and seriousness are separate."""

    event_type: ClassVar[str] = "AEReported"
    source: ClassVar[Source] = "followup"

    ae_id: UUID = Field(default_factory=uuid4, description="Identifies the AE for later updates.")
    term: str = Field(min_length=2, max_length=200)
    category: Literal["CRS", "ICANS", "GVHD", "INFECTION", "CYTOPENIA", "OTHER"]
    grade: int = Field(ge=1, le=5, description="CTCAE v5 / ASTCT grade, 1 (mild) to 5 (death).")
    serious: bool = Field(description="ICH E2A seriousness, independent of the grade.")
    relatedness: Literal["unrelated", "unlikely", "possible", "probable", "definite"]


class ResponseAssessed(Payload):
    """A B-ALL response assessment (occurred_at = marrow/blood sample time)."""

    event_type: ClassVar[str] = "ResponseAssessed"
    source: ClassVar[Source] = "followup"

    timepoint: Literal["W4", "W8", "W12", "UNSCHEDULED"]
    response: Literal["CR", "CRi", "NR", "RELAPSE"]
    marrow_blasts_pct: float = Field(ge=0, le=100)
    mrd_negative: bool | None = Field(default=None, description="Flow MRD < 0.01%, if measured.")
    cd19_status: Literal["CD19+", "CD19-", "lineage_switch"] | None = Field(
        default=None, description="Blast CD19 status, for a relapse."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ResponseAssessed:
        if self.response in ("CR", "CRi") and self.marrow_blasts_pct >= 5:
            raise ValueError(f"{self.response} needs marrow blasts < 5% (got {self.marrow_blasts_pct}%)")
        if self.cd19_status is not None and self.response != "RELAPSE":
            raise ValueError("cd19_status is recorded only for a RELAPSE")
        return self


class VisitCompleted(Payload):
    """A planned visit of the schedule took place (occurred_at = visit date)."""

    event_type: ClassVar[str] = "VisitCompleted"
    source: ClassVar[Source] = "followup"

    visit_code: str = Field(pattern=r"^[A-Z0-9_]{2,16}$", description="A code of the protocol schedule.")


class SubjectDied(Payload):
    """Death from any cause (occurred_at = date of death)."""

    event_type: ClassVar[str] = "SubjectDied"
    source: ClassVar[Source] = "followup"

    primary_cause: Literal["disease_progression", "adverse_event", "other", "unknown"]
    details: str | None = Field(default=None, max_length=500)


ALL: tuple[type[Payload], ...] = (
    Enrolled,
    ScreenFailed,
    ConsentWithdrawn,
    LymphodepletionGiven,
    UCARTInfused,
    AEReported,
    ResponseAssessed,
    VisitCompleted,
    SubjectDied,
)

PAYLOADS: dict[tuple[str, int], type[Payload]] = {(p.event_type, p.schema_version): p for p in ALL}


class UnknownEventType(LookupError):
    pass


def payload_model(event_type: str, schema_version: int) -> type[Payload]:
    try:
        return PAYLOADS[(event_type, schema_version)]
    except KeyError:
        known = ", ".join(f"{t} v{v}" for t, v in sorted(PAYLOADS))
        raise UnknownEventType(f"unknown event {event_type} v{schema_version}; known: {known}") from None
