"""Bulk jobs: commands published under one job id, followed as one.

`open_jobs(settings)` opens the store (beside the registry: its SQLite file,
or LIMITER_URL's Redis); `JobLedger` is the worker's side of it.
"""

from worker.bulk.ledger import JobLedger
from worker.bulk.store import JobState, JobStore, JobStoreError, open_jobs

__all__ = ["JobLedger", "JobState", "JobStore", "JobStoreError", "open_jobs"]
