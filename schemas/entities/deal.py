"""Fields of a deal (entityTypeId 2)."""

from __future__ import annotations

from schemas.entities.shared import (
    AssignedFields,
    ClientFields,
    MoneyFields,
    OriginFields,
    SourceFields,
    UtmFields,
)
from schemas.values import Date, Id, Ids, Number, Text, YesNo

__all__ = ["DealFields"]


class DealFields(AssignedFields, ClientFields, MoneyFields, OriginFields, SourceFields, UtmFields):
    title: Text = None
    comments: Text = None
    typeId: Text = None
    categoryId: Id = None
    stageId: Text = None
    isRecurring: YesNo = None
    probability: Id = None
    taxValue: Number = None
    quoteId: Id = None
    begindate: Date = None
    closedate: Date = None
    leadId: Id = None
    additionalInfo: Text = None
    observers: Ids = None
    locationId: Text = None
