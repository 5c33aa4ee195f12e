"""Log lines (text and JSON, request ids), the frameworks' chatter filter, the start-up banner,
and the count of XLA compiles outside loading and warm-up."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import orjson
import pytest

from models import compiles
from streams.logs import REQUEST_ID, banner, device_kind, setup_logging
from streams.model_table import VersionStatus
from streams.settings import Settings


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, str]]:
    """Restores the root logger's handlers and level after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO(), "info"
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_request_id_of_the_task_and_extra_fields(
    captured: tuple[io.StringIO, str],
) -> None:
    stream, level = captured
    setup_logging("json", level, component="kinfer worker", stream=stream)
    log = logging.getLogger("streams.pipeline")
    token = REQUEST_ID.set("req-7")
    try:
        log.warning("publishing to %s failed", "answers")
    finally:
        REQUEST_ID.reset(token)
    log.info("no request here", extra={"fields": {"models": ["minilm 0.1.0"]}})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed", extra={"request_id": 42})
    first, second, third = (orjson.loads(line) for line in lines(stream))
    assert first["message"] == "publishing to answers failed"
    assert first["level"] == "WARNING"
    assert first["logger"] == "streams.pipeline"
    assert first["request_id"] == "req-7"
    assert first["component"] == "kinfer worker"
    assert first["time"].endswith("Z")
    assert "request_id" not in second
    assert second["models"] == ["minilm 0.1.0"]
    assert third["request_id"] == 42
    assert "ValueError: boom" in third["exception"]


def test_text_lines_name_the_request_before_any_traceback(
    captured: tuple[io.StringIO, str],
) -> None:
    stream, level = captured
    setup_logging("text", level, component="kinfer worker", stream=stream)
    token = REQUEST_ID.set("abc")
    try:
        raise KeyError("k")
    except KeyError:
        logging.getLogger("streams.pipeline").exception("encoding failed")
    finally:
        REQUEST_ID.reset(token)
    head = lines(stream)[0]
    assert "[kinfer worker " in head
    assert "[ERROR] encoding failed [request_id='abc']" in head
    assert "KeyError" in stream.getvalue()


def test_framework_chatter_stays_out_but_not_its_warnings(
    captured: tuple[io.StringIO, str],
) -> None:
    stream, level = captured
    setup_logging("text", level, stream=stream)
    logging.getLogger("faust.transport.drivers.aiokafka").info("Updating subscribed topics")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")
    logging.getLogger("streams.app").info("[^-KinferApp]: Starting...")  # mode's service tree
    logging.getLogger("jax._src.xla_bridge").info("Unable to initialize backend 'tpu': nope")
    logging.getLogger("jax._src.xla_bridge").info("some other JAX line")
    logging.getLogger("aiokafka").warning("Heartbeat failed")
    logging.getLogger("streams.app").info("partitions assigned: requests [0]")
    text = stream.getvalue()
    for hidden in ("Updating subscribed", "Joined group", "[^-KinferApp]", "Unable to initialize"):
        assert hidden not in text
    for kept in ("some other JAX line", "Heartbeat failed", "partitions assigned"):
        assert kept in text


def test_debug_shows_everything(captured: tuple[io.StringIO, str]) -> None:
    stream, _ = captured
    setup_logging("text", "debug", stream=stream)
    logging.getLogger("faust.worker").info("[^Worker]: Starting...")
    assert "[^Worker]: Starting..." in stream.getvalue()


def test_the_banner_names_broker_topics_models_buckets_device_and_dtype() -> None:
    settings = Settings(
        broker_url="kafka://broker-1:9092",
        request_topic="in",
        response_topic="out",
        batch_buckets=(1, 8),
        seq_buckets=(32, 128),
    )
    versions = [
        VersionStatus("minilm", "0.1.0", "ready", dtype="bfloat16", device="cuda:0", default=True),
        VersionStatus("digits", "1", "loading"),
    ]
    text, fields = banner(settings, versions)
    for part in (
        "broker-1:9092",
        "'in'",
        "'out'",
        "'in.dlq'",
        "minilm 0.1.0 (default): ready on GPU, bfloat16",
        "digits 1: loading",
        "batch 1,8 x seq 32,128",
        "GPU (cuda:0)",
        "dtype bfloat16",
    ):
        assert part in text, part
    assert fields["topics"] == {"requests": "in", "answers": "out", "dead_letters": "in.dlq"}
    assert [m["version"] for m in fields["models"]] == ["0.1.0", "1"]
    assert [device_kind(d) for d in ("cpu", "cuda:1", "rocm:0", "tpu:3")] == [
        "CPU",
        "GPU",
        "GPU",
        "TPU",
    ]


def test_compiles_outside_loading_and_warm_up_are_counted_as_unexpected() -> None:
    import jax
    import numpy as np

    compiles.install()
    compiles.install()  # idempotent: one listener
    before = compiles.counts()
    with compiles.expected():
        jax.jit(lambda x: x * 3 + 1)(np.arange(5)).block_until_ready()
    warm = compiles.counts()
    assert warm.total == before.total + 1
    assert warm.unexpected == before.unexpected

    def serve() -> None:  # a compile on another thread, outside any expected() scope
        jax.jit(lambda x: x * 5 - 2)(np.arange(7)).block_until_ready()

    with compiles.expected():  # the scope is per thread: it does not cover the other one
        thread = threading.Thread(target=serve)
        thread.start()
        thread.join(60)
    after = compiles.counts()
    assert after.total == warm.total + 1
    assert after.unexpected == warm.unexpected + 1
    assert after.seconds > warm.seconds
