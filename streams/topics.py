"""The topics kinfer owns, and their partition counts."""

from __future__ import annotations

from streams.settings import Settings


def declared_topics(settings: Settings) -> dict[str, int]:
    """Topic name -> partitions, for every topic the worker creates if it is missing."""
    return {
        settings.request_topic: settings.partitions,
        settings.response_topic: settings.partitions,
        settings.dead_letter_topic: 1,
    }
