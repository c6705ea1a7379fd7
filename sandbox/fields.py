"""Field definitions per entity type, as ``crm.item.fields`` describes them.

Each entity type gets its standard fields (the reference page's lists), the
read-only system fields, a ``parentId{N}`` field for every other type, and the
custom fields configured for it. Custom fields have two names: the original
``UF_CRM_...`` one and the camelCase one the API uses by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sandbox.config import CustomFieldSpec
from sandbox.entities import EntityType

__all__ = ["FieldDef", "build_fields", "camel_uf_name", "upper_name"]

_SYSTEM = "id:integer createdTime:datetime updatedTime:datetime createdBy:user updatedBy:user"
_MOVED = "movedTime:datetime movedBy:user stageSemanticId:string"
_UTM = "utmSource:string utmMedium:string utmCampaign:string utmContent:string utmTerm:string"
_PEOPLE = "assignedById:user observers:user[]"
_MONEY = "currencyId:crm_currency isManualOpportunity:boolean opportunity:double"

# Writable fields per standard type; `~` marks an immutable field (set on add only).
_STANDARD: dict[str, str] = {
    "lead": f"""title:string honorific:crm_status name:string secondName:string lastName:string
        birthdate:date companyTitle:string sourceId:crm_status sourceDescription:text
        stageId:crm_status statusDescription:text post:string {_MONEY} opened:boolean
        comments:text {_PEOPLE} companyId:crm_company contactId:crm_contact
        contactIds:crm_contact[] originatorId:string originId:string webformId:integer {_UTM}
        fm:crm_multifield[]""",
    "deal": f"""title:string typeId:crm_status categoryId:crm_category stageId:crm_status
        isRecurring:boolean probability:integer {_MONEY} taxValue:double companyId:crm_company
        contactId:crm_contact contactIds:crm_contact[] quoteId:crm_quote begindate:date
        closedate:date opened:boolean comments:text {_PEOPLE} sourceId:crm_status
        sourceDescription:text ~leadId:crm_lead additionalInfo:string originatorId:string
        originId:string locationId:location {_UTM}""",
    "contact": f"""honorific:crm_status name:string secondName:string lastName:string photo:file
        birthdate:date typeId:crm_status sourceId:crm_status sourceDescription:text post:string
        comments:text opened:boolean export:boolean {_PEOPLE} companyId:crm_company
        companyIds:crm_company[] ~leadId:crm_lead originatorId:string originId:string
        originVersion:string {_UTM} fm:crm_multifield[]""",
    "company": f"""title:string typeId:crm_status logo:file bankingDetails:string
        industry:crm_status employees:crm_status currencyId:crm_currency revenue:double
        opened:boolean comments:text isMyCompany:boolean {_PEOPLE} contactIds:crm_contact[]
        ~leadId:crm_lead originatorId:string originId:string originVersion:string {_UTM}
        fm:crm_multifield[]""",
    "quote": f"""title:string assignedById:user opened:boolean content:text terms:text
        comments:text dealId:crm_deal ~leadId:crm_lead storageTypeId:integer
        storageElementIds:integer[] webformId:integer companyId:crm_company
        contactId:crm_contact contactIds:crm_contact[] locationId:location {_MONEY}
        taxValue:double stageId:crm_status begindate:date closedate:date actualDate:date
        mycompanyId:crm_company {_UTM}""",
    "dynamic": f"""title:string xmlId:string assignedById:user opened:boolean webformId:integer
        begindate:date closedate:date companyId:crm_company contactId:crm_contact
        contactIds:crm_contact[] observers:user[] categoryId:crm_category stageId:crm_status
        sourceId:crm_status sourceDescription:text {_MONEY} taxValue:double
        mycompanyId:crm_company comments:text locationId:location""",
}
_KIND = {1: "lead", 2: "deal", 3: "contact", 4: "company", 7: "quote"}


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    type: str
    multiple: bool = False
    required: bool = False
    read_only: bool = False
    immutable: bool = False
    dynamic: bool = False
    title: str = ""
    upper_name: str = ""
    settings: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> dict[str, Any]:
        """The field as ``crm.item.fields`` returns it."""
        out: dict[str, Any] = {
            "type": self.type,
            "isRequired": self.required,
            "isReadOnly": self.read_only,
            "isImmutable": self.immutable,
            "isMultiple": self.multiple,
            "isDynamic": self.dynamic,
            "title": self.title or self.name,
            "upperName": self.upper_name,
        }
        if self.settings:
            out["settings"] = dict(self.settings)
        if self.type == "crm_status":
            out["statusType"] = self.upper_name
        return out


def upper_name(camel: str) -> str:
    """``assignedById`` -> ``ASSIGNED_BY_ID``, ``parentId1032`` -> ``PARENT_ID_1032``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])", "_", camel)
    return spaced.upper()


def camel_uf_name(entity: EntityType, original: str) -> str:
    """``UF_CRM_1721244707107`` -> ``ufCrm_1721244707107``, ``UF_CRM_1_MY`` -> ``ufCrm1My``.

    A purely numeric part keeps its underscore; a word part is capitalised.
    """
    suffix = original[len(entity.uf_prefix) :]
    parts = [p for p in suffix.split("_") if p]
    return entity.camel_uf_prefix + "".join(
        "_" + p if p.isdigit() else p[:1].upper() + p[1:].lower() for p in parts
    )


def _parse(spec: str) -> list[FieldDef]:
    out = []
    for token in spec.split():
        immutable = token.startswith("~")
        name, _, type_ = token.lstrip("~").partition(":")
        multiple = type_.endswith("[]")
        out.append(
            FieldDef(
                name=name,
                type=type_.removesuffix("[]"),
                multiple=multiple,
                immutable=immutable,
                upper_name=upper_name(name),
            )
        )
    return out


def _read_only(spec: str) -> list[FieldDef]:
    return [
        FieldDef(name=f.name, type=f.type, read_only=True, upper_name=f.upper_name)
        for f in _parse(spec)
    ]


def _custom(entity: EntityType, spec: CustomFieldSpec) -> FieldDef:
    code = spec.code.removeprefix(entity.uf_prefix)
    original = entity.uf_prefix + code
    return FieldDef(
        name=camel_uf_name(entity, original),
        type=spec.type,
        multiple=spec.multiple,
        required=spec.required,
        dynamic=True,
        title=spec.title or original,
        upper_name=original,
    )


def build_fields(
    entity: EntityType, all_types: list[int], custom: tuple[CustomFieldSpec, ...]
) -> list[FieldDef]:
    """Every field of ``entity`` in the order items list them."""
    kind = _KIND.get(entity.id, "dynamic")
    system = _SYSTEM + (" " + _MOVED if entity.has_stages else "")
    fields = _read_only(system) + _parse(_STANDARD[kind])
    if entity.id == 31:  # smart invoices have a single pipeline
        fields = [
            FieldDef(name=f.name, type=f.type, read_only=True, upper_name=f.upper_name)
            if f.name == "categoryId"
            else f
            for f in fields
        ]
    fields += [
        _custom(entity, spec)
        for spec in custom
        if spec.entity_type_id is None or spec.entity_type_id == entity.id
    ]
    fields += [
        FieldDef(
            name=f"parentId{other}",
            type="crm_entity",
            upper_name=f"PARENT_ID_{other}",
            settings=(("parentEntityTypeId", other),),
        )
        for other in all_types
        if other != entity.id
    ]
    return fields
