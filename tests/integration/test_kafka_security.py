"""TLS end to end through stunnel in front of Tansu, and SASL that fails fast and clearly.

TLS: Tansu 0.6.0's own TLS listener is unwired, so stunnel4 terminates TLS in front of it
(``tests/support/tls.py``) with a CA and certificates this test makes; Tansu advertises the
TLS port. A kinfer worker, the SDK, the admin client and kcat all go through it, with mutual
TLS; a plaintext client, a wrong CA and a missing client certificate each fail with a clear
``SecurityError`` within seconds.

SASL: this Tansu cannot authenticate anyone (REFERENCE.md; re-checked: with
``--authentication`` the broker refuses ``tansu user create`` itself, without it no mechanism is
offered), so what is proven here is the failure path: kinfer pointed with SASL at a broker that
refuses the handshake exits non-zero with a clear error within seconds, and never prints the
password. The configurations the clients receive are pinned in tests/unit/test_security.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, ExternalBroker
from streams.client import InferenceClient
from streams.kcat import LibrdkafkaNotFoundError, find_kcat, kcat_env, run_kcat
from streams.security import KafkaSecurity, SecurityError
from tests.support.tls import NO_OPENSSL, NO_STUNNEL, Pki, TlsBroker, find_stunnel, make_pki
from tests.support.topics import worker_names
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

PASSWORD = "S3cret-sasl-password-4-tests"
#: a clear failure comes within this many seconds (the worker's includes its Python start-up)
FAIL_FAST_S = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip(NO_OPENSSL)
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_broker(pki: Pki, mutual: bool) -> Iterator[TlsBroker]:
    if find_stunnel() is None:
        pytest.skip(NO_STUNNEL)
    with TlsBroker(pki, pki.folder, mutual=mutual) as tls:
        yield tls


@pytest.fixture(scope="module")
def mtls_broker(pki: Pki) -> Iterator[TlsBroker]:
    """Tansu behind stunnel that wants a client certificate signed by the test CA."""
    yield from _tls_broker(pki, mutual=True)


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[TlsBroker]:
    """Tansu behind stunnel, server authentication only (as most managed Kafka with SASL)."""
    yield from _tls_broker(pki, mutual=False)


def mutual(pki: Pki) -> KafkaSecurity:
    return KafkaSecurity(
        protocol="SSL", cafile=pki.ca, certfile=pki.client_cert, keyfile=pki.client_key
    )


def worker_tls_env(pki: Pki) -> dict[str, str]:
    return {
        "SECURITY_PROTOCOL": "SSL",
        "SSL_CAFILE": pki.ca,
        "SSL_CERTFILE": pki.client_cert,
        "SSL_KEYFILE": pki.client_key,
    }


@pytest.fixture(scope="module")
def kcat_environ(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if find_kcat() is None:
        pytest.skip("kcat is not installed (apt-get install kcat)")
    try:
        return kcat_env(tmp_path_factory.mktemp("kcat"))
    except LibrdkafkaNotFoundError as exc:
        pytest.skip(str(exc))


async def _fails_fast(make: Any, match: str) -> SecurityError:
    started = time.monotonic()
    with pytest.raises(SecurityError, match=match) as caught:
        await make()
    assert time.monotonic() - started < FAIL_FAST_S
    return caught.value


# -- TLS, end to end -------------------------------------------------------------------------------


async def test_worker_sdk_and_kcat_serve_over_mutual_tls(
    mtls_broker: TlsBroker, pki: Pki, kcat_environ: dict[str, str]
) -> None:
    security = mutual(pki)
    names = worker_names("tls")
    names["response_topic"] = "kinfer.replies." + names["response_topic"]
    await ensure_topics(
        mtls_broker.bootstrap,
        {names["request_topic"]: 2, names["response_topic"]: 2},
        security=security,
    )
    # kcat sees the TLS front (not Tansu's plain port) in the metadata: the advertised listener
    metadata = orjson.loads(
        run_kcat(mtls_broker.bootstrap, ["-L", "-J"], env=kcat_environ, security=security).stdout
    )
    assert [b["name"] for b in metadata["brokers"]] == [mtls_broker.bootstrap]

    with WorkerProcess(mtls_broker.bootstrap, {**names, **worker_tls_env(pki)}) as worker:
        async with InferenceClient(
            mtls_broker.bootstrap,
            names["request_topic"],
            names["response_topic"],
            security=security,
        ) as client:
            answer = await client.infer(["TLS all the way", "and back"], timeout_s=60)
            assert [len(row) for row in answer["outputs"]] == [384, 384], answer
            # a request produced by kcat over mutual TLS, answered to the SDK's reply topic
            value = orjson.dumps({"id": "from-kcat", "model": "minilm", "inputs": ["hi"]})
            args = ["-P", "-t", names["request_topic"], "-k", "k1"]
            args += ["-H", f"reply-to={names['response_topic']}", "-H", "x-request-id=from-kcat"]
            # run_kcat blocks this loop, so collect() below is waiting before the reader runs
            run_kcat(mtls_broker.bootstrap, args, env=kcat_environ, input=value, security=security)
            got = await client.collect(["from-kcat"], timeout_s=60)
            assert len(got["from-kcat"]["outputs"][0]) == 384
        assert "Kafka security: SSL, CA" in worker.log_tail(200_000)


async def test_tls_without_client_certificates_round_trips(tls_broker: TlsBroker, pki: Pki) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    security = KafkaSecurity(protocol="SSL", cafile=pki.ca)
    topic = worker_names("tls-only")["request_topic"]
    await ensure_topics(tls_broker.bootstrap, {topic: 1}, security=security)
    producer = AIOKafkaProducer(bootstrap_servers=tls_broker.bootstrap, **security.aiokafka())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over TLS", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=tls_broker.bootstrap,
        auto_offset_reset="earliest",
        **security.aiokafka(),
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", b"over TLS")


def test_the_compose_stacks_certificates_serve_kinfers_tls(tmp_path: Path) -> None:
    """deploy/compose/init-secrets.sh's CA and Kafka certificate, behind stunnel, for kinfer."""
    if shutil.which("openssl") is None:
        pytest.skip(NO_OPENSSL)
    if find_stunnel() is None:
        pytest.skip(NO_STUNNEL)
    secrets = tmp_path / "secrets"
    script = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "init-secrets.sh"
    subprocess.run(["sh", str(script), str(secrets)], check=True, capture_output=True, timeout=60)
    pki = Pki(tmp_path / "as-pki")
    pki.folder.mkdir()
    for theirs, ours in [
        ("ca.pem", "ca.pem"),
        ("kafka.crt", "server.pem"),
        ("kafka.key", "server.key"),
    ]:
        (pki.folder / ours).write_bytes((secrets / theirs).read_bytes())
    security = KafkaSecurity(protocol="SSL", cafile=str(secrets / "ca.pem"))
    with TlsBroker(pki, pki.folder) as tls:
        asyncio.run(ensure_topics(tls.bootstrap, {"compose-certs": 1}, security=security))


# -- TLS, failing clearly --------------------------------------------------------------------------


async def test_a_plaintext_client_on_the_tls_port_is_told_to_use_tls(tls_broker: TlsBroker) -> None:
    client = InferenceClient(tls_broker.bootstrap, "requests", "kinfer.responses")
    try:
        await _fails_fast(client.__aenter__, "speaks TLS.*KINFER_SECURITY_PROTOCOL is PLAINTEXT")
    finally:
        await client._producer.stop()
        await client._consumer.stop()
    await _fails_fast(lambda: ensure_topics(tls_broker.bootstrap, {"never": 1}), "set it to SSL")


async def test_a_wrong_ca_fails_clearly_within_seconds(tls_broker: TlsBroker, pki: Pki) -> None:
    security = KafkaSecurity(protocol="SSL", cafile=pki.wrong_ca)
    error = await _fails_fast(
        lambda: ensure_topics(tls_broker.bootstrap, {"never": 1}, security=security),
        "certificate of the broker .* was refused",
    )
    assert "KINFER_SSL_CAFILE" in str(error)


async def test_tls_to_a_plain_port_is_told_it_is_plain(
    broker: EmbeddedBroker | ExternalBroker, pki: Pki
) -> None:
    security = KafkaSecurity(protocol="SSL", cafile=pki.ca)
    await _fails_fast(
        lambda: ensure_topics(broker.bootstrap, {"never": 1}, security=security),
        "speaks plain Kafka, not TLS",
    )


async def test_mutual_tls_without_a_client_certificate_fails_clearly(
    mtls_broker: TlsBroker, pki: Pki
) -> None:
    security = KafkaSecurity(protocol="SSL", cafile=pki.ca)
    await _fails_fast(
        lambda: ensure_topics(mtls_broker.bootstrap, {"never": 1}, security=security),
        "CERTIFICATE_REQUIRED.*KINFER_SSL_CERTFILE",
    )


def _exits_fast(worker: WorkerProcess, bound_s: float = 40.0) -> tuple[int, float, str]:
    started = time.monotonic()
    worker.start(wait=False)
    assert worker.proc is not None
    try:
        code = worker.proc.wait(bound_s)
    except subprocess.TimeoutExpired:
        worker.kill9()
        pytest.fail(f"the worker hung for {bound_s}s instead of exiting:\n{worker.log_tail()}")
    finally:
        worker.close()
    return code, time.monotonic() - started, worker.log_tail(200_000)


def test_a_worker_with_the_wrong_ca_exits_non_zero_within_seconds(
    tls_broker: TlsBroker, pki: Pki
) -> None:
    env = {**worker_names("tls-bad"), "SECURITY_PROTOCOL": "SSL", "SSL_CAFILE": pki.wrong_ca}
    code, took, log = _exits_fast(WorkerProcess(tls_broker.bootstrap, env))
    assert code != 0, log
    assert "SecurityError: TLS: the certificate of the broker" in log, log
    assert took < 30, f"took {took:.1f}s"  # Python and Faust start-up; no model warm-up


# -- SASL: not provable on this Tansu; the failure is fast, clear and leaks nothing ----------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_worker_refused_sasl_exits_non_zero_fast_and_never_prints_the_password(
    broker: EmbeddedBroker | ExternalBroker, mechanism: str, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    env = {
        **worker_names("sasl"),
        "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SASL_MECHANISM": mechanism,
        "SASL_USERNAME": "svc-kinfer",
        "SASL_PASSWORD_FILE": str(password_file),
    }
    code, took, log = _exits_fast(WorkerProcess(broker.bootstrap, env))
    assert code != 0, log
    assert f"SecurityError: SASL: the broker at {broker.bootstrap} refused {mechanism}" in log, log
    assert "svc-kinfer" in log
    assert PASSWORD not in log
    assert took < 30, f"took {took:.1f}s"


def test_kinfer_infer_and_settings_with_sasl_fail_clearly_and_print_no_secret(
    broker: EmbeddedBroker | ExternalBroker,
) -> None:
    env = {
        **os.environ,
        "KINFER_BROKER_URL": f"kafka://{broker.bootstrap}",
        "KINFER_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KINFER_SASL_MECHANISM": "SCRAM-SHA-512",
        "KINFER_SASL_USERNAME": "svc-kinfer",
        "KINFER_SASL_PASSWORD": PASSWORD,
    }
    started = time.monotonic()
    infer = subprocess.run(
        [sys.executable, "-m", "streams.cli", "infer", "hello"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    took = time.monotonic() - started
    output = (infer.stdout + infer.stderr).decode()
    assert infer.returncode != 0, output
    assert "SASL: the broker" in output, output
    assert "refused SCRAM-SHA-512" in output, output
    assert took < 30, f"took {took:.1f}s"
    settings = subprocess.run(
        [sys.executable, "-m", "streams.cli", "settings"], env=env, capture_output=True, timeout=60
    )
    shown = (settings.stdout + settings.stderr).decode()
    assert settings.returncode == 0, shown
    assert "KINFER_SASL_PASSWORD=*** (set)" in shown
    for text in (output, shown):
        assert PASSWORD not in text
