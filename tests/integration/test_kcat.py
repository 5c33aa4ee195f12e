"""kcat against the test broker, through `streams.kcat.kcat_env` (librdkafka from the wheel)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, ExternalBroker
from streams.kcat import LibrdkafkaNotFoundError, find_kcat, kcat_env, run_kcat

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_kcat() is None, reason="kcat is not installed (apt-get install kcat)"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which kcat loads the confluent-kafka wheel's librdkafka."""
    try:
        return kcat_env(tmp_path_factory.mktemp("kcat"))
    except LibrdkafkaNotFoundError as exc:
        pytest.skip(str(exc))


async def _read_all(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        while len(records) < count:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def test_kcat_lists_metadata(broker: EmbeddedBroker | ExternalBroker, env: dict[str, str]) -> None:
    out = run_kcat(broker.bootstrap, ["-L", "-J"], env=env).stdout
    metadata = json.loads(out)
    assert metadata["brokers"], metadata


async def test_kcat_produce_aiokafka_consume(
    broker: EmbeddedBroker | ExternalBroker, env: dict[str, str], unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("kcat-in")
    await ensure_topics(broker.bootstrap, {topic: 2})
    args = ["-P", "-t", topic, "-k", "req-1", "-H", "x-request-id=abc", "-H", "x-trace=t1"]
    run_kcat(broker.bootstrap, args, env=env, input=b'{"inputs": ["hello"]}\n')

    (record,) = await _read_all(broker.bootstrap, topic, 1)
    assert record.key == b"req-1"
    assert record.value == b'{"inputs": ["hello"]}'
    assert dict(record.headers) == {"x-request-id": b"abc", "x-trace": b"t1"}


async def test_aiokafka_produce_kcat_consume(
    broker: EmbeddedBroker | ExternalBroker, env: dict[str, str], unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("kcat-out")
    await ensure_topics(broker.bootstrap, {topic: 2})
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(
                topic,
                f"v{i}".encode(),
                key=f"k{i}".encode(),
                headers=[("x-request-id", b"id%d" % i)],
            )
    finally:
        await producer.stop()

    args = ["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-J"]
    out = run_kcat(broker.bootstrap, args, env=env).stdout.decode()
    seen = {m["key"]: (m["payload"], m["headers"]) for m in map(json.loads, out.splitlines()) if m}
    assert seen == {f"k{i}": (f"v{i}", ["x-request-id", f"id{i}"]) for i in range(3)}

    fmt = ["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k %h %s\\n"]
    lines = run_kcat(broker.bootstrap, fmt, env=env).stdout.decode().splitlines()
    assert sorted(lines) == [f"k{i} x-request-id=id{i} v{i}" for i in range(3)]


def test_kcat_env_link_points_at_the_wheel(env: dict[str, str]) -> None:
    first = Path(env["LD_LIBRARY_PATH"].split(":")[0])
    link = first / "librdkafka.so.1"
    assert link.is_symlink()
    assert link.resolve().parent.name == "confluent_kafka.libs"
