"""The update worker: RabbitMQ in, Bitrix24 crm.item.update out, outcomes back."""

__all__ = ["__version__"]

# The one place the version is written: the distribution's metadata reads it
# (pyproject.toml), and `b24-worker --version` prints it. CHANGELOG.md says what
# each version changed.
__version__ = "0.2.0"
