"""A kinfer Faust app running in the test's own event loop, against the real broker.

For tests that swap one part (the model, the publisher) for a fake and watch the rest - Faust,
the consumer group, commits, the broker - work for real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from streams import app as app_module
from streams.admin import ensure_topics
from streams.broker import free_port
from streams.model_manager import ModelManager
from streams.settings import Settings


async def fresh_settings(
    bootstrap: str, unique_name: Callable[[str], str], partitions: int, **overrides: Any
) -> Settings:
    """Settings with the test's own topics (created) and consumer group."""
    settings = Settings(
        broker_url=f"kafka://{bootstrap}",
        app_id=unique_name("app"),
        request_topic=unique_name("req"),
        response_topic=unique_name("resp"),
        partitions=partitions,
        web_port=free_port(),
        **overrides,
    )
    await ensure_topics(
        bootstrap, {settings.request_topic: partitions, settings.response_topic: partitions}
    )
    return settings


@asynccontextmanager
async def running_app(
    settings: Settings,
    runner: Any,
    monkeypatch: pytest.MonkeyPatch,
    *,
    publisher: type | None = None,
    ready_timeout_s: float = 30.0,
) -> AsyncIterator[app_module.KinferApp]:
    """Start the app with ``runner`` as its model (and ``publisher``), until it is ready."""

    async def serve_it(manager: ModelManager) -> object:
        return manager.serve_model(runner)

    monkeypatch.setattr(ModelManager, "load_initial", serve_it)
    if publisher is not None:
        monkeypatch.setattr(app_module, "FaustPublisher", publisher)
    app = app_module.create_app(settings)
    await app.start()
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not app.ready:
            assert time.monotonic() < deadline, "the app did not become ready"
            await asyncio.sleep(0.2)
        yield app
    finally:
        await app.stop()
