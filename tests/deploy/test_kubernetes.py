"""The Kubernetes manifests under deploy/kubernetes, held to the worker's settings."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.manifests import (
    default_of,
    is_secret_setting,
    kubernetes_documents,
    kubernetes_objects,
    kustomization,
    settings_from_env,
)
from worker.settings import Settings

KINDS = {
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "ScaledObject",
    "TriggerAuthentication",
}
# Deliberately not at its default: the root filesystem is read-only, so the token
# file moves onto a mounted volume.
MOVED_SETTINGS = {"B24_TOKEN_FILE", "REGISTRY_PATH"}


def objects() -> dict[str, dict[str, Any]]:
    return kubernetes_objects()


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = objects()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    found: dict[str, Any] = only
    return found


def config() -> dict[str, str]:
    data: dict[str, str] = objects()["ConfigMap"]["data"]
    return data


def secret() -> dict[str, str]:
    data: dict[str, str] = objects()["Secret"]["stringData"]
    return data


def container_port(port: int | str) -> int:
    """A probe's or a Service's port (a name or a number) as the container's number."""
    for declared in container()["ports"]:
        if port in (declared["name"], declared["containerPort"]):
            number: int = declared["containerPort"]
            return number
    raise AssertionError(f"port {port!r} is not a port of the container")


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    assert sorted(kustomization()["resources"]) == sorted(kubernetes_documents())


def test_every_kind_is_there_and_no_manifest_names_a_namespace() -> None:
    assert set(objects()) == KINDS
    for kind, manifest in objects().items():
        assert "namespace" not in manifest["metadata"], kind
        assert manifest["kind"] != "Namespace"


def test_probes_use_the_health_paths_on_the_worker_http_port() -> None:
    worker = container()
    http_port = default_of("HTTP_PORT")
    assert int(config()["HTTP_PORT"]) == http_port
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container_port(worker[probe]["httpGet"]["port"]) == http_port, probe
    annotations = objects()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == http_port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_pod_runs_non_root_with_requests_and_limits() -> None:
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    own = container()["securityContext"]
    assert own["allowPrivilegeEscalation"] is False
    assert own["readOnlyRootFilesystem"] is True
    assert own["capabilities"]["drop"] == ["ALL"]
    resources = container()["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) == {"cpu", "memory"}, bound


def test_the_grace_period_outlasts_the_drain() -> None:
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace > float(config()["DRAIN_TIMEOUT_S"])
    assert grace > default_of("DRAIN_TIMEOUT_S")


def test_a_rollout_never_adds_a_pacer() -> None:
    """The old pod drains first, so one replica without LIMITER_URL stays within the limits."""
    rolling = objects()["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxSurge"] == 0


def test_replicas_spread_over_nodes() -> None:
    labels = objects()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    (spread,) = pod_spec()["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    # A soft spread: a one-node cluster still runs every replica.
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"


def test_configmap_holds_every_plain_setting_at_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = config()
    assert set(data) <= set(Settings.model_fields), set(data) - set(Settings.model_fields)
    assert not [name for name in data if is_secret_setting(name)]
    wanted = {
        name
        for name in Settings.model_fields
        if not is_secret_setting(name) and default_of(name) is not None
    }
    assert wanted <= set(data), wanted - set(data)
    parsed = settings_from_env(data, monkeypatch)
    for name in set(data) - MOVED_SETTINGS:
        assert getattr(parsed, name) == default_of(name), name


def test_the_moved_token_file_is_on_a_mounted_volume() -> None:
    folder = PurePosixPath(config()["B24_TOKEN_FILE"]).parent
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    assert str(folder) in mounts
    assert mounts[str(folder)] in {volume["name"] for volume in pod_spec()["volumes"]}


def test_secret_holds_secret_settings_as_placeholders_only() -> None:
    data = secret()
    assert {"AMQP_URL", "B24_WEBHOOK_URL", "B24_PORTALS", "LIMITER_URL"} <= set(data)
    assert all(is_secret_setting(name) for name in data), data.keys()
    for name, value in data.items():
        parts = urlsplit(value)
        if parts.password is not None:
            assert parts.password == "CHANGE_ME", name
    assert urlsplit(data["B24_WEBHOOK_URL"]).path.split("/")[3] == "CHANGE_ME"
    for key, portal in json.loads(data["B24_PORTALS"]).items():
        for field in ("webhook_url", "client_secret", "refresh_token"):
            if field in portal:
                assert "CHANGE_ME" in portal[field], (key, field)


def test_the_configmap_and_secret_together_are_a_valid_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from_env({**config(), **secret()}, monkeypatch)
    assert settings.has_portal
    assert settings.B24_DEFAULT_PORTAL in settings.portals()


def test_the_pod_reads_its_settings_from_the_configmap_and_the_secret() -> None:
    sources = container()["envFrom"]
    assert {"configMapRef": {"name": objects()["ConfigMap"]["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": objects()["Secret"]["metadata"]["name"]}} in sources
    assert container()["args"] == ["run"]


def test_service_and_budget_select_the_worker_pods() -> None:
    labels = objects()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objects()["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert container_port(port["targetPort"]) == default_of("HTTP_PORT")
    budget = objects()["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    # minAvailable with one replica would block every node drain.
    assert "minAvailable" not in budget


def test_unsharded_keda_scales_the_worker_on_the_update_queue() -> None:
    """Without shards the backlog is in UPDATE_QUEUE, read over AMQP (ready messages)."""
    assert int(config()["SHARDS"]) == 0
    scaled = objects()["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == objects()["Deployment"]["metadata"]["name"]
    (trigger,) = scaled["triggers"]
    assert trigger["metadata"]["protocol"] == "amqp"
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == default_of("UPDATE_QUEUE")
    assert trigger["metadata"]["queueName"] == config()["UPDATE_QUEUE"]
    assert trigger["metadata"]["mode"] == "QueueLength"
    auth = objects()["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (reference,) = auth["spec"]["secretTargetRef"]
    assert reference == {
        "parameter": "host",
        "name": objects()["Secret"]["metadata"]["name"],
        "key": "AMQP_URL",
    }


def test_keda_always_keeps_a_worker_for_the_retry_and_poison_queues() -> None:
    assert objects()["ScaledObject"]["spec"]["minReplicaCount"] >= 1


def test_more_than_one_replica_only_with_a_shared_limiter() -> None:
    replicas = max(
        objects()["ScaledObject"]["spec"]["maxReplicaCount"],
        objects()["Deployment"]["spec"]["replicas"],
    )
    if replicas > 1:
        assert secret()["LIMITER_URL"].startswith(("redis://", "rediss://"))


def test_keda_scales_out_now_that_the_limiter_is_shared() -> None:
    scaled = objects()["ScaledObject"]["spec"]
    assert scaled["maxReplicaCount"] > scaled["minReplicaCount"]
    assert scaled["maxReplicaCount"] > 1
