"""What a user of the distribution expects around the code: one version, the licence
the metadata declares, and a changelog that covers the version."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from worker import __version__

ROOT = Path(__file__).resolve().parents[2]


def project() -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return table


def test_the_version_has_one_source() -> None:
    assert "version" not in project()
    assert project()["dynamic"] == ["version"]
    assert importlib.metadata.version("b24-update-worker") == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_the_command_prints_the_version() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "worker", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert shown.strip() == f"b24-worker {__version__} (b24-update-worker)"


def test_the_licence_file_is_the_declared_licence() -> None:
    assert project()["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in project()["classifiers"]  # type: ignore[operator]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_the_changelog_has_an_entry_for_this_version() -> None:
    headings = re.findall(r"^## (\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == __version__
