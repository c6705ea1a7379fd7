"""The portal's two limits: the request bucket and the per-method operating time."""

from sandbox.limits.bucket import LeakyBucket
from sandbox.limits.cost import OperatingCost
from sandbox.limits.operating import OperatingLedger

__all__ = ["LeakyBucket", "OperatingCost", "OperatingLedger"]
