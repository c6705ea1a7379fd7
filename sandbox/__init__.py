"""A local Bitrix24 portal for demos, load tests and CI (a real HTTP server)."""

__all__: list[str] = []
