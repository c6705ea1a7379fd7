"""deploy/kubernetes/sharded: the component that turns on SHARDS and points KEDA at the shards.

The component is applied here as kustomize applies it to custom resources and
to a ConfigMap's data: its resources are added and each patch is a JSON merge
patch (RFC 7386) on the object of the same kind and name.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from tests.deploy.manifests import (
    KUBERNETES,
    kubernetes_documents,
    kubernetes_objects,
    kustomization,
    settings_from_env,
)

SHARDED = KUBERNETES / "sharded"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge key by key, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def sharded_objects() -> dict[str, dict[str, Any]]:
    """The base objects with the component applied, by kind (each kind once, Secrets by name)."""
    component = kustomization(SHARDED)
    objects = {kind: copy.deepcopy(manifest) for kind, manifest in kubernetes_objects().items()}
    for resource in component["resources"]:
        added = load(SHARDED / resource)
        objects[f"{added['kind']}/{added['metadata']['name']}"] = added
    for patch in component["patches"]:
        change = load(SHARDED / patch["path"])
        target = objects[change["kind"]]
        assert target["metadata"]["name"] == change["metadata"]["name"], patch["path"]
        objects[change["kind"]] = merge_patch(target, change)
    return objects


def trigger() -> dict[str, Any]:
    (only,) = sharded_objects()["ScaledObject"]["spec"]["triggers"]
    found: dict[str, Any] = only
    return found


def config() -> dict[str, str]:
    data: dict[str, str] = sharded_objects()["ConfigMap"]["data"]
    return data


def secret() -> dict[str, str]:
    data: dict[str, str] = sharded_objects()["Secret"]["stringData"]
    return data


def test_merge_patch_merges_maps_and_replaces_lists() -> None:
    target = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    patched = merge_patch(target, {"a": {"c": [3]}, "d": None, "e": "x"})
    assert patched == {"a": {"b": 1, "c": [3]}, "e": "x"}
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_the_component_uses_every_file_of_its_folder_and_is_off_by_default() -> None:
    component = kustomization(SHARDED)
    assert component["kind"] == "Component"
    used = set(component["resources"]) | {patch["path"] for patch in component["patches"]}
    assert used == set(kubernetes_documents(SHARDED))
    assert "components" not in kustomization()
    assert "#   - sharded" in (KUBERNETES / "kustomization.yaml").read_text()


def test_the_sharded_settings_are_valid_with_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**config(), **secret()}
    settings = settings_from_env(env, monkeypatch)
    assert settings.SHARDS > 0
    assert settings.LIMITER_URL.get_secret_value().startswith(("redis://", "rediss://"))


def test_every_replica_can_be_active_on_some_shard() -> None:
    """A shard has one active consumer: fewer shards than replicas leaves replicas idle."""
    assert int(config()["SHARDS"]) >= sharded_objects()["ScaledObject"]["spec"]["maxReplicaCount"]


def test_keda_sums_the_shard_queues_and_nothing_else() -> None:
    """The management API matches the pattern anywhere in a name, as re.search does."""
    metadata = trigger()["metadata"]
    assert metadata["protocol"] == "http"  # useRegex works over the management API only
    assert metadata["useRegex"] == "true"
    assert metadata["operation"] == "sum"
    assert metadata["mode"] == "QueueLength"
    pattern = re.compile(metadata["queueName"])
    update = config()["UPDATE_QUEUE"]
    shards = int(config()["SHARDS"])
    for index in range(shards):
        assert pattern.search(f"{update}.shard.{index}"), index
    others = [
        update,
        f"{update}.retry",
        f"{update}.poison",
        *(f"{update}.retry.{delay.strip()}s" for delay in config()["RETRY_DELAYS_S"].split(",")),
        config()["RESULT_QUEUE"],
        config()["DEAD_LETTER_QUEUE"],
        f"other.{update}.shard.0",
        f"{update}.shard.0.copy",
    ]
    for name in others:
        assert not pattern.search(name), name


def test_keda_counts_ready_messages_as_it_does_without_shards() -> None:
    """Over AMQP only ready messages count; over http excludeUnacknowledged keeps it so."""
    metadata = trigger()["metadata"]
    assert metadata["excludeUnacknowledged"] == "true"
    unsharded = kubernetes_objects()["ScaledObject"]["spec"]["triggers"][0]["metadata"]
    assert metadata["value"] == unsharded["value"]
    amqp_vhost = unquote(urlsplit(secret()["AMQP_URL"]).path[1:]) or "/"
    assert metadata["vhostName"] == amqp_vhost


def test_keda_reads_the_management_api_from_a_secret_the_worker_never_sees() -> None:
    objects = sharded_objects()
    auth = objects["TriggerAuthentication"]
    assert trigger()["authenticationRef"]["name"] == auth["metadata"]["name"]
    (reference,) = auth["spec"]["secretTargetRef"]
    assert reference["parameter"] == "host"
    management = objects[f"Secret/{reference['name']}"]
    host = urlsplit(management["stringData"][reference["key"]])
    assert host.scheme in {"http", "https"}
    assert host.password == "CHANGE_ME"
    # The vhost comes from vhostName, and KEDA wants the slash of an empty path.
    assert host.path == "/"
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    read = {next(iter(source.values()))["name"] for source in container["envFrom"]}
    assert reference["name"] not in read
