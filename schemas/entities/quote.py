"""Fields of a quote, or estimate (entityTypeId 7)."""

from __future__ import annotations

from schemas.entities.shared import AssignedFields, ClientFields, MoneyFields, UtmFields
from schemas.values import Date, Id, Ids, Number, Text

__all__ = ["QuoteFields"]


class QuoteFields(AssignedFields, ClientFields, MoneyFields, UtmFields):
    title: Text = None
    comments: Text = None
    content: Text = None
    terms: Text = None
    dealId: Id = None
    leadId: Id = None
    storageTypeId: Id = None
    # Typed integer in the reference but described as "Array of files".
    storageElementIds: Ids = None
    webformId: Id = None
    locationId: Text = None
    taxValue: Number = None
    stageId: Text = None
    begindate: Date = None
    closedate: Date = None
    actualDate: Date = None
    mycompanyId: Id = None
