"""The settings as users meet them: README's table and `run --help` from the model, a
.env file, and one-line errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.settings_table import README, TABLE
from worker.settings import ConfigError, Settings, load_settings, reference, reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_says_what_it_means() -> None:
    for name, _default, meaning in reference():
        assert meaning.strip(), name


def test_readmes_table_is_the_models() -> None:
    [table] = TABLE.findall(README.read_text())
    assert table == reference_markdown()
    assert len(table.splitlines()) == 2 + len(Settings.model_fields)


def test_run_help_lists_every_setting_with_its_default_and_meaning() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    flat = " ".join(shown.split())
    for name, default, meaning in reference():
        assert f"{name} (default: {default})" in flat, name
        assert " ".join(meaning.replace("`", "").split()) in flat, name


def cli(command: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", command],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("5,abc", "'abc' is not a whole number of seconds"),
        ("5,,30", "'' is not a whole number of seconds"),
        ("0", "greater than or equal to 1"),
        ("5,100000", "less than or equal to 86400"),
    ],
)
def test_a_bad_retry_delay_is_a_one_line_error_naming_the_variable(value: str, says: str) -> None:
    env = {"RETRY_DELAYS_S": value, "ENV_FILE": ""}
    run = cli("run", env)
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert "RETRY_DELAYS_S" in line
    assert says in line
    check = cli("check", env)
    assert check.returncode == 1
    assert "Traceback" not in check.stderr
    [problem] = [line for line in check.stdout.splitlines() if line.startswith("PROBLEM setting")]
    assert "RETRY_DELAYS_S" in problem
    assert says in problem


def test_retry_delays_are_read_as_a_list_of_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_DELAYS_S", " 1, 10 ,60")
    assert load_settings().RETRY_DELAYS_S == (1, 10, 60)
    assert load_settings().topology().retry_delays_s == (1, 10, 60)


def test_a_dot_env_file_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("UPDATE_QUEUE=from.dotenv\nPREFETCH=42\n# a comment\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENV_FILE")
    monkeypatch.delenv("UPDATE_QUEUE", raising=False)
    monkeypatch.setenv("PREFETCH", "7")  # the environment wins over the file
    settings = load_settings()
    assert (settings.UPDATE_QUEUE, settings.PREFETCH) == ("from.dotenv", 7)


def test_env_file_names_another_file_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("UPDATE_QUEUE=from.dotenv\n")
    (tmp_path / "worker.env").write_text("UPDATE_QUEUE=from.named\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UPDATE_QUEUE", raising=False)
    monkeypatch.setenv("ENV_FILE", str(tmp_path / "worker.env"))
    assert load_settings().UPDATE_QUEUE == "from.named"
    monkeypatch.setenv("ENV_FILE", "")
    assert Settings.model_fields["UPDATE_QUEUE"].default == load_settings().UPDATE_QUEUE
    monkeypatch.setenv("ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(ConfigError, match=r"ENV_FILE .*missing\.env: no such file"):
        load_settings()


def test_a_bad_value_in_the_dot_env_file_names_the_variable_and_hides_secrets(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("RETRY_DELAYS_S=5,x\n")
    result = cli("run", {}, cwd=tmp_path)
    assert result.returncode == 2
    assert "RETRY_DELAYS_S: 'x' is not a whole number" in result.stderr
    (tmp_path / ".env").write_text(
        "B24_WEBHOOK_URL=http://portal.example.com/rest/1/Abcdef123456/\n"
    )
    result = cli("run", {}, cwd=tmp_path)
    assert result.returncode == 2
    assert "B24_ALLOW_HTTP" in result.stderr
    assert "Abcdef123456" not in result.stderr + result.stdout
