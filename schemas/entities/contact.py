"""Fields of a contact (entityTypeId 3)."""

from __future__ import annotations

from schemas.entities.shared import (
    AssignedFields,
    MultifieldFields,
    OriginFields,
    SourceFields,
    UtmFields,
)
from schemas.values import Date, FileValue, Id, Ids, Text, YesNo

__all__ = ["ContactFields"]


class ContactFields(AssignedFields, OriginFields, SourceFields, UtmFields, MultifieldFields):
    honorific: Text = None
    comments: Text = None
    name: Text = None
    secondName: Text = None
    lastName: Text = None
    photo: FileValue = None
    birthdate: Date = None
    typeId: Text = None
    post: Text = None
    export: YesNo = None
    companyId: Id = None
    # The reference types companyIds as crm_company but describes an array of ids;
    # the portal treats it as a multiple field, so an array it is.
    companyIds: Ids = None
    leadId: Id = None
    originVersion: Text = None
    observers: Ids = None
