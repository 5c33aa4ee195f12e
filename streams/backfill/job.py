"""A backfill job from the command line's options: fresh, resumed, refused or already done.

`run_job` opens the source and the sinks, decides from ``OUT.state.json`` whether this is a new
run, a resume or a finished job, runs the `Backfill` over one SDK client and prints the summary.
Every failure it expects ends as a `JobError` whose message says what to do; nothing ends in a
traceback.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka.errors import KafkaError

from streams.backfill.run import Backfill, Options, Progress
from streams.backfill.sinks import JsonlSink, SinkError, open_sink, output_format
from streams.backfill.sources import Source, SourceError, open_file_source
from streams.backfill.state import BackfillState, StateError, beside, load_state, save_state
from streams.backfill.topic_source import DEFAULT_TEXT_PATH, TopicSource
from streams.errors import KinferError
from streams.fieldpath import FieldPathError
from streams.sdk.client import InferenceClient
from streams.sdk.errors import ErrorAnswer, InvalidRequestError, ReplyTimeout, UnknownModelError
from streams.security import KafkaSecurity
from streams.wire_encoding import Encoding

#: The text column a file backfill reads when none is named.
DEFAULT_TEXT_COLUMN = "text"


class JobError(KinferError):
    """A backfill that cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the command line asked for."""

    model: str
    output: Path
    input_path: Path | None = None
    topic: str | None = None
    start: str = "earliest"
    end: str = "latest"
    partitions: list[int] | None = None
    version: str | None = None
    text: str | None = None
    id_column: str | None = None
    format: str | None = None
    batch_size: int = 64
    max_in_flight: int = 8
    timeout_s: float = 120.0
    #: "auto": base64 when the model takes it (embeddings), else float (classifiers)
    encoding: Encoding | Literal["auto"] = "auto"
    params: dict[str, Any] | None = None
    overwrite: bool = False
    progress: bool | None = None

    @property
    def errors_path(self) -> Path:
        return beside(self.output, ".errors.jsonl")

    @property
    def state_path(self) -> Path:
        return beside(self.output, ".state.json")


async def run_job(
    spec: JobSpec,
    *,
    bootstrap: str,
    request_topic: str,
    reply_topic: str,
    security: KafkaSecurity,
    echo: Callable[..., Any] | None = None,
) -> int:
    """Run (or resume) the backfill ``spec`` describes; its exit code. Raises JobError.

    ``echo(message, err=False)`` prints (default: ``click.echo``).
    """
    if echo is None:
        import click

        echo = click.echo
    try:
        return await _run(spec, bootstrap, request_topic, reply_topic, security, echo)
    except ReplyTimeout as exc:
        raise JobError(
            f"{exc} (request topic {request_topic!r}, answers on {reply_topic!r}): is a worker "
            f"serving {spec.model!r} running? {_RESUME_HINT}"
        ) from None
    except UnknownModelError as exc:
        raise JobError(f"{exc.message}. {_RESUME_HINT}") from None
    except ErrorAnswer as exc:
        raise JobError(f"{exc}. {_RESUME_HINT}") from None
    except (SourceError, SinkError, StateError, FieldPathError, JobError) as exc:
        raise JobError(str(exc)) from None
    except KafkaError as exc:
        raise JobError(f"Kafka at {bootstrap}: {exc}. {_RESUME_HINT}") from None
    except KinferError as exc:  # the client could not start (a missing topic, security)
        raise JobError(str(exc)) from None


_RESUME_HINT = "The rows written are kept: run the same command again to resume."


async def _run(
    spec: JobSpec,
    bootstrap: str,
    request_topic: str,
    reply_topic: str,
    security: KafkaSecurity,
    echo: Callable[..., Any],
) -> int:
    output_format(spec.output)  # a wrong extension: refused before anything is read
    source = _source(spec, bootstrap, security)
    job = {
        "source": source.job(),
        "model": spec.model,
        "version": spec.version,
        "encoding": spec.encoding,
        "params": spec.params,
        "output": str(spec.output.resolve()),
    }
    state = None if spec.overwrite else load_state(spec.state_path)
    if spec.overwrite:
        _remove_outputs(spec)
    elif state is None:
        for existing in (spec.output, spec.errors_path):
            if existing.exists():
                raise JobError(
                    f"{existing} exists and {spec.state_path} does not say it is an unfinished "
                    "backfill: choose another --output, or add --overwrite to replace it"
                )
    else:
        _check_same_job(spec, state.job, job)
        if state.complete:
            echo(
                f"{spec.output} is already complete: {state.rows_done:,} rows "
                f"({state.outputs:,} outputs, {state.errors:,} errors); --overwrite runs it again"
            )
            return 0
    if isinstance(source, TopicSource):
        if state is None:
            await source.resolve()
        else:
            source.use_plan(state.plan)
    sink, errors = open_sink(spec.output), JsonlSink(spec.errors_path)
    if state is None:
        plan = source.plan() if isinstance(source, TopicSource) else {}
        state = BackfillState(job=job, plan=plan)
        try:
            spec.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobError(f"cannot make the folder of {spec.output}: {exc}") from None
        sink.restore(None)
        errors.restore(None)
        save_state(spec.state_path, state)
    else:
        sink.restore(state.output_position)
        errors.restore(state.errors_position)
        echo(f"resuming {spec.output} at row {state.rows_done:,} of {source.name}", err=True)
    progress: Progress | None = None
    try:
        async with InferenceClient(
            bootstrap, request_topic, reply_topic, security=security
        ) as client:
            options = Options(
                model=spec.model,
                version=spec.version,
                batch_size=spec.batch_size,
                max_in_flight=spec.max_in_flight,
                timeout_s=spec.timeout_s,
                encoding=await _pick_encoding(client, spec, source, state),
                params=spec.params,
            )
            progress = Progress(
                source.progress_total,
                source.progress_unit,
                state.progress,
                state.rows_done,
                spec.progress,
            )
            run = Backfill(source, sink, errors, state, spec.state_path, options, progress)
            summary = await run.run(client)
    finally:
        if progress is not None:
            progress.close()
        sink.close()
        errors.close()
    for line in summary.lines():
        echo(line)
    return 0


async def _pick_encoding(
    client: InferenceClient, spec: JobSpec, source: Source, state: BackfillState
) -> Encoding:
    """``spec.encoding``; for "auto", base64 unless the model refuses it and takes float.

    Decided by asking: the first row still to do is sent once as base64 (and, if that is
    refused, once as float). Embeddings take base64, 4 bytes a float on the wire; a
    classifier's labels and probabilities are JSON only.
    """
    if spec.encoding != "auto":
        return spec.encoding
    first = None
    rows = source.rows(state.source_position, state.rows_done)
    async with contextlib.aclosing(rows):
        async for row in rows:
            if row.input is not None:
                first = row.input
                break
    if first is None:
        return "base64"

    async def ask(encoding: Encoding) -> None:
        await client.predict(
            spec.model,
            [first],
            version=spec.version,
            params=spec.params,
            timeout_s=spec.timeout_s,
            encoding=encoding,
        )

    try:
        await ask("base64")
    except InvalidRequestError:
        try:
            await ask("float")
        except ErrorAnswer:
            return "base64"  # the input itself is refused: its row will say why
        return "float"
    return "base64"


def _source(spec: JobSpec, bootstrap: str, security: KafkaSecurity) -> Source:
    if spec.topic is not None:
        return TopicSource(
            bootstrap,
            spec.topic,
            start=spec.start,
            end=spec.end,
            text=spec.text or DEFAULT_TEXT_PATH,
            id_path=spec.id_column,
            partitions=spec.partitions,
            security=security,
        )
    assert spec.input_path is not None
    if not spec.input_path.is_file():
        what = "is not a file" if spec.input_path.exists() else "does not exist"
        raise JobError(f"INPUT {spec.input_path} {what}")
    return open_file_source(
        spec.input_path,
        text=spec.text or DEFAULT_TEXT_COLUMN,
        id_column=spec.id_column,
        format=spec.format,
    )


def _check_same_job(spec: JobSpec, before: dict[str, Any], now: dict[str, Any]) -> None:
    """JobError naming what differs between the interrupted run and this command."""
    if before == now:
        return
    old, new = dict(before), dict(now)
    old_source, new_source = old.pop("source", {}), new.pop("source", {})
    changed = [
        f"{name} {old.get(name)!r} then, {new.get(name)!r} now"
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    ]
    for name in sorted(old_source.keys() | new_source.keys()):
        if old_source.get(name) != new_source.get(name):
            if name in ("size", "mtime_ns"):
                changed.append("the input file changed since (its size or time)")
            else:
                changed.append(
                    f"{name} {old_source.get(name)!r} then, {new_source.get(name)!r} now"
                )
    raise JobError(
        f"{spec.state_path} belongs to another backfill ({'; '.join(dict.fromkeys(changed))}): "
        "run that command to resume it, or add --overwrite to start this one over"
    )


def _remove_outputs(spec: JobSpec) -> None:
    for path in (spec.output, spec.errors_path, spec.state_path):
        path.unlink(missing_ok=True)
    shutil.rmtree(beside(spec.output, ".parts"), ignore_errors=True)
