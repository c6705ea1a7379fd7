"""`b24-worker` as a producer's developer and an operator use it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("event", ["success", "failure"])
def test_schema_prints_event_schemas(event: str) -> None:
    result = cli("schema", "--event", event)
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert f'"{event[:4]}' in json.dumps(schema["properties"]["status"])


def test_schema_writes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "command.json"
    assert cli("schema", "-o", str(target)).returncode == 0
    assert json.loads(target.read_text())["title"] == "crm.item.update command"


def test_validate_accepts_the_sample_commands() -> None:
    result = cli("validate", str(EXAMPLES / "commands.jsonl"))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[-1] == "8 valid, 0 invalid"
    assert "ignored (not fields of this type): Title, comment" in result.stdout


def test_validate_reports_each_invalid_line_and_fails() -> None:
    result = cli("validate", "--quiet", str(EXAMPLES / "invalid-commands.jsonl"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "0 valid, 7 invalid"
    assert lines[0].endswith(
        ':1: INVALID fields.opened: expected "Y" or "N" (or true/false); '
        'the portal would store anything else, 1 and "1" included, as "N" (given 1)'
    )
    assert "0123456789abcdef" not in result.stdout  # the auth value is not echoed


def test_validate_reads_stdin() -> None:
    result = cli("validate", "-", stdin='{"entityTypeId":2,"id":1,"fields":{"title":"x"}}\n\n')
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "-:1: ok entityTypeId=2 id=1 fields=1",
        "1 valid, 0 invalid",
    ]


def test_validate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_run_with_bad_configuration_says_what_to_fix() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "B24_WEBHOOK_URL": "http://portal.example.com/rest/1/Abcdef123456/",
        },
        check=False,
    )
    assert result.returncode == 2
    assert "B24_ALLOW_HTTP" in result.stderr
    assert "Abcdef123456" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("path", "args"),
    [
        ("update-command.schema.json", ()),
        ("success-event.schema.json", ("--event", "success")),
        ("failure-event.schema.json", ("--event", "failure")),
        ("asyncapi.json", ("--asyncapi",)),
    ],
)
def test_committed_schemas_match_the_models(path: str, args: tuple[str, ...]) -> None:
    committed = (EXAMPLES.parent / "docs" / "contract" / path).read_text(encoding="utf-8")
    assert cli("schema", *args).stdout == committed, f"regenerate docs/contract/{path}"


def test_sandbox_subcommand_serves_a_portal_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    portal = subprocess.Popen(
        [sys.executable, "-m", "worker", "sandbox", "--port", str(port), "--seed", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert portal.stdout is not None
        banner = portal.stdout.readline() + portal.stdout.readline()
        webhook = banner.split("webhook URL: ")[1].strip()
        for _ in range(100):
            try:
                answer = httpx.post(
                    webhook + "crm.item.get.json", json={"entityTypeId": 2, "id": 1}
                )
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert answer.status_code == 200
        assert answer.json()["result"]["item"]["id"] == 1
        portal.send_signal(signal.SIGTERM)
        assert portal.wait(timeout=20) == 0
    finally:
        portal.kill()


_RUN_AND_LIST_MODULES = """
import sys
import worker.runtime.app as app

async def started(settings):  # the worker as `run` builds it, without a broker
    app.Worker(settings)
    return 0

app.run = started
from worker.cli import main
from worker.client import UpdateClient
assert main(["run"]) == 0
print("\\n".join(sorted(sys.modules)))
"""


def _modules_loaded_by_run() -> set[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "B24_WEBHOOK_URL": "https://portal.example/rest/1/abcdef123456/",
        "HTTP_PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_MODULES],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "worker.runtime.lanes" in loaded  # the run path was really imported
    return loaded


def test_run_and_the_client_load_nothing_of_the_sandbox() -> None:
    """`b24-worker run` goes from the command line to a built Worker, and UpdateClient is
    imported, without loading the sandbox package. (Its extra's packages may load here
    when installed; that the worker runs without them is tests/deploy/test_install.py's.)"""
    loaded = _modules_loaded_by_run()
    assert {name for name in loaded if name.split(".")[0] == "sandbox"} == set()


def test_run_without_limiter_url_loads_no_redis_client() -> None:
    """The Redis client (and what it loads, cryptography when installed) is 40 ms of
    every start: only a worker with LIMITER_URL loads it."""
    loaded = _modules_loaded_by_run()
    assert {name for name in loaded if name.split(".")[0] == "redis"} == set()


def test_the_sandbox_command_is_named_in_the_help_and_takes_its_own_options() -> None:
    listed = cli("--help")
    assert "sandbox" in listed.stdout
    own = cli("sandbox", "--help")
    assert own.returncode == 0
    assert own.stdout.startswith("usage: b24-worker sandbox")
    assert "--rate-burst" in own.stdout
