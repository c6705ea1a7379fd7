"""The lock files and the image: every declared dependency pinned, with hashes, inside
the range pyproject.toml declares; the sandbox's packages only where the sandbox is;
the image's base pinned by digest and its packages installed from the lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.test_deploy import dockerfile_lines, dockerfile_stages

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# Each lock, and the extras it is compiled with (`make lock`).
LOCKS = {
    "worker.txt": (),
    "image.txt": ("sandbox", "otel"),
    "dev.txt": ("sandbox", "otel", "test"),
}


def pins(lock: str) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of a lock file."""
    text = (ROOT / "requirements" / lock).read_text().replace("\\\n", " ")
    found: dict[str, tuple[Version, int]] = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)(.*)$", line.strip())
        if match:
            name, pinned, rest = match.groups()
            found[canonicalize_name(name)] = (Version(pinned), rest.count("--hash=sha256:"))
    return found


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    names = list(PROJECT["dependencies"])
    for extra in extras:
        names += PROJECT["optional-dependencies"][extra]
    return [Requirement(text) for text in names]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_declared_dependency_is_pinned_with_hashes_inside_its_range(lock: str) -> None:
    pinned = pins(lock)
    assert pinned, lock
    for requirement in declared(LOCKS[lock]):
        version, hashes = pinned[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
        assert hashes >= 1, requirement.name
    assert all(hashes >= 1 for _, hashes in pinned.values())


def test_the_worker_lock_has_nothing_only_the_sandbox_or_the_tests_need() -> None:
    worker = set(pins("worker.txt"))
    for extra in ("sandbox", "otel", "test"):
        for requirement in declared((extra,))[len(PROJECT["dependencies"]) :]:
            assert canonicalize_name(requirement.name) not in worker, requirement.name


def test_the_locks_agree_on_every_version_they_share() -> None:
    worker, image, dev = pins("worker.txt"), pins("image.txt"), pins("dev.txt")
    for name, (version, _) in worker.items():
        assert image[name][0] == version == dev[name][0], name
    for name, (version, _) in image.items():
        assert dev[name][0] == version, name


def test_the_image_base_is_pinned_by_digest_and_every_stage_uses_it() -> None:
    (arg,) = [line for line in dockerfile_lines() if line.startswith("ARG PYTHON_IMAGE=")]
    assert re.fullmatch(
        r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", arg
    ), arg
    froms = [stage[0].split()[1] for stage in dockerfile_stages()]
    assert len(froms) >= 2
    assert set(froms) == {"${PYTHON_IMAGE}"}


def test_the_image_installs_the_locked_packages_then_the_project_alone() -> None:
    final = dockerfile_stages()[-1]
    installs = [line for line in final if "pip install" in line]
    assert any("--require-hashes -r /tmp/requirements.txt" in line for line in installs)
    assert "COPY requirements/image.txt /tmp/requirements.txt" in final
    assert any("--no-deps /wheels/" in line for line in installs)


def test_the_import_linter_has_a_lock_of_its_own_and_its_rich_stays_out_of_the_others() -> None:
    """import-linter runs from .venv/lint: its `rich`, which httpx and structlog import
    whenever it is installed, is then in no environment the worker or the tests run in."""
    lint = pins("lint.txt")
    source = (ROOT / "requirements" / "lint.in").read_text().splitlines()
    (line,) = [line for line in source if line.strip() and not line.startswith("#")]
    requirement = Requirement(line)
    version, _ = lint[canonicalize_name(requirement.name)]
    assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
    assert all(hashes >= 1 for _, hashes in lint.values())
    assert "rich" in lint
    for lock in LOCKS:
        assert "rich" not in pins(lock), lock
