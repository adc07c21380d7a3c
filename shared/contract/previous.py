"""Superseded schema versions, kept so that every stored event can still be read.

A published payload never changes shape (ADR 0005): when one does, its old model moves here, frozen
with its old JSON Schema (titles and nested model names included, so the published fingerprints hold),
and `upcasting.upcast` reads it as the latest version. Nothing new is ever written with these models.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID, uuid4

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

from shared.contract.events import AEFields, Payload
from shared.contract.strict import ContractModel
from shared.contract.topics import Source

# The vocabularies as they were published before months 6-12 and progressive disease.
ResponseCodeV2 = Literal["CR", "CRi", "NR", "RELAPSE"]
TimepointV2 = Literal["W4", "W8", "W12", "UNSCHEDULED"]


# --- findings before blow-by oxygen, CAPD and the raised-ICP signs (AEReported v2, AECorrected v1) --


class CRSFindings(ContractModel):
    """The worst values of the episode (ASTCT: grade by the worse of hypotension and hypoxia)."""

    max_temperature_c: StrictFloat = Field(ge=30, le=45)
    fever_masked: StrictBool = Field(
        default=False, description="Fever no longer present because of antipyretics, tocilizumab or steroids."
    )
    hypotension: StrictBool = False
    vasopressors: StrictInt = Field(default=0, ge=0, le=6, description="Vasopressors needed, not counting vasopressin.")
    vasopressin: StrictBool = False
    oxygen_delivery: Literal[
        "none",
        "nasal_cannula",
        "high_flow_nasal_cannula",
        "face_mask",
        "non_rebreather",
        "venturi",
        "cpap",
        "bipap",
        "mechanical_ventilation",
    ] = "none"
    oxygen_flow_l_min: StrictFloat | None = Field(default=None, ge=0, le=80)


class ICANSFindings(ContractModel):
    """ASTCT ICANS domains; the grade is the worst domain."""

    ice_score: StrictInt | None = Field(default=None, ge=0, le=10, description="ICE score 0-10; None if not done.")
    consciousness: Literal["awake", "awakens_spontaneously", "awakens_to_voice", "awakens_to_touch", "unarousable"] = (
        "awake"
    )
    seizure: Literal["none", "resolving_rapidly", "prolonged_or_repetitive"] = "none"
    deep_focal_motor_weakness: StrictBool = False
    cerebral_oedema: Literal["none", "focal", "diffuse_or_posturing"] = "none"


class _AEFieldsV1(AEFields):
    crs: CRSFindings | None = Field(  # type: ignore[assignment]  # the old findings, read as the new ones
        default=None, description="Findings for a CRS (grade derived by ASTCT)."
    )
    icans: ICANSFindings | None = Field(  # type: ignore[assignment]  # (as above)
        default=None, description="Findings for ICANS (grade derived by ASTCT)."
    )


# --- adverse events -----------------------------------------------------------------------------


class AEReportedV1(Payload):
    """An adverse event (occurred_at = onset). Severity (CTCAE grade) and seriousness are separate."""

    model_config = ConfigDict(title="AEReported")  # schema v1, read through the upcaster

    event_type: ClassVar[str] = "AEReported"
    schema_version: ClassVar[int] = 1
    source: ClassVar[Source] = "followup"

    ae_id: UUID = Field(default_factory=uuid4, description="Identifies the AE for later updates.")
    term: str = Field(min_length=2, max_length=200)
    category: Literal["CRS", "ICANS", "GVHD", "INFECTION", "CYTOPENIA", "OTHER"]
    grade: StrictInt = Field(ge=1, le=5, description="CTCAE v5 / ASTCT grade, 1 (mild) to 5 (death).")
    serious: StrictBool = Field(description="ICH E2A seriousness, independent of the grade.")
    relatedness: Literal["unrelated", "unlikely", "possible", "probable", "definite"]


class AEReportedV2(_AEFieldsV1, Payload):
    """An adverse event (occurred_at = onset). Severity (grade) and seriousness are separate."""

    model_config = ConfigDict(title="AEReported")  # schema v2, read through the upcaster

    event_type: ClassVar[str] = "AEReported"
    schema_version: ClassVar[int] = 2
    source: ClassVar[Source] = "followup"

    ae_id: UUID = Field(default_factory=uuid4, description="Identifies the AE for later updates.")


class AECorrectedV1(_AEFieldsV1, Payload):
    """A correction of what was reported for an AE (the envelope's reason says why). The earlier
    report stays in the history; this one replaces it from now on."""

    model_config = ConfigDict(title="AECorrected")  # schema v1, read through the upcaster

    event_type: ClassVar[str] = "AECorrected"
    schema_version: ClassVar[int] = 1
    source: ClassVar[Source] = "followup"

    ae_id: UUID


# --- response -----------------------------------------------------------------------------------


class ResponseAssessedV1(Payload):
    """A B-ALL response assessment (occurred_at = marrow/blood sample time)."""

    model_config = ConfigDict(title="ResponseAssessed")  # schema v1, read through the upcaster

    event_type: ClassVar[str] = "ResponseAssessed"
    schema_version: ClassVar[int] = 1
    source: ClassVar[Source] = "followup"

    timepoint: TimepointV2
    response: ResponseCodeV2
    marrow_blasts_pct: StrictFloat = Field(ge=0, le=100)
    mrd_negative: StrictBool | None = Field(default=None, description="Flow MRD < 0.01%, if measured.")
    cd19_status: Literal["CD19+", "CD19-", "lineage_switch"] | None = Field(
        default=None, description="Blast CD19 status, for a relapse."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ResponseAssessedV1:
        if self.response in ("CR", "CRi") and self.marrow_blasts_pct >= 5:
            raise ValueError(f"{self.response} needs marrow blasts < 5% (got {self.marrow_blasts_pct}%)")
        if self.cd19_status is not None and self.response != "RELAPSE":
            raise ValueError("cd19_status is recorded only for a RELAPSE")
        return self


class ResponseAssessedV2(Payload):
    """A B-ALL response assessment (occurred_at = sample time). The response criteria (blast and
    count thresholds) are checked against the protocol file."""

    model_config = ConfigDict(title="ResponseAssessed")  # schema v2, read through the upcaster

    event_type: ClassVar[str] = "ResponseAssessed"
    schema_version: ClassVar[int] = 2
    source: ClassVar[Source] = "followup"

    timepoint: TimepointV2
    response: ResponseCodeV2
    marrow_blasts_pct: StrictFloat = Field(ge=0, le=100)
    circulating_blasts: StrictBool | None = None
    extramedullary_disease: StrictBool | None = None
    anc_10e9_per_l: StrictFloat | None = Field(default=None, ge=0, le=500, description="Absolute neutrophil count.")
    platelets_10e9_per_l: StrictFloat | None = Field(default=None, ge=0, le=5000)
    mrd_pct: StrictFloat | None = Field(default=None, ge=0, le=100, description="Measurable residual disease, %.")
    mrd_assay: Literal["flow", "qpcr", "ngs"] | None = None
    mrd_sensitivity_pct: StrictFloat | None = Field(default=None, gt=0, le=100, description="Assay sensitivity, %.")
    mrd_negative: StrictBool | None = Field(default=None, description="As reported (v1), when no MRD value is given.")
    cd19_status: Literal["CD19+", "CD19-", "lineage_switch"] | None = Field(
        default=None, description="Blast CD19 status, for a relapse."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ResponseAssessedV2:
        if self.cd19_status is not None and self.response != "RELAPSE":
            raise ValueError("cd19_status is recorded only for a RELAPSE")
        if self.mrd_pct is not None and self.mrd_assay is None:
            raise ValueError("give mrd_assay (flow, qpcr or ngs) with mrd_pct")
        return self


SUPERSEDED: tuple[type[Payload], ...] = (
    AEReportedV1,
    AEReportedV2,
    AECorrectedV1,
    ResponseAssessedV1,
    ResponseAssessedV2,
)
