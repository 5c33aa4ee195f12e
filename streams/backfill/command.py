"""``kinfer backfill``: a file or a topic range through the model, resumable."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any, cast

import click
import orjson

from streams.backfill.sources import FORMATS

_HELP_EPILOG = """\b
Examples (against `make run`):
  kinfer backfill reviews.csv --model minilm --output reviews.jsonl
  kinfer backfill events.jsonl --text-column '$.body.text' --id-column order_id \\
      --model minilm --output scores.parquet
  kinfer backfill --from-topic kinfer.requests --start 2026-11-30T00:00:00Z --end latest \\
      --model minilm --output rescored.jsonl
  kinfer backfill --from-topic orders --text '$.note' --id '$.order_id' \\
      --model minilm --output orders.jsonl

\b
Resume: interrupt it (Ctrl-C, SIGTERM, kill -9) and run the same command again: it continues
where it stopped, and OUT ends with every row once, in input order. The state is kept in
OUT.state.json (beside OUT, named for it: scores.jsonl has scores.errors.jsonl and
scores.state.json; a Parquet OUT also has scores.parts/): the input rows done, the durable byte
size of OUT and OUT.errors.jsonl (Parquet: its part files) and the input position after the last
row done, saved atomically every second after an fsync of the outputs. A resume cuts OUT and
OUT.errors.jsonl back to those sizes and reads the input from that position. The state refuses a
different command (another input, model or column) or a changed input file: use --overwrite to
start over. A finished backfill says so and writes nothing.
"""


@click.command(epilog=_HELP_EPILOG, context_settings={"max_content_width": 100})
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@click.option("--model", required=True, help="Model to run, e.g. minilm.")
@click.option(
    "--output",
    "-o",
    "output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="OUT: .jsonl (one {id, output} per row) or .parquet (columns id, output).",
)
@click.option("--version", help="Model version to ask for (default: what the worker serves).")
@click.option(
    "--text-column",
    "--text",
    "text",
    help="Where each row's input is. Files: a column name (default 'text'); JSONL also takes "
    "a field path such as '$.body.text'. Topics: a field path (default '$.inputs[*]', every "
    "input of a kinfer request).",
)
@click.option(
    "--id-column",
    "--id",
    "id_column",
    help="Where each row's id is (column or field path). Default: the row number from 0 "
    "(files), '<partition>:<offset>' (topics).",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    help="Input format (default: from the extension: .jsonl/.ndjson, .csv, .tsv, .parquet).",
)
@click.option("--from-topic", "topic", help="Re-score a range of this topic instead of a file.")
@click.option(
    "--start",
    default="earliest",
    show_default=True,
    help="First record of the range: an offset (on every partition), an ISO timestamp "
    "(2026-11-30T12:00:00Z; no zone means UTC) or earliest.",
)
@click.option(
    "--end",
    default="latest",
    show_default=True,
    help="End of the range, exclusive: an offset, an ISO timestamp or latest (the end when the "
    "backfill first starts; a resume keeps it).",
)
@click.option("--partition", "partitions", type=int, multiple=True, help="Only this partition.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1024),
    default=64,
    show_default=True,
    help="Inputs per request message.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="Request messages unanswered at once.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for each message's answer before giving up (resumable).",
)
@click.option(
    "--encoding",
    type=click.Choice(["auto", "base64", "float"]),
    default="auto",
    show_default=True,
    help="How answers carry rows on the wire; outputs are written the same either way. auto: "
    "base64 if the model takes it (embeddings: a third of the bytes), else float.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A further request field, e.g. --param top_k=3 (VALUE is read as JSON, else text).",
)
@click.option("--broker", "broker_url", help="Broker URL, e.g. kafka://127.0.0.1:9092.")
@click.option("--request-topic", help="Where requests go (default KINFER_REQUEST_TOPIC).")
@click.option("--reply-topic", help="Where answers come (default KINFER_RESPONSE_TOPIC).")
@click.option("--overwrite", is_flag=True, help="Start over: replace OUT, its errors and state.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show the progress bar (default: when stderr is a terminal).",
)
def backfill(
    input_path: Path | None,
    model: str,
    output: Path,
    version: str | None,
    text: str | None,
    id_column: str | None,
    format_: str | None,
    topic: str | None,
    start: str,
    end: str,
    partitions: tuple[int, ...],
    batch_size: int,
    max_in_flight: int,
    timeout_s: float,
    encoding: str,
    params: tuple[str, ...],
    broker_url: str | None,
    request_topic: str | None,
    reply_topic: str | None,
    overwrite: bool,
    progress: bool | None,
) -> None:
    """Run every row of INPUT (JSONL, CSV, TSV or Parquet), or a range of a topic, through
    the model; write the outputs to OUT in input order, and the rows that failed to
    OUT.errors.jsonl as {"id", "error": {"code", "message"}}.

    The input is streamed (never loaded), many rows per request message with a bounded number
    of messages in flight. A progress bar shows rows, rate and ETA; a summary ends the run.
    A row that cannot be sent (not JSON, a missing column, an empty text) is an error row
    naming it; the run goes on.
    """
    from streams.backfill.job import JobSpec

    if (input_path is None) == (topic is None):
        raise click.UsageError("give either INPUT (a file) or --from-topic TOPIC, not both")
    spec = JobSpec(
        input_path=input_path,
        topic=topic,
        start=start,
        end=end,
        partitions=list(partitions) or None,
        model=model,
        version=version,
        output=output,
        text=text,
        id_column=id_column,
        format=format_,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        timeout_s=timeout_s,
        encoding=cast(Any, encoding),
        params=_params(params),
        overwrite=overwrite,
        progress=progress,
    )
    from streams.cli import _security, _settings  # the CLI's own settings and security errors

    settings = _settings(broker_url=broker_url)
    security = _security(settings)
    # aiokafka logs each failed connection attempt; the command says what failed, once
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        code = asyncio.run(_main(spec, settings, security, request_topic, reply_topic))
    except KeyboardInterrupt:  # Ctrl-C: the run checkpointed what it wrote
        click.echo(_STOPPED.format("interrupted"), err=True)
        code = 130
    except asyncio.CancelledError:  # SIGTERM, likewise
        click.echo(_STOPPED.format("stopped"), err=True)
        code = 143
    sys.exit(code)


_STOPPED = "{}: the rows written are kept; run the same command again to resume"


async def _main(
    spec: Any, settings: Any, security: Any, request_topic: str | None, reply_topic: str | None
) -> int:
    from streams.backfill.job import JobError, run_job

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # as Ctrl-C: checkpoint, then stop
    try:
        return await run_job(
            spec,
            bootstrap=settings.bootstrap_servers,
            request_topic=request_topic or settings.request_topic,
            reply_topic=reply_topic or settings.response_topic,
            security=security,
            echo=click.echo,
        )
    except JobError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _params(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        try:
            params[name] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            params[name] = raw
    return params or None
