"""`fm`: phones, e-mails, web sites and messengers of leads, contacts and companies.

The reference sends them as an object keyed by entry id (update or, with an
empty value, delete that entry) or by `nN` (add an entry); a list of entries,
each with an optional `id`, is accepted too. `typeId` is required on every
entry, even to delete, because the portal looks entries up by type.

Whether an entry id is honoured is disputed (a live portal was reported to add
the value again), so every entry with a value may add one (`may_add_entries`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = ["FORM_TAGS", "MULTIFIELD_TYPES", "Multifield", "MultifieldEntry", "may_add_entries"]

MULTIFIELD_TYPES = ("PHONE", "EMAIL", "WEB", "IM", "LINK")
_KEY = re.compile(r"^(?:[1-9][0-9]{0,9}|n[0-9]{1,4})$")


class MultifieldEntry(BaseModel):
    """One phone, e-mail, site or messenger entry."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: Annotated[int, Field(ge=1, strict=True)] | None = None
    typeId: Literal["PHONE", "EMAIL", "WEB", "IM", "LINK"]
    valueType: Annotated[str, Field(min_length=1, max_length=50, strict=True)] | None = None
    value: Annotated[str, Field(max_length=1000, strict=True)]

    @model_validator(mode="after")
    def _value_type_unless_deleting(self) -> MultifieldEntry:
        if self.value != "" and self.valueType is None:
            raise PydanticCustomError(
                "fm_value_type",
                "an fm entry with a value needs valueType (for example WORK, MOBILE, HOME)",
            )
        return self


def _shape(value: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, dict):
        for key in value:
            if not _KEY.fullmatch(key):
                raise PydanticCustomError(
                    "fm_key",
                    "fm keys are entry ids (to update or delete that entry) or n0, n1... "
                    "(to add an entry); got {key}",
                    {"key": repr(key)},
                )
        return value
    if isinstance(value, list):
        return value
    raise PydanticCustomError(
        "fm_shape", "expected fm as an object keyed by entry id or nN, or as a list of entries"
    )


def _form(value: Any) -> str:
    return "fm-list" if isinstance(value, list) else "fm-object" if value is not None else "fm-null"


# Tagged, so that an error names the entry at fault rather than both forms.
FORM_TAGS = frozenset({"fm-object", "fm-list", "fm-null"})

Multifield = Annotated[
    Annotated[dict[str, MultifieldEntry], Tag("fm-object")]
    | Annotated[list[MultifieldEntry], Tag("fm-list")]
    | Annotated[None, Tag("fm-null")],
    Discriminator(_form),
    BeforeValidator(_shape),
]


def may_add_entries(fm: dict[str, MultifieldEntry] | list[MultifieldEntry]) -> bool:
    """True when applying `fm` twice could leave an entry there twice: any entry with a value.

    An `nN` key or an entry without an id adds one. An entry id with a value
    updates that entry by the reference, but a live portal was reported to
    ignore the id and add the value again, so it counts as an addition too.
    Only deletions (an empty value) are certainly harmless to repeat.
    """
    entries = fm.values() if isinstance(fm, dict) else fm
    return any(entry.value != "" for entry in entries)
