"""``kinfer enrich``: a worker that also serves one enrichment route."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

if TYPE_CHECKING:
    from streams.settings import Settings

__all__ = ["check_routes_first", "enrich"]

_EPILOG = """\b
Field paths (--text, --id): a small JSONPath subset of dotted keys and list indices:
  $.note                the top-level key "note"
  $.order.lines[0].sku  nested keys, then the first element of a list ([-1]: the last)
  $['key with spaces']  a key that is not a plain name
A path that matches nothing, in an event, sends that event to the dead-letter topic.

\b
Example (against `make run`):
  kinfer enrich --source orders --sink orders.enriched --model minilm \\
      --text '$.note' --id '$.order_id' --web-port 6067
"""


@click.command(epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.option("--source", required=True, help="Topic of your events (it must exist).")
@click.option("--sink", required=True, help="Topic of the enriched events (created if missing).")
@click.option("--model", required=True, help="Model name, e.g. minilm or digits.")
@click.option(
    "--text",
    "text_path",
    required=True,
    help="Field path of the model's input in each event (a string; an 8x8 image for digits).",
)
@click.option(
    "--id", "id_path", help="Field path of the event's id, written in the 'kinfer-id' header."
)
@click.option(
    "--output-field",
    help="Top-level field the prediction is added under [default: embedding, or prediction "
    "for a classifier].",
)
@click.option("--version", "model_version", help="Pin a model version [default: its default].")
@click.option("--dlq", help="Dead-letter topic [default: <sink>.dlq].")
@click.option(
    "--encoding",
    type=click.Choice(("float", "base64")),
    default="float",
    show_default=True,
    help="An embedding as a list of floats, or the base64 of its little-endian float32 bytes.",
)
@click.option("--broker", "broker_url", help="Broker URL, e.g. kafka://127.0.0.1:9092.")
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    help="Port of /live and /ready (KINFER_WEB_PORT, 6066: give another one beside `kinfer run`).",
)
@click.option("-l", "--loglevel", default="info", show_default=True, help="Log level.")
def enrich(
    source: str,
    sink: str,
    model: str,
    text_path: str,
    id_path: str | None,
    output_field: str | None,
    model_version: str | None,
    dlq: str | None,
    encoding: str,
    broker_url: str | None,
    web_port: int | None,
    loglevel: str,
) -> None:
    """Add its prediction to each event of a topic of yours: a worker serving one route.

    Each JSON event of --source is written to --sink as it is, with the prediction for its
    --text added under --output-field; the source key and headers are kept (traceparent and
    tracestate included) and kinfer-model, kinfer-version, kinfer-source-topic,
    kinfer-source-partition and kinfer-source-offset are added. An event of source partition p
    goes to sink partition p, in order. An event that cannot be enriched (not JSON, a path
    that matches nothing, a text the model refuses) goes to the dead-letter topic with the
    reason in its headers. Offsets are committed only once the enriched event (or the dead
    letter) is acknowledged: at least once, nothing skipped.

    The worker is a `kinfer worker` that also serves this route (and only this one, whatever
    KINFER_ENRICH_ROUTES says): it joins the workers' consumer group (KINFER_APP_ID) and
    shares their request topic. A new route starts at the source's earliest offset.
    """
    from streams.cli import _run_worker, _settings
    from streams.enrich.route import EnrichRoute

    try:
        route = EnrichRoute(
            source=source,
            sink=sink,
            model=model,
            text=text_path,
            id=id_path,
            version=model_version,
            output_field=output_field,
            dlq=dlq,
            encoding=encoding,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{_option(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise click.ClickException(f"invalid route: {problems}") from None
    settings = _settings(broker_url=broker_url, web_port=web_port, enrich_routes=(route,))
    _run_worker(settings, loglevel)  # it checks the route first


def check_routes_first(settings: Settings) -> None:
    """Raise a ClickException unless every route's model is served here and its source exists
    (a broker that does not answer is one too): before the worker loads anything."""
    from streams.cli import _security
    from streams.enrich.preflight import check_models
    from streams.enrich.topics import check_sources
    from streams.errors import KinferError

    security = _security(settings)
    try:
        check_models(settings, settings.enrich_routes)
        asyncio.run(
            check_sources(settings.enrich_routes, settings.bootstrap_servers, security=security)
        )
    except (KinferError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


def _option(loc: tuple[int | str, ...]) -> str:
    """The option a route field comes from (``output_field`` -> ``--output-field``)."""
    return "--" + str(loc[0]).replace("_", "-") if loc else "the route"
