"""Shared fixtures.

Broker tests (marker `broker`) get a Tansu broker started once per session on a free
127.0.0.1 port, or the broker named by `KINFER_TEST_BOOTSTRAP` ("host:port"), as faust's
integration conftest does. A test that asks for a broker fixture is marked `broker`
automatically, so `-m "not broker"` never starts one.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from streams.broker import EmbeddedBroker, ExternalBroker

BOOTSTRAP_ENV = "KINFER_TEST_BOOTSTRAP"
_BROKER_FIXTURES = frozenset({"broker", "embedded_broker", "fresh_broker"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a broker fixture as `broker` (before `-m` deselects)."""
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        uses_broker = _BROKER_FIXTURES.intersection(fixturenames)
        if uses_broker and item.get_closest_marker("broker") is None:
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session", autouse=True)
def _worker_logs_in_pytest_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Worker and gateway logs go under pytest's temp dir (kept for the last few runs), not
    loose in /tmp."""
    from tests.support.child import ChildProcess

    ChildProcess.log_dir = tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker | ExternalBroker]:
    """The session's broker: `KINFER_TEST_BOOTSTRAP` if set, else an embedded Tansu.

    Shared by all tests: use `unique_name` for topics and groups, never restart it.
    """
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield ExternalBroker(external)
        return
    with EmbeddedBroker(silent=True) as embedded:
        yield embedded


@pytest.fixture(scope="session")
def embedded_broker(broker: EmbeddedBroker | ExternalBroker) -> EmbeddedBroker:
    """The session broker when it is an embedded Tansu; skips against an external broker."""
    if not isinstance(broker, EmbeddedBroker):
        pytest.skip(f"needs the embedded broker ({BOOTSTRAP_ENV} is set)")
    return broker


@pytest.fixture
def fresh_broker() -> Iterator[EmbeddedBroker]:
    """A Tansu broker of the test's own, on a free port: free to restart, stop or break."""
    with EmbeddedBroker(silent=True) as embedded:
        yield embedded


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of per-test topic and group names: `unique_name("requests")`.

    Names look like `t-requests-test_round_trip-1a2b3c4d`: legal Kafka topic names, unique per
    call, and traceable to the test that made them.
    """
    test = re.sub(r"[^A-Za-z0-9._-]+", "_", request.node.name)[:80]

    def make(prefix: str = "t") -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", prefix)[:80]
        return f"t-{safe}-{test}-{uuid.uuid4().hex[:8]}"

    return make
