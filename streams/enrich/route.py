"""An enrichment route: which topic of the user's own events to read, what to predict, and where
to write each event enriched with its prediction.

A route is declared on the command line (``kinfer enrich``) or in ``KINFER_ENRICH_ROUTES``, a
JSON list of objects with the fields of :class:`EnrichRoute`::

    KINFER_ENRICH_ROUTES='[{"source": "orders", "sink": "orders.enriched", "model": "minilm",
                            "text": "$.note", "id": "$.order_id"}]'

``text`` and ``id`` are field paths (`streams.fieldpath`: dotted keys and list indices, such as
``$.note`` or ``$.order.lines[0].sku``), each naming one value of the event. The dead-letter
topic defaults to ``<sink>.dlq``: the sink and its dead letters are kinfer's outputs (the worker
creates both), where the source and a ``<source>.dlq`` may well be the user's own.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.errors import KinferError
from streams.fieldpath import FieldPath, FieldPathError

__all__ = ["EnrichRoute", "RouteError", "check_routes"]

#: Kafka's legal topic names.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
#: The output field when the route does not name one, by what the model answers.
DEFAULT_OUTPUT_FIELDS = {"embedding": "embedding", "classification": "prediction"}


class RouteError(KinferError, ValueError):
    """A route that cannot be served as declared (its topics, its model, its paths)."""


class EnrichRoute(BaseModel):
    """One route: events of ``source`` -> the model -> the same events, enriched, on ``sink``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="Topic of the user's events; it must exist.")
    sink: str = Field(description="Topic the enriched events go to (created if missing).")
    model: str = Field(min_length=1, description="Model name, as a request names it.")
    text: str = Field(
        description="Field path of the model's input in each event: a string for a text "
        "model, an 8x8 image for digits (e.g. '$.note')."
    )
    id: str | None = Field(
        None,
        description="Field path of the event's id (a string or an integer), written in the "
        "'kinfer-id' header of the enriched event and of its dead letter.",
    )
    version: str | None = Field(
        None, description="Pin a model version; default: the model's default version."
    )
    output_field: str | None = Field(
        None,
        min_length=1,
        description="Top-level field the prediction is added under; default 'embedding' for "
        "an encoder, 'prediction' for a classifier.",
    )
    dlq: str | None = Field(None, description="Dead-letter topic; default '<sink>.dlq'.")
    encoding: Literal["float", "base64"] = Field(
        "float",
        description="How an embedding is written: a list of floats, or the base64 of its "
        "little-endian float32 bytes (as a request's 'encoding').",
    )

    @field_validator("source", "sink", "dlq")
    @classmethod
    def _topic_name(cls, value: str | None) -> str | None:
        if value is not None:
            if not _TOPIC_NAME.fullmatch(value):
                raise ValueError(f"{value[:80]!r} is not a legal Kafka topic name")
            if value.startswith("__"):
                raise ValueError(f"{value!r} is an internal topic (its name starts with '__')")
        return value

    @field_validator("text", "id")
    @classmethod
    def _one_field(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            path = FieldPath.parse(value.strip())
        except FieldPathError as exc:
            raise ValueError(str(exc)) from None
        if not path.steps:
            raise ValueError(f"{value!r} is the whole event: name one of its fields, e.g. $.note")
        if path.has_wildcard:
            raise ValueError(f"{value!r} can match several values: name one field, without [*]")
        return path.text

    @model_validator(mode="after")
    def _distinct_topics(self) -> EnrichRoute:
        if self.sink == self.source:
            raise ValueError(
                f"sink and source are both {self.source!r}: enriched events would be read again"
            )
        if self.dead_letter_topic in (self.source, self.sink):
            raise ValueError(
                f"the dead-letter topic {self.dead_letter_topic!r} is the source or the sink"
            )
        return self

    @property
    def dead_letter_topic(self) -> str:
        """Where events that cannot be enriched go: ``dlq``, default ``<sink>.dlq``."""
        return self.dlq or f"{self.sink}.dlq"

    @property
    def name(self) -> str:
        """``source -> sink``, for log lines and agent names."""
        return f"{self.source} -> {self.sink}"

    @cached_property
    def text_path(self) -> FieldPath:
        """The parsed ``text`` path."""
        return FieldPath.parse(self.text)

    @cached_property
    def id_path(self) -> FieldPath | None:
        """The parsed ``id`` path, if the route has one."""
        return None if self.id is None else FieldPath.parse(self.id)

    def output_field_for(self, output_kind: str) -> str:
        """The output field: the route's own, or the default for what the model answers."""
        if self.output_field is not None:
            return self.output_field
        try:
            return DEFAULT_OUTPUT_FIELDS[output_kind]
        except KeyError:
            raise RouteError(
                f"route {self.name}: the model {self.model!r} answers {output_kind!r}, which "
                "an enrichment route cannot write"
            ) from None


def check_routes(routes: Sequence[EnrichRoute], reserved: Collection[str]) -> None:
    """Refuse routes that would clash: the same source and sink twice, or a topic of theirs that
    is one of kinfer's own (``reserved``: the request, response and dead-letter topics)."""
    seen: set[tuple[str, str]] = set()
    for route in routes:
        if (route.source, route.sink) in seen:
            raise RouteError(f"the route {route.name} is declared twice")
        seen.add((route.source, route.sink))
        for role, topic in (
            ("source", route.source),
            ("sink", route.sink),
            ("dead-letter topic", route.dead_letter_topic),
        ):
            if topic in reserved:
                raise RouteError(
                    f"route {route.name}: its {role} {topic!r} is one of kinfer's own topics"
                )
