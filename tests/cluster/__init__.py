"""A RabbitMQ cluster started on this machine for tests: see harness.py."""
