"""Every option of the sandbox portal, with the cloud's defaults, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from sandbox.limits.cost import OperatingCost

__all__ = [
    "CUSTOM_FIELD_TYPES",
    "DEFAULT_CUSTOM_FIELDS",
    "DEFAULT_WEBHOOK_CODE",
    "BatchCharging",
    "CustomFieldSpec",
    "FmIds",
    "SandboxConfig",
]

DEFAULT_WEBHOOK_CODE = "sandboxwebhook01"

# What a batch's operating time is charged to. The official limits page: each nested
# command to its own method ("nested"). A field report from an official SDK's
# maintainers: the batch as a whole, to the method `batch` ("batch").
BatchCharging = Literal["nested", "batch"]
# What crm.item.update does with an existing fm entry's id. The reference: the entry is
# updated ("honoured"). A field report from a live portal: the id is ignored and the
# value added again as a new entry ("ignored").
FmIds = Literal["honoured", "ignored"]

CUSTOM_FIELD_TYPES = frozenset(
    {"string", "integer", "double", "boolean", "date", "datetime", "file", "money", "url"}
)


@dataclass(frozen=True, slots=True)
class CustomFieldSpec:
    """A custom (``UF_``) field: ``code`` is the part after the type's prefix.

    ``entity_type_id=None`` puts the field on every entity type. The full name
    is the type's prefix plus the code: ``UF_CRM_`` + ``1721244707107`` for a
    deal, ``UF_CRM_1_`` + ``1721244707107`` for the first smart process.
    """

    entity_type_id: int | None
    code: str
    type: str = "string"
    multiple: bool = False
    required: bool = False
    title: str = ""

    def __post_init__(self) -> None:
        if self.type not in CUSTOM_FIELD_TYPES:
            raise ValueError(f"unknown custom field type {self.type!r}")
        if not self.code or not all(c.isalnum() or c == "_" for c in self.code):
            raise ValueError(f"bad custom field code {self.code!r}")

    @classmethod
    def parse(cls, text: str) -> CustomFieldSpec:
        """Read ``ENTITY:CODE:TYPE[:multiple][:required]``; ENTITY is a type id or ``*``."""
        parts = text.strip().split(":")
        if len(parts) < 3:
            raise ValueError(f"expected ENTITY:CODE:TYPE[:multiple][:required], got {text!r}")
        entity, code, type_ = parts[0], parts[1].upper(), parts[2]
        flags = {p.lower() for p in parts[3:]}
        unknown = flags - {"multiple", "required"}
        if unknown:
            raise ValueError(f"unknown custom field flag(s) {sorted(unknown)}")
        return cls(
            entity_type_id=None if entity == "*" else int(entity),
            code=code,
            type=type_,
            multiple="multiple" in flags,
            required="required" in flags,
        )


DEFAULT_CUSTOM_FIELDS: tuple[CustomFieldSpec, ...] = (
    CustomFieldSpec(None, "1721244707107", "double", title="Budget"),
    CustomFieldSpec(None, "1721244707201", "string", title="Note"),
    CustomFieldSpec(None, "1721244707202", "string", multiple=True, title="Tags"),
    CustomFieldSpec(None, "1721244707203", "boolean", title="Approved"),
    CustomFieldSpec(None, "1721244707204", "date", title="Due date"),
    CustomFieldSpec(None, "1721244707205", "datetime", title="Checked at"),
    CustomFieldSpec(None, "1721244707206", "file", title="Contract"),
    CustomFieldSpec(None, "1721244707207", "file", multiple=True, title="Attachments"),
    CustomFieldSpec(None, "1721244707208", "integer", multiple=True, title="Linked ids"),
)


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Options of one sandbox portal; the defaults copy a standard cloud plan."""

    host: str = "127.0.0.1"
    port: int = 8085
    webhook_code: str = DEFAULT_WEBHOOK_CODE
    user_id: int = 1
    # request rate: a leaky bucket per portal
    rate_burst: int = 50
    rate_per_second: float = 2.0
    # operating time: per method, ten baskets over the window
    operating_limit_s: float = 480.0
    operating_window_s: float = 600.0
    operating_cost_s: float = 0.5
    # per method: a fixed cost in seconds, or an OperatingCost range drawn per call
    operating_costs: tuple[tuple[str, float | OperatingCost], ...] = ()
    operating_min_charge_s: float = 0.1
    limits_enabled: bool = True
    batch_charging: BatchCharging = "nested"
    batch_max_commands: int = 50
    list_page_size: int = 50
    # data
    seed_items: int = 10
    spa_types: tuple[int, ...] = (1032,)
    custom_fields: tuple[CustomFieldSpec, ...] = DEFAULT_CUSTOM_FIELDS
    utc_offset: str = "+03:00"
    fm_ids: FmIds = "honoured"
    # faults at start (all can be changed at run time over /_sandbox/faults)
    latency_ms: float = 0.0
    error_rate: float = 0.0
    random_seed: int | None = None
    require_https: bool = False
    # OAuth application
    client_id: str = "local.sandbox00000001.00000001"
    client_secret: str = "sandboxclientsecret0000000000000000000000000000000"  # noqa: S105
    # the portal's own id, as its install events and token answers give it; None: a
    # random one per portal (each of --portals N has its own)
    member_id: str | None = None
    access_token_ttl_s: float = 3600.0
    refresh_token_ttl_s: float = 28 * 86400.0
    # transport
    https: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    access_log: bool = False

    def __post_init__(self) -> None:
        if self.batch_charging not in get_args(BatchCharging):
            raise ValueError(
                f"batch_charging must be one of {get_args(BatchCharging)}, "
                f"not {self.batch_charging!r}"
            )
        if self.fm_ids not in get_args(FmIds):
            raise ValueError(f"fm_ids must be one of {get_args(FmIds)}, not {self.fm_ids!r}")

    def cost_of(self, method: str) -> OperatingCost:
        """The operating seconds one call of ``method`` is charged (a range when it varies)."""
        for name, cost in self.operating_costs:
            if name == method:
                return cost if isinstance(cost, OperatingCost) else OperatingCost.fixed(cost)
        return OperatingCost.fixed(self.operating_cost_s)

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"
