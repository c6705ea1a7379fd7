"""Field names and definitions."""

from __future__ import annotations

import pytest

from sandbox.config import CustomFieldSpec
from sandbox.entities import build_entity_types, is_spa_id
from sandbox.fields import camel_uf_name, upper_name

TYPES = build_entity_types((1032, 128))


@pytest.mark.parametrize(
    ("entity", "original", "camel"),
    [
        (2, "UF_CRM_1721244707107", "ufCrm_1721244707107"),
        (1032, "UF_CRM_1_1639669411830", "ufCrm1_1639669411830"),
        (128, "UF_CRM_2_1639669411830", "ufCrm2_1639669411830"),
        (2, "UF_CRM_MY_NOTE", "ufCrmMyNote"),
        (31, "UF_CRM_SMART_INVOICE_1721244707107", "ufCrmSmartInvoice_1721244707107"),
    ],
)
def test_custom_field_camel_names(entity: int, original: str, camel: str) -> None:
    assert camel_uf_name(TYPES[entity], original) == camel


def test_upper_names() -> None:
    assert upper_name("assignedById") == "ASSIGNED_BY_ID"
    assert upper_name("parentId1032") == "PARENT_ID_1032"


def test_spa_ids() -> None:
    assert [is_spa_id(i) for i in (128, 192, 193, 1030, 1031, 1032, 31)] == [
        True,
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    with pytest.raises(ValueError, match="not a smart process"):
        build_entity_types((1031,))


def test_custom_field_spec_parsing() -> None:
    spec = CustomFieldSpec.parse("*:my_field:file:multiple")
    assert (spec.entity_type_id, spec.code, spec.type, spec.multiple) == (
        None,
        "MY_FIELD",
        "file",
        True,
    )
    with pytest.raises(ValueError, match="unknown custom field type"):
        CustomFieldSpec.parse("2:X:blob")
