"""Fields of a smart process item (entityTypeId 128-192, or even from 1030).

Several of them exist only when the smart process has the matching setting on
(isClientEnabled, isStagesEnabled, ...); the portal ignores them otherwise.
"""

from __future__ import annotations

from schemas.entities.shared import AssignedFields, ClientFields, MoneyFields, SourceFields
from schemas.values import Date, Id, Ids, Number, Text

__all__ = ["SmartProcessFields"]


class SmartProcessFields(AssignedFields, ClientFields, MoneyFields, SourceFields):
    title: Text = None
    xmlId: Text = None
    webformId: Id = None
    begindate: Date = None
    closedate: Date = None
    observers: Ids = None
    categoryId: Id = None
    stageId: Text = None
    taxValue: Number = None
    mycompanyId: Id = None
