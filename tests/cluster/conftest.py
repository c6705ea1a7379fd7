"""One 3-node cluster for the package's tests, started once.

Starting one takes 14 s here; the tests share it, each given every node
running (`cluster`), and test_teardown.py, whose name pytest runs last, takes
it down and checks that nothing is left. It is down at the package's end
whatever happens."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster


@pytest.fixture(scope="package")
def started() -> Iterator[Cluster]:
    """One cluster for the package, in a directory of its own; down() whatever happens."""
    cluster = Cluster(tempfile.mkdtemp(prefix="b24-cluster-test-"))
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def cluster(started: Cluster) -> Cluster:
    """The package's cluster with every node running, whatever an earlier test left."""
    if not (started.base_dir / "cluster.json").exists():
        started.up()
    for i in range(started.size):
        if i not in started.running():
            started.start_node(i)
    return started
