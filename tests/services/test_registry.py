"""The one registry of read models: each service's consumers, the operator commands and the tests all
take them from here, and a read model's version follows from its code."""

from __future__ import annotations

from dataclasses import replace

from services.registry import READ_MODELS, named
from shared.contract.topics import SOURCES
from shared.readmodel import ReadModel

# A read model whose sources, table or fold changes is rebuilt from the event stores at the next start.
# When this test fails because you changed one on purpose, put its new fingerprint here: the change of
# version is then a reviewed decision, like a published schema's.
FINGERPRINTS = {
    "enrollment-subject-facts": "b067427fdd8e5c93",
    "treatment-subject-facts": "09056f7fae8e189c",
    "followup-subject-facts": "0fb7c4ed8066a5de",
    "followup-journey": "aa843b5ed8cf589a",
}


def test_each_read_model_version_follows_from_its_code():
    assert {m.consumer: m.version for m in READ_MODELS} == FINGERPRINTS


def test_a_change_to_the_fold_or_the_table_changes_the_version():
    journey = named("journey")

    def fold_v1() -> None: ...

    def fold_v2() -> int:
        return 2

    base = ReadModel(
        "followup",
        "test",
        "test",
        ("followup",),
        "t",
        lambda s: f"CREATE TABLE {s}.t ()",
        journey.projection,
        defined_by=(fold_v1,),
    )
    other_fold = replace(base, defined_by=(fold_v2,))
    other_table = replace(base, ddl=lambda s: f"CREATE TABLE {s}.t (x int)")
    other_sources = replace(base, sources=("followup", "treatment"))
    assert len({base.version, other_fold.version, other_table.version, other_sources.version}) == 4


def test_every_service_keeps_its_own_and_names_are_unique():
    assert {m.service for m in READ_MODELS} == set(SOURCES)
    assert len({m.consumer for m in READ_MODELS}) == len({m.alias for m in READ_MODELS}) == len(READ_MODELS)
    assert named("journey").sources == SOURCES and named("journey").table == "journeys"
    assert all(m.projection(m.service).name == m.consumer for m in READ_MODELS)
