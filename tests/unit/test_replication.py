"""The replication factor of the topics kinfer creates: the broker's default unless set."""

from __future__ import annotations

from typing import Any

import pytest

from streams.admin import broker_replication_factor
from streams.settings import Settings

pytestmark = pytest.mark.timeout(30)


class Response:
    """A DescribeConfigs response: resources of (error, message, type, name, entries)."""

    def __init__(self, entries: list[tuple[str, str | None]], error_code: int = 0) -> None:
        rows = [(name, value, False, True, False) for name, value in entries]
        self.resources = [(error_code, None, 4, "1", rows)]


class Admin:
    def __init__(self, brokers: int, configs: Any) -> None:
        self.brokers = brokers
        self.configs = configs
        self.asked: list[Any] = []

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": i + 1} for i in range(self.brokers)]}

    async def describe_configs(self, resources: list[Any]) -> list[Response]:
        self.asked.extend(resources)
        if isinstance(self.configs, Exception):
            raise self.configs
        return list(self.configs)


async def test_the_brokers_default_replication_factor_is_used() -> None:
    admin = Admin(5, [Response([("default.replication.factor", "3")])])
    assert await broker_replication_factor(admin) == 3  # type: ignore[arg-type]
    [resource] = admin.asked
    assert "default.replication.factor" in resource.configs


@pytest.mark.parametrize(
    ("brokers", "configs", "expected"),
    [
        (1, ConnectionError("closed"), 1),  # the embedded Tansu closes the connection
        (2, ConnectionError("closed"), 2),
        (6, ConnectionError("closed"), 3),
        (4, [Response([("default.replication.factor", "3")], error_code=29)], 3),  # refused
        (1, [Response([])], 1),
    ],
)
async def test_a_broker_that_does_not_say_gets_its_broker_count_up_to_3(
    brokers: int, configs: Any, expected: int
) -> None:
    assert await broker_replication_factor(Admin(brokers, configs)) == expected  # type: ignore[arg-type]


def test_the_setting_defaults_to_the_brokers_default() -> None:
    assert Settings().replication_factor is None
    assert Settings(replication_factor=3).replication_factor == 3
