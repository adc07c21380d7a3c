"""Clinical findings recorded with an adverse event, from which the ASTCT grade is derived.

Organ toxicities are not inputs to the CRS grade (ASTCT 2019, Lee et al.). The investigator's own
grade is recorded beside these; a disagreement opens a data query instead of overriding either.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, model_validator

from shared.contract.strict import ContractModel

OxygenDelivery = Literal[
    "none",
    "blow_by",  # low flow (ASTCT 2019, for children): grade 2
    "nasal_cannula",  # low flow: grade 2 up to the protocol's limit (6 L/min), grade 3 above
    "high_flow_nasal_cannula",
    "face_mask",
    "non_rebreather",
    "venturi",
    "cpap",
    "bipap",
    "mechanical_ventilation",
]


class CRSFindings(ContractModel):
    """The worst values of the episode (ASTCT: grade by the worse of hypotension and hypoxia)."""

    max_temperature_c: StrictFloat = Field(ge=30, le=45)
    fever_masked: StrictBool = Field(
        default=False, description="Fever no longer present because of antipyretics, tocilizumab or steroids."
    )
    hypotension: StrictBool = False
    vasopressors: StrictInt = Field(default=0, ge=0, le=6, description="Vasopressors needed, not counting vasopressin.")
    vasopressin: StrictBool = False
    oxygen_delivery: OxygenDelivery = "none"
    oxygen_flow_l_min: StrictFloat | None = Field(default=None, ge=0, le=80)

    @model_validator(mode="after")
    def _consistent(self) -> CRSFindings:
        if (self.vasopressors or self.vasopressin) and not self.hypotension:
            raise ValueError("vasopressors are recorded for hypotension: set hypotension to true")
        if self.oxygen_delivery == "none" and self.oxygen_flow_l_min:
            raise ValueError("oxygen_flow_l_min is given but oxygen_delivery is none")
        if self.oxygen_delivery == "nasal_cannula" and self.oxygen_flow_l_min is None:
            raise ValueError("oxygen_flow_l_min is needed for a nasal cannula (it decides grade 2 or 3)")
        return self


class ICANSFindings(ContractModel):
    """ASTCT ICANS domains; the grade is the worst domain. The encephalopathy score is ICE from 12 years
    of age and CAPD under 12 (ASTCT 2019, paediatric grading)."""

    ice_score: StrictInt | None = Field(default=None, ge=0, le=10, description="ICE score 0-10; None if not done.")
    consciousness: Literal["awake", "awakens_spontaneously", "awakens_to_voice", "awakens_to_touch", "unarousable"] = (
        "awake"
    )
    seizure: Literal["none", "resolving_rapidly", "prolonged_or_repetitive"] = "none"
    deep_focal_motor_weakness: StrictBool = False
    cerebral_oedema: Literal["none", "focal", "diffuse_or_posturing"] = "none"
    capd_score: StrictInt | None = Field(
        default=None,
        ge=0,
        le=32,
        description="Cornell Assessment of Pediatric Delirium 0-32, for children under 12 (in place of ICE); "
        "None if not done.",
    )
    raised_icp_signs: tuple[Literal["cranial_nerve_vi_palsy", "papilloedema", "cushings_triad"], ...] = Field(
        default=(), description="Signs of raised intracranial pressure besides oedema and posturing (ASTCT: grade 4)."
    )

    @model_validator(mode="after")
    def _one_encephalopathy_score(self) -> ICANSFindings:
        if self.ice_score is not None and self.capd_score is not None:
            raise ValueError("give ice_score (12 years and older) or capd_score (under 12), not both")
        if len(set(self.raised_icp_signs)) != len(self.raised_icp_signs):
            raise ValueError("raised_icp_signs lists a sign twice")
        return self


class GvHDStaging(ContractModel):
    """Acute GvHD organ stages (MAGIC): skin 0-4, liver 0-4, upper GI 0-1, lower GI 0-4."""

    skin_stage: StrictInt = Field(default=0, ge=0, le=4)
    liver_stage: StrictInt = Field(default=0, ge=0, le=4)
    upper_gi_stage: StrictInt = Field(default=0, ge=0, le=1)
    lower_gi_stage: StrictInt = Field(default=0, ge=0, le=4)
