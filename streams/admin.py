"""Topic administration and broker checks against any Kafka-compatible broker (aiokafka admin)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.broker import BrokerError, parse_bootstrap
from streams.security import PLAINTEXT, KafkaSecurity, SecurityError, check_connection

__all__ = [
    "BrokerUnavailableError",
    "TopicCreationError",
    "broker_replication_factor",
    "ensure_topics",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_DEFAULT_REPLICATION = "default.replication.factor"
#: Replicas kinfer asks for when the broker will not say its default (with enough brokers).
FALLBACK_REPLICATION = 3


class BrokerUnavailableError(BrokerError, TimeoutError):
    """No broker answered at `bootstrap` within the time allowed."""

    def __init__(self, bootstrap: str, timeout_s: float, last_error: BaseException | None) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.last_error = last_error
        detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
        super().__init__(f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s{detail}")


class TopicCreationError(BrokerError):
    """The broker refused to create a topic (other than because it already exists)."""

    def __init__(self, topic: str, error_code: int, error_message: str | None) -> None:
        self.topic = topic
        self.error_code = error_code
        self.error_message = error_message
        detail = error_message or "no message"
        super().__init__(f"could not create topic {topic!r}: error {error_code} ({detail})")


async def wait_for_broker(
    bootstrap: str, timeout_s: float = 15.0, *, security: KafkaSecurity = PLAINTEXT
) -> None:
    """Return once a broker at `bootstrap` answers a metadata request (aiokafka admin client).

    Raises `BrokerUnavailableError` after `timeout_s`, and `SecurityError` at once when TLS or
    SASL fails in a way retrying cannot fix (see `streams.security.check_connection`).
    """
    host, port = parse_bootstrap(bootstrap)
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailableError(bootstrap, timeout_s, last_error)
        request_ms = max(100, int(min(remaining, 5.0) * 1000))
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=request_ms, **security.aiokafka()
        )
        try:
            async with asyncio.timeout(remaining):
                await check_connection(security, host, port, timeout_s=request_ms / 1000)
                await admin.start()
                cluster = await admin.describe_cluster()
            if cluster.get("brokers"):
                return
            last_error = ConnectionError("metadata listed no brokers")
        except SecurityError:
            raise
        except Exception as exc:  # OSError, TimeoutError, aiokafka's KafkaError: retry
            last_error = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    timeout_s: float = 15.0,
    replication_factor: int | None = 1,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create `topics` (name -> partition count) unless they exist, and wait until all are listed.

    ``replication_factor`` None means the broker's default (`broker_replication_factor`).

    Idempotent: a topic that already exists is left as it is (a different partition count is
    logged, not changed). Raises `TopicCreationError` on any other refusal,
    `BrokerUnavailableError` if the broker does not answer within `timeout_s`, and
    `SecurityError` when TLS or SASL cannot work as configured.
    """
    if not topics:
        return
    for name, partitions in topics.items():
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partition count must be >= 1, got {partitions}")
    deadline = time.monotonic() + timeout_s
    await wait_for_broker(bootstrap, timeout_s, security=security)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **security.aiokafka()
    )
    try:
        async with asyncio.timeout_at(_loop_deadline(deadline)):
            await admin.start()
            if replication_factor is None:
                replication_factor = await broker_replication_factor(admin)
            new = [NewTopic(name, n, replication_factor) for name, n in topics.items()]
            response = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
            for topic, code, message in _topic_errors(response):
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise TopicCreationError(topic, code, message)
            await _wait_listed(admin, topics)
    except TimeoutError as exc:
        raise BrokerUnavailableError(bootstrap, timeout_s, exc) from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def broker_replication_factor(admin: AIOKafkaAdminClient) -> int:
    """The broker's ``default.replication.factor``, what it gives topics it creates itself.

    aiokafka's CreateTopics (v0-v3) cannot ask for "the broker's default" (-1, v4+), so kinfer
    reads it (DescribeConfigs). A broker that will not say (the embedded Tansu, an ACL) gets
    the number of its brokers, up to ``FALLBACK_REPLICATION``.
    """
    cluster = await admin.describe_cluster()
    brokers = cluster.get("brokers") or []
    if brokers:
        resource = ConfigResource(
            ConfigResourceType.BROKER,
            str(brokers[0]["node_id"]),
            configs={_DEFAULT_REPLICATION: None},
        )
        try:
            async with asyncio.timeout(5):
                responses = await admin.describe_configs([resource])
            value = _config_value(responses, _DEFAULT_REPLICATION)
            if value is not None and int(value) >= 1:
                return int(value)
        except Exception as exc:  # unsupported, refused, or the connection closed on us
            log.info("the broker did not say its %s: %r", _DEFAULT_REPLICATION, exc)
    factor = max(1, min(FALLBACK_REPLICATION, len(brokers)))
    log.info("creating topics with replication factor %d (%d brokers)", factor, len(brokers))
    return factor


def _config_value(responses: object, name: str) -> str | None:
    """``name``'s value in DescribeConfigs responses (any version), or None."""
    for response in responses or []:  # type: ignore[attr-defined]
        for resource in getattr(response, "resources", []):
            if resource[0] != 0:  # the broker refused this resource
                continue
            for entry in resource[4]:
                if entry[0] == name and entry[1] is not None:
                    return str(entry[1])
    return None


def _loop_deadline(monotonic_deadline: float) -> float:
    """Convert a `time.monotonic()` deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    """(topic, error_code, error_message) from any CreateTopics response version."""
    out: list[tuple[str, int, str | None]] = []
    for entry in getattr(response, "topic_errors", []):
        topic, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        out.append((topic, code, message))
    return out


async def _wait_listed(admin: AIOKafkaAdminClient, topics: Mapping[str, int]) -> None:
    """Poll metadata until every topic is described without error (Kafka creates lazily)."""
    while True:
        described = await admin.describe_topics(list(topics))
        ready = {
            d["topic"]: len(d["partitions"])
            for d in described
            if d["error_code"] == 0 and d["partitions"]
        }
        if set(topics) <= set(ready):
            for name, wanted in topics.items():
                if ready[name] != wanted:
                    log.warning(
                        "topic %r exists with %d partitions (wanted %d); left as it is",
                        name,
                        ready[name],
                        wanted,
                    )
            return
        await asyncio.sleep(0.1)
