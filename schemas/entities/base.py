"""What every entity's fields model shares: the families of names the reference
describes by prefix (ufCrm..., parentId...) and the fields it does not list.

A fields model validates the fields the reference lists for its type. The
other names depend on the command's useOriginalUfNames, so the command checks
them (`check_other_fields`): custom fields spelt for the
mode are sent as they are (their types are known only to the portal),
parentId{N} links are checked as ids, a custom field spelt for the other mode is
refused (the portal would silently ignore it), and anything else is dropped and
reported back as ignored, exactly as the portal would ignore it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

from schemas.values import check_free_value, to_id

__all__ = ["CAMEL_UF_NAME", "ORIGINAL_UF_NAME", "PARENT_ID_NAME", "EntityFields"]

CAMEL_UF_NAME = re.compile(r"^ufCrm[0-9A-Z_][0-9A-Za-z_]*$")
ORIGINAL_UF_NAME = re.compile(r"^UF_CRM_[0-9A-Z_]+$")
PARENT_ID_NAME = re.compile(r"^parentId[1-9][0-9]{0,9}$")


class EntityFields(BaseModel):
    """Base of the per-entity fields models."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, defer_build=True)

    def ignored_fields(self, *, original_uf_names: bool) -> tuple[str, ...]:
        """Names the reference does not list for this type: not sent, reported back."""
        extra = self.__pydantic_extra__
        if not extra:
            return ()
        custom = ORIGINAL_UF_NAME if original_uf_names else CAMEL_UF_NAME
        return tuple(
            name
            for name in extra
            if not custom.fullmatch(name) and not PARENT_ID_NAME.fullmatch(name)
        )

    def to_send(self, *, original_uf_names: bool) -> dict[str, Any]:
        """The fields as they go to the portal: only those given, normalised, and
        none that the portal would ignore."""
        # Built by hand: model_dump costs more than the validation itself, and every
        # value but an fm entry is already plain JSON data.
        values = self.__dict__
        out = {name: values[name] for name in self.__pydantic_fields_set__ if name in values}
        fm = out.get("fm")
        if fm is not None:
            out["fm"] = _plain(fm)
        extra = self.__pydantic_extra__
        if extra:
            ignored = self.ignored_fields(original_uf_names=original_uf_names)
            out.update((name, value) for name, value in extra.items() if name not in ignored)
        return out

    def check_other_fields(self, *, original_uf_names: bool) -> None:
        """Check the fields outside the model: custom fields and parent links."""
        extra = self.__pydantic_extra__
        if not extra:
            return
        custom = ORIGINAL_UF_NAME if original_uf_names else CAMEL_UF_NAME
        for name, value in extra.items():
            if custom.fullmatch(name):
                _checked(name, check_free_value, value)
            elif name[:2].lower() == "uf":
                raise _misspelt_uf_name(name, original_uf_names=original_uf_names)
            elif PARENT_ID_NAME.fullmatch(name):
                extra[name] = _checked(name, to_id, value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _checked(name: str, check: Any, value: Any) -> Any:
    try:
        return check(value)
    except PydanticCustomError as exc:
        raise PydanticCustomError(exc.type, "{field}: " + exc.message(), {"field": name}) from None


def _misspelt_uf_name(name: str, *, original_uf_names: bool) -> PydanticCustomError:
    if original_uf_names:
        expected = "UF_CRM_... (useOriginalUfNames is Y)"
        other = CAMEL_UF_NAME.fullmatch(name)
    else:
        expected = (
            "ufCrm... in camelCase, for example ufCrm_1721244707107 (useOriginalUfNames is N)"
        )
        other = ORIGINAL_UF_NAME.fullmatch(name)
    hint = "; it is spelt for the other useOriginalUfNames mode" if other else ""
    return PydanticCustomError(
        "uf_name",
        "{field}: a custom field name must be spelt "
        + expected
        + hint
        + "; the portal silently ignores any other spelling",
        {"field": name},
    )
