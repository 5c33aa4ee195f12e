"""Reading an event and building its enriched record: the splice, the predictions, the headers."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from streams.enrich.errors import Unenrichable
from streams.enrich.record import (
    ENRICH_HEADERS,
    encode_prediction,
    read_event,
    send_timestamp,
    sink_headers,
    splice,
)
from streams.enrich.route import EnrichRoute
from streams.records import Inbound

ROUTE = EnrichRoute(
    source="orders", sink="orders.enriched", model="minilm", text="$.note", id="$.order_id"
)


def read(value: bytes | None, route: EnrichRoute = ROUTE, max_bytes: int = 10_000) -> object:
    return read_event(value, route, "embedding", max_bytes)


def test_an_event_gives_its_text_and_id() -> None:
    event = read_event(
        b'{"order_id": "A17", "note": "left at the door", "n": 1}', ROUTE, "embedding", 1000
    )
    assert (event.value, event.id, event.empty) == ("left at the door", "A17", False)
    nested = EnrichRoute(**{**ROUTE.model_dump(), "text": "$.lines[1].text", "id": "$.ids[0]"})
    doc = {"lines": [{"text": "a"}, {"text": "b"}], "ids": [7]}
    event = read_event(orjson.dumps(doc), nested, "embedding", 1000)
    assert (event.value, event.id) == ("b", 7)


@pytest.mark.parametrize(
    ("value", "code", "message", "event_id"),
    [
        (b"\xff not json", "INVALID_JSON", "the event's value is not valid UTF-8 JSON", None),
        (None, "INVALID_JSON", "no value (a tombstone)", None),
        (b"[1, 2]", "INVALID_REQUEST", "the event is an array; only a JSON object", None),
        (b'"a string"', "INVALID_REQUEST", "the event is a string", None),
        (
            b'{"order_id": "A1", "notes": "x"}',
            "INVALID_REQUEST",
            "the text path $.note matches nothing: $ has no key 'note'",
            "A1",
        ),
        (b'{"note": "x"}', "INVALID_REQUEST", "the id path $.order_id matches nothing", None),
        (
            b'{"note": "x", "order_id": {"a": 1}}',
            "INVALID_REQUEST",
            "the id path $.order_id holds an object: an id is a string or an integer",
            None,
        ),
        (b'{"note": "x", "order_id": true}', "INVALID_REQUEST", "holds a boolean", None),
        (
            b'{"order_id": 5, "note": "x", "embedding": [1]}',
            "INVALID_REQUEST",
            "the event already has a field 'embedding'",
            5,
        ),
        (b'{"order_id": 5, "note": "' + b"x" * 200 + b'"}', "INPUT_TOO_LARGE", "KINFER_MAX_", None),
    ],
)
def test_an_event_that_cannot_be_enriched_says_why(
    value: bytes | None, code: str, message: str, event_id: object
) -> None:
    with pytest.raises(Unenrichable) as caught:
        read(value, max_bytes=100)
    assert caught.value.error.code.value == code
    assert message in caught.value.error.message
    assert caught.value.event_id == event_id


def test_the_text_may_be_any_json_value_here() -> None:
    # whether the model takes it is the pipeline's check (a string for text, an image for digits)
    event = read_event(b'{"order_id": 1, "note": 42}', ROUTE, "embedding", 1000)
    assert event.value == 42


ORIGINAL = (
    b'{"order_id": "A17", "note": "caf\\u00e9 \xc3\xa9", "total": 1.50, '
    b'"big": 123456789012345678901234567890, "tags": [ ] }  \n'
)


def test_the_splice_keeps_every_original_byte_and_adds_the_field_last() -> None:
    enriched = splice(ORIGINAL, "embedding", b"[0.5,-1.0]", empty=False)
    head = ORIGINAL.rstrip()[:-1]
    assert enriched.startswith(head)
    assert enriched[len(head) :] == b',"embedding":[0.5,-1.0]}'
    doc = orjson.loads(enriched.replace(b"123456789012345678901234567890", b"0"))
    assert list(doc) == ["order_id", "note", "total", "big", "tags", "embedding"]
    assert doc["note"] == "café é"
    assert doc["embedding"] == [0.5, -1.0]


def test_the_splice_into_an_empty_object_and_an_odd_field_name() -> None:
    assert splice(b"{}", "e", b"1", empty=True) == b'{"e":1}'
    assert splice(b" { } ", 'a "q"', b"[]", empty=True) == b' { "a \\"q\\"":[]}'


def test_an_embedding_is_written_as_floats_or_base64() -> None:
    row = np.array([0.25, -0.5, 1 / 3], np.float32)
    floats = orjson.loads(encode_prediction("embedding", "float", row))
    assert np.array_equal(np.array(floats, np.float32), row)
    text = orjson.loads(encode_prediction("embedding", "base64", row))
    assert np.array_equal(np.frombuffer(base64.b64decode(text), "<f4"), row)


def test_a_classification_is_written_as_label_and_probabilities() -> None:
    row = np.zeros(10, np.float32)
    row[7] = 0.9
    row[1] = 0.1
    prediction = orjson.loads(encode_prediction("classification", "float", row))
    assert prediction["label"] == 7
    assert prediction["probabilities"][7] == pytest.approx(0.9)


def test_sink_headers_keep_the_source_ones_and_add_kinfers() -> None:
    source = (
        ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate", b"rojo=00f067aa0ba902b7"),
        ("x-tenant", b"t1"),
        ("plain", b""),
        ("kinfer-model", b"an earlier model"),
    )
    inbound = Inbound("orders", 3, 41, b"k", b"{}", source, 0.0)
    headers = sink_headers(inbound, "minilm", "0.1.0", "A17")
    assert headers == (
        *source[:4],
        ("kinfer-model", b"minilm"),
        ("kinfer-version", b"0.1.0"),
        ("kinfer-source-topic", b"orders"),
        ("kinfer-source-partition", b"3"),
        ("kinfer-source-offset", b"41"),
        ("kinfer-id", b"A17"),
    )
    assert {name for name, _ in headers[4:]} == set(ENRICH_HEADERS)
    without_id = dict(sink_headers(inbound, "minilm", "0.1.0", None))
    assert "kinfer-id" not in without_id


def test_the_send_timestamp_gives_back_the_source_millisecond() -> None:
    rng = np.random.default_rng(7)
    for ms in [
        1,
        999,
        1_700_000_000_123,
        *rng.integers(1_600_000_000_000, 2_000_000_000_000, 2000),
    ]:
        stamp = send_timestamp(int(ms) / 1000.0)  # as Faust hands it over: ms / 1000
        assert stamp is not None
        assert int(stamp * 1000.0) == ms, "as Faust's producer turns it back into milliseconds"
    assert send_timestamp(0.0) is None
