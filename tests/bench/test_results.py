"""A benchmark's results: every run kept in its file, only the run just made printed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_a_run_is_added_to_its_file_and_only_that_run_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    harness = importlib.import_module("harness")
    harness.write_results("demo", ["first run: 1"], results=tmp_path)
    capsys.readouterr()

    path = harness.write_results("demo", ["second run: 2"], results=tmp_path)

    printed = capsys.readouterr().out
    assert printed.startswith("# demo, run ")
    assert "second run: 2" in printed
    assert "first run: 1" not in printed
    kept = path.read_text()
    assert kept.count("# demo, run ") == 2
    assert kept.index("first run: 1") < kept.index("second run: 2")
