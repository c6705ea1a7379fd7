"""A 3-node cluster of the test module's own, started once per module."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster


@pytest.fixture(scope="module")
def started() -> Iterator[Cluster]:
    """One cluster for the module, in a directory of its own; down() whatever happens."""
    cluster = Cluster(tempfile.mkdtemp(prefix="b24-cluster-test-"))
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def cluster(started: Cluster) -> Cluster:
    """The module's cluster with every node running, whatever a failed test left."""
    if not (started.base_dir / "cluster.json").exists():
        started.up()
    for i in range(started.size):
        if i not in started.running():
            started.start_node(i)
    return started
