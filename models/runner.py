"""Serve any `Servable` on packed rows, with ahead-of-time compilation and two threads.

A batch of texts is tokenised (`tokenize`, host thread), packed into rows of compiled
(rows, length) shapes (`models.packing`, host thread) and run (`compute` thread). `warm_up()`
compiles one executable per (batch bucket, seq bucket). Afterwards only those executables are
called: a shape without one raises `ShapeNotCompiledError` instead of compiling at request
time. Before warm-up, missing shapes are compiled on first use (and logged), which keeps tests
and one-off scripts cheap. The async methods keep host work (tokenising, packing the next
batch) and device work on separate threads, so one batch packs while another computes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from models.bucketing import CALL_COST_ROWS
from models.errors import InvalidRunnerConfigError, RunnerClosedError, ShapeNotCompiledError
from models.packing import PackedCall, TokenBatch, max_segments, pack
from models.servable import Servable

__all__ = ["DTYPES", "BatchTiming", "ModelRunner", "RunnerConfig"]

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16")


def _check_buckets(field: str, buckets: tuple[int, ...]) -> tuple[int, ...]:
    if not buckets:
        raise InvalidRunnerConfigError(field, buckets, "needs at least one bucket")
    if any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in buckets):
        raise InvalidRunnerConfigError(field, buckets, "buckets must be positive integers")
    if len(set(buckets)) != len(buckets):
        raise InvalidRunnerConfigError(field, buckets, "buckets must be distinct")
    return tuple(sorted(buckets))


@dataclass(frozen=True)
class RunnerConfig:
    """Shapes and precision a runner serves. Defaults are measured on a 2-core CPU.

    Texts are packed several to a row (`models.packing`), so a row's length is a capacity,
    not one text's padded length. On CPU 16 rows of 128 tokens (2 048 tokens) keep a call
    efficient; 15 shapes compile in about 10 s. On a GPU use large batch buckets (e.g.
    64..1024 rows) and bfloat16.

    Attributes:
        batch_buckets: rows per forward call; one executable each per seq bucket.
        seq_buckets: row lengths (tokens); texts longer than the largest are truncated to it
            (and it may not exceed the model's own limit).
        pack_length: length of a new packed row, capped at the largest seq bucket (a text
            longer than it opens a row of the smallest seq bucket that holds it). Longer
            rows fit more texts per row but cost more attention per token.
        dtype: compute dtype, "float32" (CPU) or "bfloat16" (GPU); parameters stay float32.
        call_cost_rows: cost of one extra forward call, in padded rows, used to split a batch
            remainder across buckets (about 1 on CPU; use a large value on GPU, where calls
            cost more than rows, to pad up to the nearest bucket instead).
    """

    batch_buckets: tuple[int, ...] = (1, 4, 16)
    seq_buckets: tuple[int, ...] = (16, 32, 64, 128, 256)
    dtype: str = "float32"
    call_cost_rows: float = CALL_COST_ROWS
    pack_length: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "batch_buckets", _check_buckets("batch_buckets", tuple(self.batch_buckets))
        )
        object.__setattr__(
            self, "seq_buckets", _check_buckets("seq_buckets", tuple(self.seq_buckets))
        )
        if self.dtype not in DTYPES:
            raise InvalidRunnerConfigError("dtype", self.dtype, f"expected one of {DTYPES}")
        if self.call_cost_rows < 0:
            raise InvalidRunnerConfigError("call_cost_rows", self.call_cost_rows, "must be >= 0")
        if self.pack_length < 1:
            raise InvalidRunnerConfigError("pack_length", self.pack_length, "must be >= 1")

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Every (batch, seq) shape warm-up compiles."""
        return tuple((b, s) for s in self.seq_buckets for b in self.batch_buckets)


@dataclass(frozen=True)
class BatchTiming:
    """How one batch spent its time and how much padding it computed."""

    tokenize_ms: float
    pack_ms: float
    compute_ms: float
    padded_shapes: tuple[tuple[int, int], ...]
    real_tokens: int
    computed_tokens: int

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / computed tokens (1.0 for an empty batch)."""
        return self.real_tokens / self.computed_tokens if self.computed_tokens else 1.0


class ModelRunner:
    """Blocking and async inference over a servable, on fixed compiled shapes."""

    def __init__(self, servable: Servable, config: RunnerConfig | None = None) -> None:
        self.config = config or RunnerConfig()
        if self.config.seq_buckets[-1] > servable.max_seq_len:
            raise InvalidRunnerConfigError(
                "seq_buckets",
                self.config.seq_buckets,
                f"{servable.name} accepts at most {servable.max_seq_len} tokens",
            )
        self._servable = servable
        self._params = jax.device_put(servable.params)
        self._jitted = jax.jit(servable.apply, static_argnums=4)
        self._compiled: dict[tuple[int, int], Any] = {}
        self._compile_lock = threading.Lock()
        self._warm = False
        self._closed = False
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{servable.name}-compute"
        )
        self._host = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{servable.name}-host")

    @property
    def name(self) -> str:
        """Model name."""
        return self._servable.name

    @property
    def version(self) -> str:
        """Model and weights version."""
        return self._servable.version

    @property
    def output_dim(self) -> int:
        """Width of one output row."""
        return self._servable.output_dim

    @property
    def compiled_shapes(self) -> frozenset[tuple[int, int]]:
        """(batch, seq) shapes with a compiled executable."""
        return frozenset(self._compiled)

    @property
    def is_warm(self) -> bool:
        """True once warm_up() has compiled every bucket shape."""
        return self._warm

    @property
    def servable(self) -> Servable:
        """The model behind this runner (tokeniser and forward function)."""
        return self._servable

    def warm_up(self) -> None:
        """Compile every (batch bucket, seq bucket) shape; blocking. Idempotent."""
        self._check_open()
        started = time.perf_counter()
        for batch, seq in self.config.shapes:
            self.compile_shape(batch, seq)
        self._warm = True
        log.info(
            "%s warm: %d shapes compiled in %.1f s",
            self.name,
            len(self._compiled),
            time.perf_counter() - started,
        )

    def compile_shape(self, batch: int, seq: int) -> float:
        """Compile the forward for (batch, seq); returns seconds spent (0.0 if already done).

        Raises:
            ShapeNotCompiledError: after warm-up, for a shape warm-up did not compile.
        """
        started = time.perf_counter()
        cached = (batch, seq) in self._compiled
        self._executable(batch, seq)
        return 0.0 if cached else time.perf_counter() - started

    def forward(
        self,
        input_ids: np.ndarray | jax.Array,
        segment_ids: np.ndarray | jax.Array,
        position_ids: np.ndarray | jax.Array,
    ) -> jax.Array:
        """Run packed int32 (rows, length) arrays; returns the device array (async).

        Raises:
            ShapeNotCompiledError: after warm-up, for a shape that is not a compiled bucket.
        """
        self._check_open()
        rows, length = input_ids.shape
        result: jax.Array = self._executable(rows, length)(
            self._params, input_ids, segment_ids, position_ids
        )
        return result

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenise ``texts``, truncated to the largest seq bucket."""
        self._check_open()
        if isinstance(texts, str):
            raise TypeError("tokenize() takes a sequence of texts, not a single str")
        return self._servable.tokenize(texts, self.config.seq_buckets[-1])

    def pack(self, tokens: TokenBatch) -> list[PackedCall]:
        """Pack token sequences into forward calls of compiled shapes (host work, no device)."""
        config = self.config
        return pack(
            tokens,
            batch_buckets=config.batch_buckets,
            seq_buckets=config.seq_buckets,
            pack_length=config.pack_length,
            min_tokens=self._servable.min_tokens,
            pad_id=self._servable.pad_id,
            call_cost_rows=config.call_cost_rows,
        )

    def compute(self, calls: Sequence[PackedCall], count: int) -> np.ndarray:
        """Run packed calls; returns float32 (count, output_dim), row i for sequence i."""
        out = np.empty((count, self.output_dim), dtype=np.float32)
        # Dispatch every call first: the device runs them while the host issues the next.
        pending = [
            (call, self.forward(call.input_ids, call.segment_ids, call.position_ids))
            for call in calls
        ]
        for call, result in pending:
            out[call.sequences] = np.asarray(result)[call.output_rows]
        return out

    def run_tokens(
        self, tokens: TokenBatch, tokenize_ms: float = 0.0
    ) -> tuple[np.ndarray, BatchTiming]:
        """Pack and compute a tokenised batch on the calling thread."""
        self._check_open()
        started = time.perf_counter()
        calls = self.pack(tokens)
        packed = time.perf_counter()
        rows = self.compute(calls, len(tokens))
        return rows, self._timing(calls, tokenize_ms, started, packed, time.perf_counter())

    def infer(self, texts: Sequence[str]) -> tuple[np.ndarray, BatchTiming]:
        """Embed ``texts`` on the calling thread; float32 (len(texts), output_dim)."""
        started = time.perf_counter()
        tokens = self.tokenize(texts)
        return self.run_tokens(tokens, (time.perf_counter() - started) * 1e3)

    async def tokenize_async(self, texts: Sequence[str]) -> TokenBatch:
        """`tokenize` on the runner's host thread, never on the event loop."""
        self._check_open()
        texts = list(texts)  # the caller may mutate its list while we wait
        return await asyncio.get_running_loop().run_in_executor(self._host, self.tokenize, texts)

    async def pack_async(self, tokens: TokenBatch) -> list[PackedCall]:
        """`pack` on the host thread: the next batch packs while this one computes."""
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(self._host, self.pack, tokens)

    async def compute_async(self, calls: Sequence[PackedCall], count: int) -> np.ndarray:
        """`compute` on the compute thread."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.compute, calls, count)

    async def infer_async(self, texts: Sequence[str]) -> tuple[np.ndarray, BatchTiming]:
        """`infer` with host work on the host thread and the model on the compute thread."""
        started = time.perf_counter()
        tokens = await self.tokenize_async(texts)
        tokenized = time.perf_counter()
        calls = await self.pack_async(tokens)
        packed = time.perf_counter()
        rows = await self.compute_async(calls, len(tokens))
        timing = self._timing(
            calls, (tokenized - started) * 1e3, tokenized, packed, time.perf_counter()
        )
        return rows, timing

    @staticmethod
    def _timing(
        calls: Sequence[PackedCall],
        tokenize_ms: float,
        started: float,
        packed: float,
        finished: float,
    ) -> BatchTiming:
        return BatchTiming(
            tokenize_ms=tokenize_ms,
            pack_ms=(packed - started) * 1e3,
            compute_ms=(finished - packed) * 1e3,
            padded_shapes=tuple(call.shape for call in calls),
            real_tokens=sum(call.real_tokens for call in calls),
            computed_tokens=sum(call.computed_tokens for call in calls),
        )

    def close(self) -> None:
        """Stop the compute thread (after running calls finish) and drop executables."""
        if self._closed:
            return
        self._closed = True
        self._host.shutdown(wait=True, cancel_futures=True)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._compiled.clear()

    def __enter__(self) -> ModelRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RunnerClosedError(self.name)

    def _executable(self, batch: int, seq: int) -> Any:
        """The compiled forward for (batch, seq); compiles only before warm-up completes."""
        executable = self._compiled.get((batch, seq))
        if executable is not None:
            return executable
        with self._compile_lock:
            if (batch, seq) in self._compiled:
                return self._compiled[(batch, seq)]
            if self._warm:
                raise ShapeNotCompiledError(batch, seq, self._compiled)
            started = time.perf_counter()
            example = np.zeros((batch, seq), dtype=np.int32)
            segments = max_segments(seq, self._servable.min_tokens)
            executable = self._jitted.lower(
                self._params, example, example, example, segments
            ).compile()
            self._compiled[(batch, seq)] = executable
            log.info(
                "%s compiled (batch=%d, seq=%d) in %.2f s",
                self.name,
                batch,
                seq,
                time.perf_counter() - started,
            )
            return executable
