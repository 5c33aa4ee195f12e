"""Enrichment routes as declared: the route spec, the settings list, the `kinfer enrich` command."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from streams.cli import main
from streams.enrich.preflight import check_models
from streams.enrich.route import EnrichRoute, RouteError, check_routes
from streams.settings import Settings

ORDERS: dict[str, Any] = {
    "source": "orders",
    "sink": "orders.enriched",
    "model": "minilm",
    "text": "$.note",
}


def test_a_route_has_defaults_and_canonical_paths() -> None:
    route = EnrichRoute(**{**ORDERS, "text": "note", "id": "order.id"})
    assert route.text == "$.note"
    assert route.text_path.steps == ("note",)
    assert route.id == "$.order.id"
    assert route.id_path is not None
    assert route.id_path.steps == ("order", "id")
    assert route.dead_letter_topic == "orders.enriched.dlq"
    assert route.version is None
    assert route.encoding == "float"
    assert route.output_field_for("embedding") == "embedding"
    assert route.output_field_for("classification") == "prediction"
    named = EnrichRoute(**ORDERS, output_field="vec", dlq="orders.bad")
    assert named.output_field_for("classification") == "vec"
    assert named.dead_letter_topic == "orders.bad"


def test_an_output_kind_a_route_cannot_write_is_refused() -> None:
    with pytest.raises(RouteError, match="answers 'tokens'"):
        EnrichRoute(**ORDERS).output_field_for("tokens")


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"text": "$.a["}, "bad field path '\\$.a\\['"),
        ({"text": "$.lines[*].note"}, "can match several values"),
        ({"text": "$"}, "the whole event"),
        ({"id": "$..x"}, "bad field path"),
        ({"source": "bad topic"}, "not a legal Kafka topic name"),
        ({"sink": "__consumer_offsets"}, "internal topic"),
        ({"sink": "orders"}, "sink and source are both 'orders'"),
        ({"dlq": "orders"}, "dead-letter topic 'orders' is the source or the sink"),
        ({"model": ""}, "at least 1 character"),
        ({"output_field": ""}, "at least 1 character"),
        ({"encoding": "hex"}, "'float' or 'base64'"),
        ({"partitions": 3}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_route_is_refused_with_its_reason(change: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        EnrichRoute(**{**ORDERS, **change})


def test_routes_are_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = (
        '[{"source": "orders", "sink": "orders.enriched", "model": "minilm", "text": "$.note"},'
        ' {"source": "scans", "sink": "scans.labelled", "model": "digits", "text": "$.pixels",'
        '  "id": "$.scan_id", "output_field": "digit"}]'
    )
    monkeypatch.setenv("KINFER_ENRICH_ROUTES", routes)
    first, second = Settings().enrich_routes
    assert first == EnrichRoute(**ORDERS)
    assert (second.model, second.text, second.id, second.output_field) == (
        "digits",
        "$.pixels",
        "$.scan_id",
        "digit",
    )


def test_no_routes_by_default() -> None:
    assert Settings().enrich_routes == ()


@pytest.mark.parametrize(
    ("routes", "complaint"),
    [
        ([ORDERS, ORDERS], "declared twice"),
        ([{**ORDERS, "sink": "kinfer.responses"}], "its sink 'kinfer.responses' is one of kinfer"),
        ([{**ORDERS, "source": "kinfer.requests"}], "its source 'kinfer.requests'"),
        ([{**ORDERS, "dlq": "kinfer.requests.dlq"}], "dead-letter topic 'kinfer.requests.dlq'"),
    ],
)
def test_clashing_routes_are_refused_by_the_settings(
    routes: list[dict[str, Any]], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(enrich_routes=routes)


def test_two_routes_may_read_one_source_and_chain() -> None:
    routes = [
        EnrichRoute(**ORDERS),
        EnrichRoute(**{**ORDERS, "sink": "orders.labelled", "model": "digits"}),
        EnrichRoute(**{**ORDERS, "source": "orders.enriched", "sink": "orders.twice"}),
    ]
    check_routes(routes, {"kinfer.requests"})


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--text", "$.a["], "invalid route: --text: bad field path"),
        (["--text", "$.note", "--output-field", ""], "--output-field: String should have"),
        (["--text", "$.note", "--sink", "orders"], "invalid route: the route: sink and source"),
    ],
)
def test_kinfer_enrich_refuses_a_bad_route_before_anything_starts(
    args: list[str], complaint: str
) -> None:
    base = ["enrich", "--source", "orders", "--sink", "orders.enriched", "--model", "minilm"]
    result = CliRunner().invoke(main, [*base, *args])
    assert result.exit_code == 1
    assert complaint in result.output
    assert "Traceback" not in result.output


def test_kinfer_enrich_runs_a_worker_serving_its_route_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streams.cli

    monkeypatch.setenv("KINFER_ENRICH_ROUTES", f"[{orjson.dumps(ORDERS).decode()}]")
    ran: list[tuple[Settings, str]] = []
    monkeypatch.setattr(streams.cli, "_run_worker", lambda s, level: ran.append((s, level)))
    args = [
        *("enrich", "--source", "scans", "--sink", "scans.labelled", "--model", "digits"),
        *("--text", "$.pixels", "--id", "scan_id", "--output-field", "digit", "--version", "1"),
        *("--dlq", "scans.bad", "--web-port", "6071", "--broker", "kafka://127.0.0.1:19999"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    [(settings, level)] = ran
    assert settings.enrich_routes == (
        EnrichRoute(
            source="scans",
            sink="scans.labelled",
            model="digits",
            text="$.pixels",
            id="$.scan_id",
            output_field="digit",
            version="1",
            dlq="scans.bad",
        ),
    ), "its own route, instead of KINFER_ENRICH_ROUTES"
    assert (settings.web_port, settings.bootstrap_servers, level) == (
        6071,
        "127.0.0.1:19999",
        "info",
    )


@pytest.mark.parametrize(
    ("change", "settings", "complaint"),
    [
        ({"model": "bert"}, {}, "the model 'bert' is not served by this worker; it serves"),
        ({"model": "digits"}, {"models": "minilm"}, "(KINFER_MODELS=minilm)"),
        ({"version": "9.9"}, {}, "'minilm' has no version '9.9' here; its versions: 0.1.0"),
        ({"model": "digits", "encoding": "base64"}, {}, "answers classification"),
        ({"model": "digits"}, {"model_dir": "/somewhere"}, "serves only 'minilm'"),
    ],
)
def test_a_route_to_a_model_the_worker_will_not_serve_is_refused_before_loading(
    change: dict[str, Any], settings: dict[str, Any], complaint: str
) -> None:
    route = EnrichRoute(**{**ORDERS, **change})
    with pytest.raises(RouteError) as caught:
        check_models(Settings(**settings), [route])
    assert complaint in str(caught.value)


def test_routes_to_served_models_and_versions_pass_the_check() -> None:
    routes = [
        EnrichRoute(**ORDERS),
        EnrichRoute(**{**ORDERS, "sink": "o.bf16", "version": "0.1.0-bf16", "encoding": "base64"}),
        EnrichRoute(**{**ORDERS, "sink": "o.digits", "model": "digits"}),
    ]
    check_models(Settings(), routes)
    check_models(Settings(models=("minilm:0.1.0",)), routes[:1])
