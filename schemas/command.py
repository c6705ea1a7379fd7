"""The command: a message body that IS the parameters of crm.item.update.

    {"entityTypeId": 2, "id": 351, "fields": {"title": "..."}, "useOriginalUfNames": "N"}

Nothing else may stand at the top level: the portal address and credentials
(`auth`) come only from the worker's configuration. `parse_command` turns raw
bytes into the typed command of the entity type, or raises `CommandValidationError`.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from schemas.entities import (
    CompanyFields,
    ContactFields,
    DealFields,
    EntityFields,
    LeadFields,
    QuoteFields,
    SmartInvoiceFields,
    SmartProcessFields,
)
from schemas.entity_types import EntityKind, describe_entity_types, entity_kind, is_smart_process
from schemas.errors import CommandValidationError
from schemas.multifield import FORM_TAGS, may_add_entries
from schemas.values import ItemId, YesNo

__all__ = [
    "AnyUpdateCommand",
    "CompanyUpdate",
    "ContactUpdate",
    "DealUpdate",
    "LeadUpdate",
    "QuoteUpdate",
    "SmartInvoiceUpdate",
    "SmartProcessUpdate",
    "UpdateCommand",
    "command_json_schema",
    "parse_command",
]


class UpdateCommand(BaseModel):
    """What every command has; `parse_command` returns one of the subclasses."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        title="UpdateCommand",
        # The contract's models are built when first used, not when imported: a
        # worker or a tool builds only the entity types it meets, and starts about
        # 40 ms sooner (a deal's models take 2-3 ms at its first command).
        defer_build=True,
    )

    entityTypeId: int
    id: ItemId
    # Declared before `fields`: validating the fields needs to know the mode.
    useOriginalUfNames: YesNo = "N"
    fields: EntityFields

    @field_validator("fields", mode="after")
    @classmethod
    def _check_other_fields(cls, fields: EntityFields, info: ValidationInfo) -> EntityFields:
        fields.check_other_fields(original_uf_names=info.data.get("useOriginalUfNames") == "Y")
        return fields

    @property
    def ignored_fields(self) -> tuple[str, ...]:
        """Fields the reference does not list for this type: the portal would ignore them."""
        return self.fields.ignored_fields(original_uf_names=self.useOriginalUfNames == "Y")

    @property
    def is_idempotent(self) -> bool:
        """False when applying the command twice could do more than applying it once:
        an fm entry with a value (an addition; or an entry id, which a portal may ignore
        and add the value again), or a file uploaded. fm deletions alone are idempotent."""
        return not self.fm_additions() and not self.uploads_files

    @property
    def uploads_files(self) -> bool:
        """True when a field carries a file to upload (each send uploads it again)."""
        return any(_uploads_file(value) for value in self.fields_to_send().values())

    def fm_additions(self) -> Counter[tuple[str, str]]:
        """The fm values the command may add, as (typeId, value), counted: each entry
        with a value, an entry id included (see `may_add_entries`)."""
        fm = getattr(self.fields, "fm", None)
        if not fm or not may_add_entries(fm):
            return Counter()
        entries = fm.values() if isinstance(fm, dict) else fm
        return Counter((entry.typeId, entry.value) for entry in entries if entry.value != "")

    def fields_to_send(self) -> dict[str, Any]:
        return self.fields.to_send(original_uf_names=self.useOriginalUfNames == "Y")

    def to_params(self) -> dict[str, Any]:
        """The crm.item.update parameters to send, without ignored fields."""
        return {
            "entityTypeId": self.entityTypeId,
            "id": self.id,
            "fields": self.fields_to_send(),
            "useOriginalUfNames": self.useOriginalUfNames,
        }


def _uploads_file(value: Any) -> bool:
    if isinstance(value, list):
        if len(value) == 2 and all(isinstance(part, str) for part in value):
            return True
        return any(_uploads_file(part) for part in value)
    return False


class LeadUpdate(UpdateCommand):
    entityTypeId: Literal[1]
    fields: LeadFields


class DealUpdate(UpdateCommand):
    entityTypeId: Literal[2]
    fields: DealFields


class ContactUpdate(UpdateCommand):
    entityTypeId: Literal[3]
    fields: ContactFields


class CompanyUpdate(UpdateCommand):
    entityTypeId: Literal[4]
    fields: CompanyFields


class QuoteUpdate(UpdateCommand):
    entityTypeId: Literal[7]
    fields: QuoteFields


class SmartInvoiceUpdate(UpdateCommand):
    entityTypeId: Literal[31]
    fields: SmartInvoiceFields


def _smart_process_id(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and is_smart_process(value):
        return value
    raise PydanticCustomError("entity_type", "expected a smart process type id")


SmartProcessTypeId = Annotated[
    int,
    BeforeValidator(_smart_process_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 128, "maximum": 192},
                {"type": "integer", "minimum": 1030, "maximum": 2**31 - 1, "multipleOf": 2},
            ]
        }
    ),
]


class SmartProcessUpdate(UpdateCommand):
    entityTypeId: SmartProcessTypeId
    fields: SmartProcessFields


_BY_KIND: dict[EntityKind, type[UpdateCommand]] = {
    "lead": LeadUpdate,
    "deal": DealUpdate,
    "contact": ContactUpdate,
    "company": CompanyUpdate,
    "quote": QuoteUpdate,
    "smart_invoice": SmartInvoiceUpdate,
    "smart_process": SmartProcessUpdate,
}
_TAGS = frozenset(_BY_KIND) | FORM_TAGS


def _known_entity_type(value: Any) -> Any:
    """Check the envelope before dispatching, so that errors name the real problem."""
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "command_shape",
            "expected a JSON object with entityTypeId, id and fields",
        )
    if "entityTypeId" not in value:
        raise PydanticCustomError("missing", "entityTypeId: is required", {"field": "entityTypeId"})
    if entity_kind(value["entityTypeId"]) is None:
        raise PydanticCustomError(
            "entity_type",
            "entityTypeId: expected " + describe_entity_types(),
            {"field": "entityTypeId"},
        )
    return value


def _kind_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return entity_kind(value.get("entityTypeId"))
    return entity_kind(getattr(value, "entityTypeId", None))


AnyUpdateCommand = Annotated[
    Annotated[LeadUpdate, Tag("lead")]
    | Annotated[DealUpdate, Tag("deal")]
    | Annotated[ContactUpdate, Tag("contact")]
    | Annotated[CompanyUpdate, Tag("company")]
    | Annotated[QuoteUpdate, Tag("quote")]
    | Annotated[SmartInvoiceUpdate, Tag("smart_invoice")]
    | Annotated[SmartProcessUpdate, Tag("smart_process")],
    Discriminator(_kind_of),
    BeforeValidator(_known_entity_type),
]


@functools.cache
def _adapter() -> TypeAdapter[UpdateCommand]:
    """The tagged union of every entity type: built at its first use (a command
    the fast path below cannot place, or the JSON Schema), as it builds them all."""
    return TypeAdapter(AnyUpdateCommand)


# A fast path: guess the entity type from the raw bytes and validate against that
# model directly, which skips building Python objects for the whole tagged union.
# The guess only picks a model; the model itself checks the real entityTypeId, so
# a wrong guess (the key inside a nested object, say) merely falls back below.
_TYPE_HINT = re.compile(rb'"entityTypeId"\s*:\s*([0-9]{1,10})[,}\s]')


def parse_command(body: bytes | str | dict[str, Any]) -> UpdateCommand:
    """Validate a message body; raise CommandValidationError with a one-line reason."""
    if not isinstance(body, dict):
        raw = body.encode() if isinstance(body, str) else body
        hint = _TYPE_HINT.search(raw)
        kind = entity_kind(int(hint.group(1))) if hint else None
        if kind is not None:
            try:
                return _BY_KIND[kind].model_validate_json(raw)
            except ValidationError:
                pass  # the full path below reports the errors, with the right names
    try:
        if isinstance(body, dict):
            return _adapter().validate_python(body)
        return _adapter().validate_json(body)
    except ValidationError as exc:
        raise CommandValidationError.from_validation_error(exc, strip_tags=_TAGS) from None


def command_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a producer can validate its messages with."""
    schema = _adapter().json_schema(ref_template="#/$defs/{model}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://b24-update-worker/schemas/update-command.json",
        "title": "crm.item.update command",
        "description": (
            "A message on UPDATE_QUEUE: exactly the parameters of crm.item.update. "
            "Credentials and portal addresses are not allowed."
        ),
        **schema,
    }
