"""Topic administration and broker checks against any Kafka-compatible broker (aiokafka admin)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.broker import BrokerError

__all__ = ["BrokerUnavailableError", "TopicCreationError", "ensure_topics", "wait_for_broker"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


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


async def wait_for_broker(bootstrap: str, timeout_s: float = 15.0) -> None:
    """Return once a broker at `bootstrap` answers a metadata request (aiokafka admin client).

    Raises `BrokerUnavailableError` after `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailableError(bootstrap, timeout_s, last_error)
        request_ms = max(100, int(min(remaining, 5.0) * 1000))
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_ms)
        try:
            async with asyncio.timeout(remaining):
                await admin.start()
                cluster = await admin.describe_cluster()
            if cluster.get("brokers"):
                return
            last_error = ConnectionError("metadata listed no brokers")
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
    replication_factor: int = 1,
) -> None:
    """Create `topics` (name -> partition count) unless they exist, and wait until all are listed.

    Idempotent: a topic that already exists is left as it is (a different partition count is
    logged, not changed). Raises `TopicCreationError` on any other refusal and
    `BrokerUnavailableError` if the broker does not answer within `timeout_s`.
    """
    if not topics:
        return
    for name, partitions in topics.items():
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partition count must be >= 1, got {partitions}")
    deadline = time.monotonic() + timeout_s
    await wait_for_broker(bootstrap, timeout_s)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        async with asyncio.timeout_at(_loop_deadline(deadline)):
            await admin.start()
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
