"""Fresh per-test topic and consumer-group names for a worker, as WorkerProcess settings."""

from __future__ import annotations

import uuid

from streams.admin import ensure_topics


def worker_names(prefix: str) -> dict[str, str]:
    """``request_topic``, ``response_topic`` and ``app_id`` unique to this call."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "request_topic": f"{prefix}-requests-{suffix}",
        "response_topic": f"{prefix}-responses-{suffix}",
        "app_id": f"{prefix}-app-{suffix}",
    }


async def create_worker_topics(bootstrap: str, prefix: str, partitions: int = 4) -> dict[str, str]:
    """Fresh names (see worker_names) with their request and response topics created."""
    names = worker_names(prefix)
    await ensure_topics(
        bootstrap, {names["request_topic"]: partitions, names["response_topic"]: partitions}
    )
    return names
