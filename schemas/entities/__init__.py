"""One fields model per entity type crm.item.update knows."""

from schemas.entities.base import EntityFields
from schemas.entities.company import CompanyFields
from schemas.entities.contact import ContactFields
from schemas.entities.deal import DealFields
from schemas.entities.lead import LeadFields
from schemas.entities.quote import QuoteFields
from schemas.entities.smart_invoice import SmartInvoiceFields
from schemas.entities.smart_process import SmartProcessFields
from schemas.entity_types import EntityKind

__all__ = [
    "FIELDS_BY_KIND",
    "CompanyFields",
    "ContactFields",
    "DealFields",
    "EntityFields",
    "LeadFields",
    "QuoteFields",
    "SmartInvoiceFields",
    "SmartProcessFields",
]

FIELDS_BY_KIND: dict[EntityKind, type[EntityFields]] = {
    "lead": LeadFields,
    "deal": DealFields,
    "contact": ContactFields,
    "company": CompanyFields,
    "quote": QuoteFields,
    "smart_invoice": SmartInvoiceFields,
    "smart_process": SmartProcessFields,
}
