"""The reply-to allow-list: which topics a request's ``reply-to`` header may send its answer to.

Without it, a request could make the worker write anywhere its Kafka user may: the group
offsets topic (``__consumer_offsets``), kinfer's own request topic (a loop), the dead-letter
topic, another application's topics. So a ``reply-to`` is followed only when it names

- the response topic (``KINFER_RESPONSE_TOPIC``, always allowed), or
- a topic whose whole name matches ``KINFER_REPLY_TO_PATTERN`` (default
  ``kinfer\\.(responses|replies\\..+)``: ``kinfer.responses`` and every ``kinfer.replies.<x>``),

and never, whatever the pattern says, the request topic, the dead-letter topic or a name
starting with ``__`` (Kafka's and its tools' internal topics). A request whose ``reply-to`` is
refused is answered ``INVALID_REQUEST`` on the response topic and dead-lettered; nothing is
written to the topic it named (``streams.contract.route_for``, ``decode_request``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streams.settings import Settings

__all__ = ["INTERNAL_PREFIX", "ReplyToPolicy"]

#: Topic names starting with this are internal to Kafka or its tools: never a reply-to.
INTERNAL_PREFIX = "__"


@dataclass(frozen=True)
class ReplyToPolicy:
    """Decides whether a (legal) topic name may receive answers."""

    response_topic: str
    pattern: re.Pattern[str]
    forbidden: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplyToPolicy:
        """The policy the worker applies: response topic, pattern, request and DLQ refused."""
        return cls(
            response_topic=settings.response_topic,
            pattern=re.compile(settings.reply_to_pattern),
            forbidden=frozenset({settings.request_topic, settings.dead_letter_topic}),
        )

    def refusal(self, topic: str) -> str | None:
        """Why ``topic`` may not receive answers, or None when it may."""
        if topic.startswith(INTERNAL_PREFIX):
            return (
                f"'reply-to' topic {topic!r} is never allowed: names starting with "
                f"{INTERNAL_PREFIX!r} are Kafka's internal topics"
            )
        if topic in self.forbidden:
            return (
                f"'reply-to' topic {topic!r} is never allowed: it is this worker's request or "
                "dead-letter topic"
            )
        if topic == self.response_topic or self.pattern.fullmatch(topic):
            return None
        return (
            f"'reply-to' topic {topic!r} is not allowed: answers go to {self.response_topic!r} "
            f"or a topic matching KINFER_REPLY_TO_PATTERN {self.pattern.pattern!r}"
        )
