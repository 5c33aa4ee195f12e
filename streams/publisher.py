"""Publishing answers through the Faust app's producer."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from streams.contract import Headers


class FaustPublisher:
    """Sends through ``app.producer``; the returned awaitable resolves on the broker's ack."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        """Hand one record to the producer; await the result for its delivery."""
        delivery: Awaitable[object] = await self._app.producer.send(
            topic, key, value, None, None, list(headers)
        )
        return delivery
