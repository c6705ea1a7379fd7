"""Groups of fields that several entity types share, as the reference lists them."""

from __future__ import annotations

from schemas.entities.base import EntityFields
from schemas.multifield import Multifield
from schemas.values import Id, Ids, Number, Text, YesNo

__all__ = [
    "AssignedFields",
    "ClientFields",
    "MoneyFields",
    "MultifieldFields",
    "OriginFields",
    "SourceFields",
    "UtmFields",
]


class AssignedFields(EntityFields):
    assignedById: Id = None
    opened: YesNo = None


class ClientFields(EntityFields):
    companyId: Id = None
    contactId: Id = None
    contactIds: Ids = None


class MoneyFields(EntityFields):
    currencyId: Text = None
    isManualOpportunity: YesNo = None
    opportunity: Number = None


class OriginFields(EntityFields):
    originatorId: Text = None
    originId: Text = None


class SourceFields(EntityFields):
    sourceId: Text = None
    sourceDescription: Text = None


class UtmFields(EntityFields):
    utmSource: Text = None
    utmMedium: Text = None
    utmCampaign: Text = None
    utmContent: Text = None
    utmTerm: Text = None


class MultifieldFields(EntityFields):
    fm: Multifield = None
