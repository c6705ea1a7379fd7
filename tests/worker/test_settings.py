"""Settings: defaults, the portal rules, and secrets that never show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from worker.settings import ConfigError, Settings, load_settings, redact_url

WEBHOOK = "https://portal.example.com/rest/1/s3cr3tW3bh00kC0de/"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.AMQP_URL.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert (settings.B24_RATE_PER_SECOND, settings.B24_RATE_BURST) == (2.0, 50)
    assert (settings.B24_OPERATING_LIMIT_S, settings.B24_OPERATING_WINDOW_S) == (480.0, 600.0)
    assert settings.BATCH_SIZE == 50
    assert (settings.UPDATE_QUEUE, settings.RESULT_QUEUE, settings.DEAD_LETTER_QUEUE) == (
        "crm.item.update",
        "crm.item.update.result",
        "crm.item.update.dead",
    )
    assert settings.LIMITER_URL.get_secret_value() == ""
    assert not settings.has_portal


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SIZE", "1")
    monkeypatch.setenv("PREFETCH", "50")
    monkeypatch.setenv("B24_WEBHOOK_URL", WEBHOOK)
    settings = load_settings()
    assert (settings.BATCH_SIZE, settings.PREFETCH) == (1, 50)
    assert settings.has_portal


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BATCH_SIZE", "51", "BATCH_SIZE"),
        ("PREFETCH", "lots", "PREFETCH"),
        (
            "B24_WEBHOOK_URL",
            "http://portal.example.com/rest/1/s3cr3tW3bh00kC0de/",
            "B24_ALLOW_HTTP",
        ),
        (
            "B24_WEBHOOK_URL",
            "https://portal.example.com/s3cr3tW3bh00kC0de",
            "/rest/<user_id>/<code>/",
        ),
        ("B24_PORTAL_URL", "https://portal.example.com", "OAuth needs all of"),
    ],
)
def test_bad_values_are_explained_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert says in str(caught.value)
    assert "s3cr3tW3bh00kC0de" not in str(caught.value)


def test_webhook_and_oauth_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24_WEBHOOK_URL", WEBHOOK)
    monkeypatch.setenv("B24_CLIENT_ID", "app.1")
    with pytest.raises(ConfigError, match="not both"):
        load_settings()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8085/rest/1/code/",
        "http://localhost/rest/1/code/",
        "http://[::1]:80/rest/1/c/",
    ],
)
def test_plain_http_is_allowed_to_loopback(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("B24_WEBHOOK_URL", url)
    assert load_settings().has_portal


def test_plain_http_elsewhere_needs_the_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24_WEBHOOK_URL", "http://sandbox:8085/rest/1/code/")
    with pytest.raises(ConfigError):
        load_settings()
    monkeypatch.setenv("B24_ALLOW_HTTP", "true")
    assert load_settings().has_portal


def test_describe_masks_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://app:Amqp-Pa55word@broker:5672/vhost")
    monkeypatch.setenv("B24_PORTAL_URL", "https://portal.example.com")
    monkeypatch.setenv("B24_CLIENT_ID", "local.app")
    monkeypatch.setenv("B24_CLIENT_SECRET", "Cl1entSecretValue")
    monkeypatch.setenv("B24_REFRESH_TOKEN", "RefreshTokenValue1")
    monkeypatch.setenv("LIMITER_URL", "redis://:Redis-Pa55@127.0.0.1:6379/0")
    settings = load_settings()
    shown = repr(settings.describe()) + repr(settings)
    for secret in ("Amqp-Pa55word", "Cl1entSecretValue", "RefreshTokenValue1", "Redis-Pa55"):
        assert secret not in shown
    assert settings.describe()["AMQP_URL"] == "amqp://app:***@broker:5672/vhost"


def test_redact_url_hides_the_webhook_code() -> None:
    assert redact_url(WEBHOOK) == "https://portal.example.com/rest/1/***/"


def test_amqp_url_may_list_a_clusters_nodes_and_each_password_is_a_secret() -> None:
    nodes = "amqp://u:pw-one@rmq-0:5672/, amqp://u:pw-two@rmq-1:5672/"
    settings = Settings(AMQP_URL=nodes)
    assert {"pw-one", "pw-two"} <= set(settings.secrets())
    shown = str(settings.describe()["AMQP_URL"])
    assert shown == "amqp://u:***@rmq-0:5672/,amqp://u:***@rmq-1:5672/"


def test_an_amqp_url_list_with_a_bad_entry_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://u:secretpw@rmq-0/,rmq-1:5672")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "entry 2 of AMQP_URL" in str(caught.value)
    assert "secretpw" not in str(caught.value)


PORTAL_WEBHOOK = "https://{key}.example.com/rest/1/code{n:012d}/"


def _portal_entries(count: int) -> dict[str, dict[str, str]]:
    return {f"p{n}": {"webhook_url": PORTAL_WEBHOOK.format(key=f"p{n}", n=n)} for n in range(count)}


def test_portals_come_from_a_json_or_a_toml_file(tmp_path: Path) -> None:
    entries = _portal_entries(2)
    json_file = tmp_path / "portals.json"
    json_file.write_text(json.dumps(entries))
    toml_file = tmp_path / "portals.toml"
    toml_file.write_text(
        "".join(f'[{key}]\nwebhook_url = "{e["webhook_url"]}"\n' for key, e in entries.items())
    )
    for path in (json_file, toml_file):
        settings = Settings(B24_PORTALS_FILE=str(path))
        assert sorted(settings.portals()) == ["p0", "p1"]
        assert "code000000000001" in settings.secrets()
        assert "code000000000001" not in json.dumps(settings.describe())


@pytest.mark.parametrize(
    ("burst", "rate", "reserve", "prefetch"),
    [
        (10, 2.0, 0, 4 * 50),  # 2 s at 2 a second; the burst is spent as calls come back
        (10, 2.0, 4, 4 * 50),  # neither burst nor reserve changes it
        (50, 2.0, 0, 4 * 50),
        (2, 0.1, 0, 1 * 50),  # one call: refilled long before the next is due
        (5, 1.0, 0, 2 * 50),
        (250, 5.0, 0, 10 * 50),
        (250, 60.0, 0, 5000),  # at most 5,000
    ],
)
def test_a_portal_queues_prefetch_covers_2_s_of_its_rate(
    burst: int, rate: float, reserve: int, prefetch: int
) -> None:
    entries = {
        "p": {
            "webhook_url": PORTAL_WEBHOOK.format(key="p", n=1),
            "rate_burst": burst,
            "rate_per_second": rate,
            "rate_reserve": reserve,
        }
    }
    settings = Settings(B24_PORTALS=entries, BATCH_SIZE=50)
    assert settings.portal_prefetch(settings.portals()["p"]) == prefetch


def test_a_thousand_portals_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "portals.json"
    path.write_text(json.dumps(_portal_entries(1000)))
    assert len(path.read_bytes()) > 64 * 1024  # more than fits comfortably in one variable
    assert len(Settings(B24_PORTALS_FILE=str(path)).portals()) == 1000


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("portals.json", '{"p0": {"webhook_url": "https://x/rest/1/secretcode0001/"', "at line 1"),
        (
            "portals.toml",
            'p0 = {webhook_url = "https://x/rest/1/secretcode0001/"',
            "not valid TOML",
        ),
        ("portals.json", '["https://x/rest/1/secretcode0001/"]', "an object of portals"),
        ("portals.yaml", "p0: {}", "a .json or a .toml file"),
        ("absent.json", None, "cannot read it"),
    ],
)
def test_a_portals_file_that_cannot_be_used_is_named_without_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("B24_PORTALS_FILE", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "secretcode0001" not in str(caught.value)


def test_b24_portals_and_a_portals_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "portals.json"
    path.write_text(json.dumps(_portal_entries(1)))
    monkeypatch.setenv("B24_PORTALS_FILE", str(path))
    monkeypatch.setenv("B24_PORTALS", json.dumps(_portal_entries(1)))
    with pytest.raises(ConfigError, match="not both"):
        load_settings()


@pytest.mark.parametrize(
    ("portals", "problem"),
    [
        (
            {
                "a": {"webhook_url": "https://a.example.com/rest/1/c0de01/", "member_id": "m1"},
                "b": {"webhook_url": "https://b.example.com/rest/1/c0de02/", "member_id": "m1"},
            },
            "portals a and b have the same member_id",
        ),
        (
            {
                "a": {"webhook_url": "https://a.example.com/rest/1/c0de01/", "member_id": "b"},
                "b": {"webhook_url": "https://b.example.com/rest/1/c0de02/"},
            },
            "portal a: its member_id is the key of portal b",
        ),
        (
            {"a": {"webhook_url": "https://a.example.com/rest/1/c0de01/", "member_id": "Not Ok"}},
            r"B24_PORTALS\[a\].member_id: use 1-63",
        ),
    ],
)
def test_a_member_id_must_name_one_portal(portals: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(B24_PORTALS=portals)


def test_member_ids_are_second_names_of_portal_queues() -> None:
    settings = Settings(
        B24_PORTALS={
            "a": {"webhook_url": "https://a.example.com/rest/1/c0de01/", "member_id": "m1"},
            "b": {"webhook_url": "https://b.example.com/rest/1/c0de02/"},
        }
    )
    assert settings.topology().aliases == (("m1", "a"),)
    assert settings.portals()["a"].identity == "m1"
    assert settings.portals()["b"].identity == "b.example.com"


def test_the_install_endpoint_needs_the_registry_and_the_application() -> None:
    with pytest.raises(
        ValidationError,
        match="INSTALL_PORT needs REGISTRY_KEY, B24_APP_CLIENT_ID, B24_APP_CLIENT_SECRET",
    ):
        Settings(INSTALL_PORT=8090)
    with pytest.raises(ValidationError, match="INSTALL_PORT and HTTP_PORT must differ"):
        Settings(
            INSTALL_PORT=8080,
            REGISTRY_KEY="k",
            B24_APP_CLIENT_ID="app.1",
            B24_APP_CLIENT_SECRET="s3cret-app",
        )
    ready = Settings(
        INSTALL_PORT=8090,
        REGISTRY_KEY="k",
        B24_APP_CLIENT_ID="app.1",
        B24_APP_CLIENT_SECRET="s3cret-app",
    )
    assert ready.has_portal  # portals come with their installs
    assert "s3cret-app" in ready.secrets()
