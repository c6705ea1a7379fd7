"""The CRM entity types the sandbox knows, with their pipelines (categories and stages).

Lead 1, deal 2, contact 3, company 4, quote 7, smart invoice 31, and the smart
processes (SPA) named in the configuration. Stage ids follow the portal's
spelling: ``NEW`` and ``C9:NEW`` for deals, ``DT1032_10:NEW`` for an SPA,
``DT31_13:N`` for smart invoices.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Category",
    "EntityType",
    "Stage",
    "build_entity_types",
    "is_spa_id",
]


@dataclass(frozen=True, slots=True)
class Stage:
    id: str
    name: str
    semantic: str  # P in progress, S success, F failure


@dataclass(frozen=True, slots=True)
class Category:
    id: int
    name: str
    stages: tuple[Stage, ...]

    def has_stage(self, stage_id: str) -> bool:
        return any(s.id == stage_id for s in self.stages)

    def stage(self, stage_id: str) -> Stage | None:
        return next((s for s in self.stages if s.id == stage_id), None)


@dataclass(frozen=True, slots=True)
class EntityType:
    id: int
    title: str
    uf_prefix: str
    camel_uf_prefix: str
    categories: tuple[Category, ...] = ()
    category_field: bool = False  # categoryId can be chosen (deals, SPA)
    has_fm: bool = False
    is_dynamic: bool = False  # SPA and smart invoice: the plan may forbid editing them

    @property
    def has_stages(self) -> bool:
        return bool(self.categories)

    def category(self, category_id: int) -> Category | None:
        return next((c for c in self.categories if c.id == category_id), None)

    @property
    def default_category(self) -> Category | None:
        return self.categories[0] if self.categories else None


def is_spa_id(entity_type_id: int) -> bool:
    """Smart processes use 128-192, or an even number from 1030 up."""
    return 128 <= entity_type_id <= 192 or (entity_type_id >= 1030 and entity_type_id % 2 == 0)


def _stages(prefix: str, spec: str) -> tuple[Stage, ...]:
    out = []
    for token in spec.split():
        code, semantic = token.split("/")
        out.append(
            Stage(id=f"{prefix}{code}", name=code.replace("_", " ").title(), semantic=semantic)
        )
    return tuple(out)


_DEAL_STAGES = "NEW/P PREPARATION/P PREPAYMENT_INVOICE/P EXECUTING/P FINAL_INVOICE/P WON/S LOSE/F"
_DEAL_9_STAGES = "NEW/P PREPARATION/P UC_NYL06U/P WON/S LOSE/F"
_SPA_STAGES = "NEW/P PREPARATION/P CLIENT/P SUCCESS/S FAIL/F"


def _standard() -> list[EntityType]:
    return [
        EntityType(
            id=1,
            title="Lead",
            uf_prefix="UF_CRM_",
            camel_uf_prefix="ufCrm",
            categories=(
                Category(
                    0, "Leads", _stages("", "NEW/P IN_PROCESS/P PROCESSED/P JUNK/F CONVERTED/S")
                ),
            ),
            has_fm=True,
        ),
        EntityType(
            id=2,
            title="Deal",
            uf_prefix="UF_CRM_",
            camel_uf_prefix="ufCrm",
            categories=(
                Category(0, "General", _stages("", _DEAL_STAGES)),
                Category(9, "Partners", _stages("C9:", _DEAL_9_STAGES)),
            ),
            category_field=True,
        ),
        EntityType(
            id=3, title="Contact", uf_prefix="UF_CRM_", camel_uf_prefix="ufCrm", has_fm=True
        ),
        EntityType(
            id=4, title="Company", uf_prefix="UF_CRM_", camel_uf_prefix="ufCrm", has_fm=True
        ),
        EntityType(
            id=7,
            title="Estimate",
            uf_prefix="UF_CRM_",
            camel_uf_prefix="ufCrm",
            categories=(
                Category(
                    0, "Estimates", _stages("", "DRAFT/P SENT/P RECEIVED/P APPROVED/S DECLAINED/F")
                ),
            ),
        ),
        EntityType(
            id=31,
            title="Invoice",
            uf_prefix="UF_CRM_SMART_INVOICE_",
            camel_uf_prefix="ufCrmSmartInvoice",
            categories=(Category(13, "Invoices", _stages("DT31_13:", "N/P S/P P/S D/F")),),
            is_dynamic=True,
        ),
    ]


def _spa(entity_type_id: int, index: int) -> EntityType:
    first, second = 10 + 2 * index, 11 + 2 * index
    return EntityType(
        id=entity_type_id,
        title=f"Smart process {entity_type_id}",
        uf_prefix=f"UF_CRM_{index + 1}_",
        camel_uf_prefix=f"ufCrm{index + 1}",
        categories=(
            Category(first, "General", _stages(f"DT{entity_type_id}_{first}:", _SPA_STAGES)),
            Category(second, "Second", _stages(f"DT{entity_type_id}_{second}:", _SPA_STAGES)),
        ),
        category_field=True,
        is_dynamic=True,
    )


def build_entity_types(spa_types: tuple[int, ...]) -> dict[int, EntityType]:
    """Every entity type of the portal by id; SPA ids must satisfy ``is_spa_id``."""
    types = {t.id: t for t in _standard()}
    for index, type_id in enumerate(spa_types):
        if not is_spa_id(type_id):
            raise ValueError(f"{type_id} is not a smart process id (128-192 or even >= 1030)")
        types[type_id] = _spa(type_id, index)
    return types
