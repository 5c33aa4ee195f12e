"""Kafka security settings: validation, and exactly what every client library is handed.

SASL cannot be proven end to end on the embedded Tansu (REFERENCE.md: it refuses to create
users with authentication on, and offers no mechanism without it), so these tests pin what
Faust, aiokafka, confluent-kafka (librdkafka) and kcat receive for each protocol and mechanism;
the broker tier proves TLS for real and that a refused SASL handshake fails fast.
"""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from streams.security import PLAINTEXT, KafkaSecurity, SecurityError, kafka_security
from streams.settings import Settings
from tests.support.tls import NO_OPENSSL, Pki, make_pki

PASSWORD = "pa55-W0rd-never-printed"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip(NO_OPENSSL)
    return make_pki(tmp_path_factory.mktemp("pki"))


def sasl_settings(protocol: str = "SASL_SSL", mechanism: str = "PLAIN", **kw: Any) -> Settings:
    return Settings(
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username="svc-kinfer",
        sasl_password=PASSWORD,
        **kw,
    )


# -- settings validation --------------------------------------------------------------------------


def test_default_is_plaintext_without_credentials() -> None:
    security = kafka_security(Settings())
    assert security == PLAINTEXT
    assert security.aiokafka() == {"security_protocol": "PLAINTEXT"}
    assert security.faust_credentials() is None
    assert security.librdkafka() == {"security.protocol": "plaintext"}


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINFER_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KINFER_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KINFER_SASL_USERNAME", "alice")
    monkeypatch.setenv("KINFER_SASL_PASSWORD", PASSWORD)
    security = kafka_security(Settings())
    assert (security.protocol, security.sasl_mechanism, security.username, security.password) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "alice",
        PASSWORD,
    )


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_password": "x"}, "KINFER_SASL_USERNAME"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u"}, "exactly one"),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_username": "u",
                "sasl_password": "x",
                "sasl_password_file": "/run/secrets/p",
            },
            "exactly one",
        ),
        ({"sasl_username": "u", "sasl_password": "x"}, "would not send them"),
        ({"security_protocol": "SSL", "sasl_username": "u"}, "would not send them"),
        ({"security_protocol": "SSL", "ssl_certfile": "c.pem"}, "go together"),
        ({"security_protocol": "SSL", "ssl_keyfile": "c.key"}, "go together"),
        ({"ssl_cafile": "ca.pem"}, "does not use TLS"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "u",
                "sasl_password": "x",
                "ssl_cafile": "ca.pem",
            },
            "does not use TLS",
        ),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
        ({"reply_to_pattern": "kinfer.(unclosed"}, "not a regular expression"),
    ],
)
def test_inconsistent_security_settings_are_refused(fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint.replace("(", r"\(")) as caught:
        Settings(**fields)
    assert "x" not in [e.get("input") for e in caught.value.errors()], "no secret in the error"


def test_missing_files_are_named_with_their_setting(tmp_path: Path) -> None:
    settings = Settings(security_protocol="SSL", ssl_cafile=str(tmp_path / "nope.pem"))
    with pytest.raises(SecurityError, match=r"KINFER_SSL_CAFILE=.*nope\.pem: no such file"):
        kafka_security(settings)
    settings = Settings(
        security_protocol="SASL_SSL",
        sasl_username="u",
        sasl_password_file=str(tmp_path / "missing"),
    )
    with pytest.raises(SecurityError, match="KINFER_SASL_PASSWORD_FILE"):
        kafka_security(settings)


def test_password_file_is_read_and_its_newline_dropped(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    settings = Settings(
        security_protocol="SASL_SSL", sasl_username="u", sasl_password_file=str(secret)
    )
    assert kafka_security(settings).password == PASSWORD


def test_bad_tls_files_fail_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    security = kafka_security(Settings(security_protocol="SSL", ssl_cafile=str(junk)))
    with pytest.raises(SecurityError, match="cannot load the TLS files"):
        security.ssl_context()


# -- what each client receives --------------------------------------------------------------------


def test_tls_context_has_the_ca_the_client_certificate_and_the_hostname_check(pki: Pki) -> None:
    settings = Settings(
        security_protocol="SSL",
        ssl_cafile=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
    )
    context = kafka_security(settings).ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    [ca] = context.get_ca_certs()
    assert dict(x[0] for x in ca["subject"])["commonName"] == "kinfer test CA"
    relaxed = Settings(security_protocol="SSL", ssl_cafile=pki.ca, ssl_check_hostname=False)
    context = kafka_security(relaxed).ssl_context()
    assert context is not None
    assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_REQUIRED)


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_aiokafka_gets_the_protocol_mechanism_and_credentials(
    protocol: str, mechanism: str, pki: Pki
) -> None:
    tls = {"ssl_cafile": pki.ca} if protocol == "SASL_SSL" else {}
    kwargs = kafka_security(sasl_settings(protocol, mechanism, **tls)).aiokafka()
    context = kwargs.pop("ssl_context", None)
    assert kwargs == {
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc-kinfer",
        "sasl_plain_password": PASSWORD,
    }
    assert (context is not None) == (protocol == "SASL_SSL")


@pytest.mark.parametrize(
    "protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], ids=str.lower
)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_faust_hands_its_consumer_and_producer_the_same_as_aiokafka_gets(
    protocol: str, mechanism: str, pki: Pki
) -> None:
    """What Faust's consumer and producer pass to aiokafka, from the app create_app builds."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.app import create_app

    if protocol.startswith("SASL"):
        tls = {"ssl_cafile": pki.ca} if protocol == "SASL_SSL" else {}
        settings = sasl_settings(protocol, mechanism, **tls)
    elif protocol == "SSL":
        settings = Settings(security_protocol="SSL", ssl_cafile=pki.ca)
    else:
        settings = Settings()
    app = create_app(settings)
    faust_kwargs = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    ours = kafka_security(settings).aiokafka()
    for kwargs in (faust_kwargs, ours):
        context = kwargs.pop("ssl_context", None)
        assert (context is not None) == protocol.endswith("SSL")
        if context is not None:
            assert context.get_ca_certs(), "the CA is loaded"
    if protocol == "SASL_PLAINTEXT":
        faust_kwargs.pop("ssl_context", None)  # Faust passes ssl_context=None
    assert faust_kwargs == ours
    assert PASSWORD not in repr(app.conf.broker_credentials)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_librdkafka_gets_properties_confluent_kafka_accepts(mechanism: str, pki: Pki) -> None:
    import confluent_kafka

    settings = sasl_settings(
        "SASL_SSL",
        mechanism,
        ssl_cafile=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
    )
    config = kafka_security(settings).librdkafka()
    assert config == {
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": pki.ca,
        "ssl.certificate.location": pki.client_cert,
        "ssl.key.location": pki.client_key,
        "ssl.endpoint.identification.algorithm": "https",
        "sasl.mechanism": mechanism,
        "sasl.username": "svc-kinfer",
        "sasl.password": PASSWORD,
    }
    # librdkafka checks every property name and value, and loads the files, when it is built
    producer = confluent_kafka.Producer({"bootstrap.servers": "127.0.0.1:1", **config})
    producer.flush(0)
    no_check = Settings(security_protocol="SSL", ssl_cafile=pki.ca, ssl_check_hostname=False)
    assert kafka_security(no_check).librdkafka() == {
        "security.protocol": "ssl",
        "ssl.ca.location": pki.ca,
        "ssl.endpoint.identification.algorithm": "none",
    }


def test_kcat_reads_the_configuration_from_a_pipe_never_its_command_line() -> None:
    from streams.kcat import security_args

    security = kafka_security(sasl_settings("SASL_PLAINTEXT", "SCRAM-SHA-256"))
    args, fd = security_args(security)
    assert fd is not None
    try:
        assert args == ["-F", f"/dev/fd/{fd}"]
        content = os.read(fd, 65536).decode()
    finally:
        os.close(fd)
    assert content.splitlines() == [f"{k}={v}" for k, v in security.librdkafka().items()]
    assert PASSWORD not in " ".join(args)
    assert security_args(PLAINTEXT) == ([], None)


def test_kcat_refuses_a_value_with_a_line_break() -> None:
    from streams.kcat import security_args

    security = KafkaSecurity(protocol="SASL_PLAINTEXT", username="u", password="a\nb")
    with pytest.raises(SecurityError, match="line break"):
        security_args(security)


async def test_the_sdk_client_passes_security_to_its_producer_and_consumer(pki: Pki) -> None:
    from streams.client import InferenceClient

    security = kafka_security(sasl_settings("SASL_SSL", "SCRAM-SHA-512", ssl_cafile=pki.ca))
    client = InferenceClient("127.0.0.1:1", "requests", "kinfer.replies.me", security=security)
    try:
        for kafka_client in (client._producer.client, client._consumer._client):
            assert kafka_client._security_protocol == "SASL_SSL"
            assert kafka_client._sasl_mechanism == "SCRAM-SHA-512"
            assert kafka_client._sasl_plain_username == "svc-kinfer"
            assert kafka_client._sasl_plain_password == PASSWORD
            assert kafka_client._ssl_context is not None
    finally:  # never started: stopping only marks them closed
        await client._producer.stop()
        await client._consumer.stop()


async def test_the_admin_client_gets_the_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams import admin

    made: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

        async def start(self) -> None:
            raise ConnectionError("no broker here")

        async def close(self) -> None:
            return None

    async def connected(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(admin, "AIOKafkaAdminClient", Recorder)
    monkeypatch.setattr(admin, "check_connection", connected)
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", username="u", password=PASSWORD)
    with pytest.raises(admin.BrokerUnavailableError):
        await admin.wait_for_broker("127.0.0.1:1", 0.3, security=security)
    assert made
    assert all(kw["sasl_plain_password"] == PASSWORD for kw in made)
    assert all(kw["security_protocol"] == "SASL_PLAINTEXT" for kw in made)


# -- secrets stay secret --------------------------------------------------------------------------


def test_no_secret_in_reprs_descriptions_or_kinfer_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams.cli import main

    settings = sasl_settings("SASL_PLAINTEXT", "SCRAM-SHA-256")
    security = kafka_security(settings)
    for text in (repr(settings), str(settings), repr(security), security.describe()):
        assert PASSWORD not in text
    assert "SCRAM-SHA-256 as 'svc-kinfer'" in security.describe()
    monkeypatch.setenv("KINFER_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KINFER_SASL_USERNAME", "svc-kinfer")
    monkeypatch.setenv("KINFER_SASL_PASSWORD", PASSWORD)
    result = CliRunner().invoke(main, ["settings"])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert "KINFER_SASL_PASSWORD=*** (set)" in result.output
    assert "KINFER_SASL_USERNAME=svc-kinfer" in result.output


def test_every_kafka_client_kinfer_makes_is_handed_the_security_settings() -> None:
    """A guard for new code: each aiokafka/confluent-kafka client in streams/ gets ``**auth``."""
    import ast

    clients = {
        "AIOKafkaProducer",
        "AIOKafkaConsumer",
        "AIOKafkaAdminClient",
        "Producer",
        "Consumer",
    }
    found = []
    root = Path(__file__).resolve().parents[2] / "streams"
    for path in sorted(root.rglob("*.py")):
        if "_pb2" in path.name:  # generated gRPC code
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in clients:
                where = f"{path.relative_to(root)}:{node.lineno}"
                found.append(where)
                assert any(k.arg is None for k in node.keywords), (
                    f"{where}: {name}(...) without the security settings (**security.aiokafka())"
                )
    assert len(found) >= 4, found  # admin (2), topic watch, SDK producer and consumer
