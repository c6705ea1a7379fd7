"""Fields of a company (entityTypeId 4)."""

from __future__ import annotations

from schemas.entities.shared import (
    AssignedFields,
    MultifieldFields,
    OriginFields,
    UtmFields,
)
from schemas.values import FileValue, Id, Ids, Number, Text, YesNo

__all__ = ["CompanyFields"]


class CompanyFields(AssignedFields, OriginFields, UtmFields, MultifieldFields):
    title: Text = None
    comments: Text = None
    typeId: Text = None
    logo: FileValue = None
    bankingDetails: Text = None
    industry: Text = None
    employees: Text = None
    currencyId: Text = None
    revenue: Number = None
    isMyCompany: YesNo = None
    contactIds: Ids = None
    leadId: Id = None
    originVersion: Text = None
    observers: Ids = None
