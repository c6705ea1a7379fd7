"""deploy/kubernetes/redis: the Redis that LIMITER_URL names, kept on a volume for OAuth."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.deploy.manifests import (
    KUBERNETES,
    kubernetes_documents,
    kubernetes_objects,
    kustomization,
)

REDIS = KUBERNETES / "redis"


def objects() -> dict[str, dict[str, Any]]:
    return kubernetes_objects(REDIS)


def container() -> dict[str, Any]:
    (only,) = objects()["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = only
    return found


def argument(name: str) -> str:
    """The value given to a redis-server `--name value` argument."""
    args: list[str] = container()["args"]
    return args[args.index(f"--{name}") + 1]


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    assert sorted(kustomization(REDIS)["resources"]) == sorted(kubernetes_documents(REDIS))
    assert set(objects()) == {"Secret", "Service", "StatefulSet"}
    for kind, manifest in objects().items():
        assert "namespace" not in manifest["metadata"], kind


def test_limiter_url_names_this_redis_service_and_port() -> None:
    limiter_url = urlsplit(kubernetes_objects()["Secret"]["stringData"]["LIMITER_URL"])
    service = objects()["Service"]
    assert limiter_url.hostname == service["metadata"]["name"]
    (port,) = service["spec"]["ports"]
    assert limiter_url.port == port["port"]
    (declared,) = container()["ports"]
    assert port["targetPort"] in (declared["name"], declared["containerPort"])
    labels = objects()["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_password_comes_from_the_secret_and_is_a_placeholder() -> None:
    secret = objects()["Secret"]
    (variable,) = container()["env"]
    reference = variable["valueFrom"]["secretKeyRef"]
    assert reference["name"] == secret["metadata"]["name"]
    assert secret["stringData"][reference["key"]] == "CHANGE_ME"
    assert argument("requirepass") == f"$({variable['name']})"
    limiter_url = urlsplit(kubernetes_objects()["Secret"]["stringData"]["LIMITER_URL"])
    assert limiter_url.password == "CHANGE_ME"


def test_the_data_outlives_the_pod_and_is_never_evicted() -> None:
    """An OAuth refresh token kept here is the only working one: a restart must not lose it."""
    assert argument("appendonly") == "yes"
    assert argument("maxmemory-policy") == "noeviction"
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    data = mounts[argument("dir")]
    spec = objects()["StatefulSet"]["spec"]
    claims = {claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]}
    assert data in claims
    assert spec["replicas"] == 1


def test_redis_runs_non_root_with_a_read_only_root() -> None:
    pod = objects()["StatefulSet"]["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["fsGroup"] == pod["runAsGroup"]
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert set(container()["resources"]["limits"]) == {"cpu", "memory"}
