"""Logs, metrics and health endpoints of the worker."""

from worker.observability.logging import configure_logging

__all__ = ["configure_logging"]
