"""The environment a test gives a process it starts: this one's, without any of the
worker's or the sandbox's own settings, so that nothing set outside the test (SHARDS,
PREFETCH, MAX_ATTEMPTS, a portal, a sandbox option) changes what the test runs."""

from __future__ import annotations

import os

from worker.settings import Settings

__all__ = ["clean_env"]

_SETTINGS = frozenset(Settings.model_fields)


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment less every worker and sandbox setting, plus ``values``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _SETTINGS and not name.startswith(("B24_", "SANDBOX_"))
    }
    env.update(values)
    return env
