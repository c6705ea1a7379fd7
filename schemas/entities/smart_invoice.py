"""Fields of a smart invoice (entityTypeId 31)."""

from __future__ import annotations

from schemas.entities.shared import AssignedFields, ClientFields, MoneyFields, SourceFields
from schemas.values import Date, Id, Ids, Number, Text

__all__ = ["SmartInvoiceFields"]


class SmartInvoiceFields(AssignedFields, ClientFields, MoneyFields, SourceFields):
    title: Text = None
    comments: Text = None
    xmlId: Text = None
    webformId: Id = None
    begindate: Date = None
    closedate: Date = None
    observers: Ids = None
    stageId: Text = None
    taxValue: Number = None
    mycompanyId: Id = None
    locationId: Text = None
