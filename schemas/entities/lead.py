"""Fields of a lead (entityTypeId 1)."""

from __future__ import annotations

from schemas.entities.shared import (
    AssignedFields,
    ClientFields,
    MoneyFields,
    MultifieldFields,
    OriginFields,
    SourceFields,
    UtmFields,
)
from schemas.values import Date, Id, Ids, Text

__all__ = ["LeadFields"]


class LeadFields(
    AssignedFields,
    ClientFields,
    MoneyFields,
    OriginFields,
    SourceFields,
    UtmFields,
    MultifieldFields,
):
    title: Text = None
    comments: Text = None
    honorific: Text = None
    name: Text = None
    secondName: Text = None
    lastName: Text = None
    birthdate: Date = None
    companyTitle: Text = None
    stageId: Text = None
    statusDescription: Text = None
    post: Text = None
    webformId: Id = None
    observers: Ids = None
