"""The tests' choice of broker and Redis (tests/services.py)."""

from __future__ import annotations

import pytest

from tests.services import choose, docker_runs


@pytest.mark.parametrize(
    ("answers", "docker", "ci", "chosen"),
    [
        (True, True, True, "local"),
        (True, False, False, "local"),
        (False, True, False, "container"),
        (False, True, True, "container"),
        (False, False, True, "fail"),
        (False, False, False, "skip"),
    ],
)
def test_a_service_that_answers_wins_then_docker_then_ci_decides(
    answers: bool, docker: bool, ci: bool, chosen: str
) -> None:
    assert choose(answers=answers, docker=docker, ci=ci) == chosen


def test_docker_host_counts_as_a_docker_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert docker_runs()
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert not docker_runs()
