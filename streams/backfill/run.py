"""The backfill engine: rows from a source, through the SDK's ``map``, into sinks, in order.

Rows are fed to ``InferenceClient.map`` (many inputs per message, a bounded number of messages
in flight) and written in input order as the results come back: outputs to the output, error
rows (the worker's, and rows that could not be sent) to the errors file. Every
``checkpoint_interval_s`` the sinks are made durable and the state saved (``state.py``); an
interruption (Ctrl-C, SIGTERM, a lost broker) checkpoints what was written before it ends, and a
kill -9 loses at most the rows since the last checkpoint, which the resume writes again.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from streams.backfill.rows import Row, Source
from streams.backfill.sinks import JsonlSink, OutputSink
from streams.backfill.state import BackfillState, save_state
from streams.sdk.client import InferenceClient
from streams.sdk.mapping import DEFAULT_BATCH_SIZE, DEFAULT_MAX_IN_FLIGHT, Result
from streams.wire_encoding import Encoding

log = logging.getLogger(__name__)

#: How often the progress bar is redrawn.
_REDRAW_S: Final = 0.25


@dataclass(frozen=True, slots=True)
class Options:
    """How the rows are sent."""

    model: str
    version: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    timeout_s: float = 120.0
    #: base64 by default: embeddings travel as 4 bytes a float, not ~12 characters of JSON
    encoding: Encoding = "base64"
    params: Mapping[str, Any] | None = None
    checkpoint_interval_s: float = 1.0


@dataclass
class Summary:
    """What a backfill did, over all its runs and in this one."""

    rows: int
    outputs: int
    errors: int
    elapsed_s: float
    run_rows: int
    run_elapsed_s: float
    resumed_at: int | None
    output: Path
    errors_file: Path
    #: the first few error messages, to show
    first_errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rate = self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"backfill done: {self.rows:,} rows in {self.elapsed_s:.1f} s ({rate:,.0f} rows/s): "
            f"{self.outputs:,} outputs in {self.output}, {self.errors:,} errors in "
            f"{self.errors_file}"
        ]
        if self.resumed_at is not None:
            run_rate = self.run_rows / self.run_elapsed_s if self.run_elapsed_s > 0 else 0.0
            lines.append(
                f"  resumed at row {self.resumed_at:,}: this run {self.run_rows:,} rows in "
                f"{self.run_elapsed_s:.1f} s ({run_rate:,.0f} rows/s)"
            )
        lines += [f"  error: {message}" for message in self.first_errors]
        return lines


class Progress:
    """A tqdm bar in the source's unit (input bytes, rows or records): rows, rate, ETA."""

    def __init__(
        self, total: int | None, unit: str, initial: int, rows: int, enabled: bool | None
    ) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            initial=initial,
            unit=unit,
            unit_scale=unit == "B",
            disable=None if enabled is None else not enabled,  # None: only on a terminal
            dynamic_ncols=True,
            file=sys.stderr,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}",
            desc="backfill",
        )
        self._rows_at_start = rows
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, done: int, rows: int, errors: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < _REDRAW_S:
            return
        self._drawn = now
        rate = (rows - self._rows_at_start) / max(now - self._started, 1e-9)
        self._bar.set_postfix_str(f"{rows:,} rows, {errors:,} errors, {rate:,.0f} rows/s", False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


class Backfill:
    """One run of a backfill, from ``state`` on (see the module docstring)."""

    def __init__(
        self,
        source: Source,
        output: OutputSink,
        errors: JsonlSink,
        state: BackfillState,
        state_file: Path,
        options: Options,
        progress: Progress | None = None,
    ) -> None:
        self.source, self.output, self.errors = source, output, errors
        self.state, self.state_file, self.options = state, state_file, options
        self.progress = progress
        self._queue: deque[Row] = deque()
        self._first_errors: list[str] = []
        self._position = state.source_position
        self._done = state.progress
        self._checkpointed_at = time.monotonic()
        self._started = time.monotonic()
        self._elapsed_before = state.elapsed_s
        self._rows_before = state.rows_done

    async def run(self, client: InferenceClient) -> Summary:
        """Backfill every row not done yet; the summary once the output is complete."""
        resumed_at = self.state.rows_done if self.state.rows_done else None
        try:
            inputs = self._inputs()
            results = client.map(
                self.options.model,
                inputs,
                version=self.options.version,
                batch_size=self.options.batch_size,
                max_in_flight=self.options.max_in_flight,
                timeout_s=self.options.timeout_s,
                encoding=self.options.encoding,
                params=self.options.params,
            )
            async with contextlib.aclosing(inputs), contextlib.aclosing(results):
                async for result in results:
                    self._take(result)
            while self._queue:  # error rows after the last row sent
                self._write(self._queue.popleft(), None)
            self._checkpoint(force=True)
        except BaseException:
            self._save_progress()
            raise
        self.output.finish()
        self.state.complete = True
        save_state(self.state_file, self.state)
        self.output.cleanup()
        if self.progress is not None:
            self.progress.advance(self._done, self.state.rows_done, self.state.errors, force=True)
        return Summary(
            rows=self.state.rows_done,
            outputs=self.state.outputs,
            errors=self.state.errors,
            elapsed_s=self.state.elapsed_s,
            run_rows=self.state.rows_done - self._rows_before,
            run_elapsed_s=time.monotonic() - self._started,
            resumed_at=resumed_at,
            output=self.output.path,
            errors_file=self.errors.path,
            first_errors=self._first_errors,
        )

    async def _inputs(self) -> AsyncGenerator[Any, None]:
        """The inputs of the rows to send; rows that cannot be sent are queued (or written)."""
        rows = self.source.rows(self.state.source_position, self.state.rows_done)
        async with contextlib.aclosing(rows):
            async for row in rows:
                if row.error is not None and not self._queue:
                    self._write(row, None)  # every earlier row is written: it can go now
                    continue
                self._queue.append(row)
                if row.error is None:
                    yield row.input

    def _take(self, result: Result) -> None:
        """Write ``result``'s row, with the error rows queued before and after it."""
        queue = self._queue
        while queue[0].error is not None:
            self._write(queue.popleft(), None)
        self._write(queue.popleft(), result)
        while queue and queue[0].error is not None:
            self._write(queue.popleft(), None)

    def _write(self, row: Row, result: Result | None) -> None:
        state = self.state
        if result is not None and result.error is None:
            self.output.write(row.id, result.output)
            state.outputs += 1
        else:
            if result is not None and result.error is not None:
                code, message = str(result.error.code), result.error.message
            else:
                assert row.error is not None
                code, message = str(row.error.code), row.error.message
            self.errors.write_error(row.id, code, message)
            state.errors += 1
            if len(self._first_errors) < 5:
                self._first_errors.append(f"id {row.id!r}: {code}: {message}"[:300])
        state.rows_done += 1
        self._position = row.position
        self._done = row.progress
        if self.progress is not None:
            self.progress.advance(self._done, state.rows_done, state.errors)
        if time.monotonic() - self._checkpointed_at >= self.options.checkpoint_interval_s:
            self._checkpoint(force=False)

    def _checkpoint(self, force: bool) -> None:
        """Make the rows written durable and record them in the state (see state.py)."""
        output_position = self.output.checkpoint(force)
        self._checkpointed_at = time.monotonic()
        if output_position is None:  # the output waits for more rows (a Parquet part)
            return
        state = self.state
        state.output_position = output_position
        state.errors_position = self.errors.checkpoint(True)
        state.source_position = self._position
        state.progress = self._done
        state.elapsed_s = self._elapsed_before + (time.monotonic() - self._started)
        save_state(self.state_file, state)

    def _save_progress(self) -> None:
        """On the way out of a failed or interrupted run: checkpoint what was written."""
        try:
            self._checkpoint(force=True)
        except Exception as exc:  # the failure may be the disk itself: the last state stands
            log.warning("could not checkpoint the rows written since the last checkpoint: %s", exc)
