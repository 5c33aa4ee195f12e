"""The gateway's deploy/ objects, checked offline: Kubernetes (schemas are checked with the rest
in test_deploy.py) and compose, against the gateway's own settings and code."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from streams.gateway.auth import TokenFileError, TokenTable
from streams.gateway.server import STOP_GRACE_S, is_loopback
from streams.replyto import ReplyToPolicy
from streams.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BASE = DEPLOY / "k8s" / "base"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(path: Path, kind: str) -> dict[str, Any]:
    [doc] = [d for d in documents(path) if d["kind"] == kind]
    return doc


GATEWAY = BASE / "gateway.yaml"
DEPLOYMENT = one(GATEWAY, "Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
[CONTAINER] = POD["containers"]
CONFIG = one(BASE / "configmap.yaml", "ConfigMap")["data"]
KAFKA_SECRET = one(BASE / "secret.yaml", "Secret")
TOKENS_SECRET = one(BASE / "gateway-tokens.yaml", "Secret")
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


def as_settings(env: dict[str, str]) -> Settings:
    fields = {k.removeprefix("KINFER_").lower(): v for k, v in env.items()}
    assert not set(fields) - set(Settings.model_fields), "not kinfer settings"
    return Settings(**fields)


def k8s_settings() -> Settings:
    env = dict(CONFIG)
    for item in CONTAINER["env"]:
        env[item["name"]] = item.get("value", "<from secret>")
    return as_settings(env)


def test_the_k8s_gateway_runs_kinfer_gateway_on_its_ports_with_tokens() -> None:
    settings = k8s_settings()
    assert CONTAINER["args"] == ["kinfer", "gateway"]
    assert CONTAINER["envFrom"] == [{"configMapRef": {"name": "kinfer-worker"}}]
    ports = {port["name"]: port["containerPort"] for port in CONTAINER["ports"]}
    assert ports == {"http": settings.gateway_http_port, "grpc": settings.gateway_grpc_port}
    assert not is_loopback(settings.gateway_host), "reachable from the Service"
    assert settings.gateway_tokens_file, "a non-loopback gateway needs tokens"
    assert not settings.gateway_allow_unauthenticated
    assert settings.security_protocol == "SASL_SSL"


def test_the_k8s_gateway_mounts_its_tokens_and_the_kafka_secret_where_it_reads_them() -> None:
    settings = k8s_settings()
    volumes = {v["name"]: v for v in POD["volumes"]}
    mounts = {m["mountPath"]: m for m in CONTAINER["volumeMounts"]}
    expected = {
        settings.gateway_tokens_file: TOKENS_SECRET,
        settings.sasl_password_file: KAFKA_SECRET,
        settings.ssl_cafile: KAFKA_SECRET,
    }
    for path, secret in expected.items():
        assert path is not None
        mount = mounts[str(PurePosixPath(path).parent)]
        assert mount["readOnly"] is True
        source = volumes[mount["name"]]["secret"]
        assert source["secretName"] == secret["metadata"]["name"]
        [item] = [i for i in source["items"] if i["path"] == PurePosixPath(path).name]
        assert item["key"] in secret["stringData"]


def test_the_tokens_template_is_refused_so_its_placeholders_never_serve() -> None:
    text = TOKENS_SECRET["stringData"]["tokens.json"].encode()
    with pytest.raises(TokenFileError):
        TokenTable.parse(text)


def test_the_k8s_gateway_probes_grace_and_hardening() -> None:
    assert CONTAINER["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert CONTAINER["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert CONTAINER["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert POD["terminationGracePeriodSeconds"] > STOP_GRACE_S
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["automountServiceAccountToken"] is False
    hardening = CONTAINER["securityContext"]
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["capabilities"]["drop"] == ["ALL"]
    assert CONTAINER["resources"]["limits"]["memory"]


def test_the_service_policy_and_budget_select_the_gateway_pods() -> None:
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    service = one(GATEWAY, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    named = {port["name"] for port in CONTAINER["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == named
    policy = one(GATEWAY, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    [ingress] = policy["spec"]["ingress"]
    settings = k8s_settings()
    assert sorted(p["port"] for p in ingress["ports"]) == [
        settings.gateway_http_port,
        settings.gateway_grpc_port,
    ]
    kafka_port = int(settings.bootstrap_servers.rsplit(":", 1)[1])
    assert kafka_port in {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    budget = one(GATEWAY, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("where", ["k8s", "compose"])
def test_the_workers_answer_on_the_gateways_reply_topic(where: str) -> None:
    if where == "k8s":
        gateway, worker = k8s_settings(), as_settings(dict(CONFIG, KINFER_SASL_USERNAME="u"))
    else:
        gateway = as_settings(COMPOSE["gateway"]["environment"])
        worker = as_settings(COMPOSE["worker-1"]["environment"])
    assert gateway.request_topic == worker.request_topic
    policy = ReplyToPolicy.from_settings(worker)
    assert policy.refusal(gateway.gateway_reply_topic) is None


def test_the_compose_gateway_is_wired_as_documented() -> None:
    service = COMPOSE["gateway"]
    settings = as_settings(service["environment"])
    assert service["command"] == ["kinfer", "gateway"]
    assert service["depends_on"]["topic-init"] == {"condition": "service_completed_successfully"}
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.gateway_tokens_file == "/secrets/gateway-tokens.json"
    init = (DEPLOY / "compose" / "init-secrets.sh").read_text()
    assert "gateway-tokens.json" in init
    assert "./.secrets:/secrets:ro" in service["volumes"]
    assert service["ports"] == [
        f"127.0.0.1:{settings.gateway_http_port}:{settings.gateway_http_port}",
        f"127.0.0.1:{settings.gateway_grpc_port}:{settings.gateway_grpc_port}",
    ]
    assert f":{settings.gateway_http_port}/v2/health/ready" in " ".join(
        service["healthcheck"]["test"]
    )
    assert float(service["stop_grace_period"].rstrip("s")) > STOP_GRACE_S
    topic_init = " ".join(COMPOSE["topic-init"]["command"])
    assert f"create {settings.gateway_reply_topic} " in topic_init
