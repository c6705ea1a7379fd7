"""Everything one sandbox portal holds, built from its configuration and a clock.

The HTTP layer (``app``), the method handlers and the control endpoint all
work on a ``PortalState``; nothing is global, so a test can run several
portals side by side.
"""

from __future__ import annotations

import pickle
import random
import secrets
from collections.abc import Iterator, Mapping

from sandbox.clock import Clock, SystemClock
from sandbox.config import SandboxConfig
from sandbox.counters import Counters
from sandbox.faults import Faults
from sandbox.items import WriteContext
from sandbox.limits import LeakyBucket, OperatingLedger
from sandbox.oauth import TokenStore
from sandbox.schema import EntitySchema, build_schemas
from sandbox.seed import seed_items
from sandbox.store import ItemStore
from sandbox.values import parse_offset

__all__ = ["PortalState"]


class PortalState:
    """One portal's data, limits, faults, counters and tokens.

    Portals started from one configuration may be made faster from what one
    of them has built: ``schemas``, the field definitions ``build_schemas(config)``
    makes, are read-only and may be shared; ``store``, the items and files to
    start with instead of seeding, must be the new portal's own copy (see
    ``seeded_copies``).
    """

    def __init__(
        self,
        config: SandboxConfig,
        clock: Clock | None = None,
        *,
        schemas: Mapping[int, EntitySchema] | None = None,
        store: ItemStore | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.tz = parse_offset(config.utc_offset)
        self.schemas: Mapping[int, EntitySchema] = (
            build_schemas(config) if schemas is None else schemas
        )
        self.rng = random.Random(config.random_seed)  # noqa: S311 - fault injection, not security
        # Costs drawn from a range have a source of their own (same seed): turning a
        # range on leaves the faults each request meets as they were.
        self.cost_rng = random.Random(config.random_seed)  # noqa: S311 - simulation only
        # The portal's own id, and the token its application was installed with.
        self.member_id = config.member_id or secrets.token_hex(16)
        self.application_token: str | None = None
        self.tokens = TokenStore(config, self.clock, member_id=self.member_id)
        self.limits_enabled = config.limits_enabled
        self.bucket = LeakyBucket(
            burst=config.rate_burst, drain_per_s=config.rate_per_second, clock=self.clock
        )
        self.operating = OperatingLedger(
            limit_s=config.operating_limit_s,
            window_s=config.operating_window_s,
            clock=self.clock,
            min_charge_s=config.operating_min_charge_s,
        )
        self.faults = Faults.from_config(config)
        self.counters = Counters()
        if store is None:
            self.store = ItemStore(list(self.schemas))
            self.seed(config.seed_items)
        else:
            self.store = store

    def seeded_copies(self) -> Iterator[ItemStore]:
        """Copies of the items and files as they are now, one for each portal to start
        from this one's seed. A pickled snapshot, made once, is several times faster to
        copy than seeding is to repeat."""
        snapshot = pickle.dumps(self.store, pickle.HIGHEST_PROTOCOL)
        while True:
            yield pickle.loads(snapshot)  # noqa: S301 - made just above, in this process

    def write_context(self, user_id: int, *, original_names: bool = False) -> WriteContext:
        return WriteContext(
            store=self.store,
            tz=self.tz,
            user_id=user_id,
            now=self.clock.time(),
            original_names=original_names,
            forbidden_stages=frozenset(self.faults.forbidden_stages),
            fm_ids_honoured=self.config.fm_ids == "honoured",
        )

    def seed(self, per_type: int) -> int:
        return seed_items(self.write_context(self.config.user_id), self.schemas, per_type)

    def reset(self, *, seed_items: int | None = None) -> None:
        """Back to the state right after start: data, counters, limits, faults and tokens."""
        self.store = ItemStore(list(self.schemas))
        self.counters = Counters()
        self.faults = Faults.from_config(self.config)
        self.bucket.reset()
        self.operating.reset()
        self.tokens.clear()
        self.application_token = None
        self.limits_enabled = self.config.limits_enabled
        self.rng.seed(self.config.random_seed)
        self.cost_rng.seed(self.config.random_seed)
        self.seed(self.config.seed_items if seed_items is None else seed_items)
