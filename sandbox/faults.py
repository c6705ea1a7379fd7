"""Fault injection: what the operator (or a test) has switched on, changeable at run time.

Portal-wide switches (OVERLOAD_LIMIT, NO_AUTH_FOUND, any catalogue error),
added latency, random 500s, errors forced for chosen items, the rights
and plan restrictions that make ``crm.item.update`` refuse, and two faults
of the way in between: answers lost to a dropped connection, and HTML pages
where JSON belongs.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.errors import CATALOGUE

__all__ = ["Faults", "ItemErrorRule"]


@dataclass(slots=True)
class ItemErrorRule:
    """Answer ``error`` (a catalogue name) to matching calls ``times`` times (``None``: always)."""

    error: str
    entity_type_id: int | None = None
    item_id: int | None = None
    method: str | None = None
    times: int | None = None

    def matches(self, method: str, entity_type_id: int, item_id: int | None) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.entity_type_id is None or self.entity_type_id == entity_type_id)
            and (self.item_id is None or self.item_id == item_id)
        )


def _known(name: str | None) -> str | None:
    if name is not None and name not in CATALOGUE:
        raise ValueError(f"unknown error {name!r}; known: {sorted(CATALOGUE)}")
    return name


def _share(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{key} must be a share from 0 to 1, not {value!r}")
    return float(value)


def _status(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
        raise ValueError(f"{key} must be an HTTP status from 200 to 599, not {value!r}")
    return value


@dataclass(slots=True)
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    overload: bool = False
    no_auth: bool = False
    portal_error: str | None = None
    require_https: bool = False
    extranet_user: bool = False
    dynamic_items_restricted: bool = False
    denied_entity_types: list[int] = field(default_factory=list)
    forbidden_stages: list[str] = field(default_factory=list)
    item_errors: list[ItemErrorRule] = field(default_factory=list)
    disconnect_rate: float = 0.0
    disconnect_writes_only: bool = False  # only requests that saved an item lose their answer
    html_rate: float = 0.0
    html_status: int = 502

    @classmethod
    def from_config(cls, config: SandboxConfig) -> Faults:
        return cls(
            latency_ms=config.latency_ms,
            error_rate=config.error_rate,
            require_https=config.require_https,
        )

    def update(self, patch: dict[str, Any]) -> None:
        """Apply a JSON patch from the control endpoint; unknown keys are an error."""
        for key, value in patch.items():
            if key == "item_errors":
                self.item_errors = [ItemErrorRule(**rule) for rule in value]
                for rule in self.item_errors:
                    _known(rule.error)
            elif key == "portal_error":
                self.portal_error = _known(value)
            elif key in ("disconnect_rate", "html_rate"):
                setattr(self, key, _share(key, value))
            elif key == "html_status":
                if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
                    raise ValueError(
                        f"html_status must be an HTTP status from 200 to 599, not {value!r}"
                    )
                self.html_status = value
            elif key in self.__dataclass_fields__:
                setattr(self, key, value)
            else:
                raise ValueError(f"unknown fault {key!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def item_error(self, method: str, entity_type_id: int, item_id: int | None) -> str | None:
        """The error forced for this call, if a rule matches (a counted rule is used up)."""
        for rule in self.item_errors:
            if rule.matches(method, entity_type_id, item_id):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.item_errors.remove(rule)
                return rule.error
        return None

    def random_failure(self, rng: random.Random) -> bool:
        return self.error_rate > 0 and rng.random() < self.error_rate

    def random_disconnect(self, rng: random.Random, *, wrote: bool = True) -> bool:
        """The request was carried out, but this answer is to be lost with its connection.
        ``wrote``: it saved an item (with ``disconnect_writes_only``, only those lose it)."""
        if self.disconnect_writes_only and not wrote:
            return False
        return self.disconnect_rate > 0 and rng.random() < self.disconnect_rate

    def random_html(self, rng: random.Random) -> bool:
        """Something in front of the portal answers this request with an HTML page."""
        return self.html_rate > 0 and rng.random() < self.html_rate
