"""Serve any `Servable` with fixed shape buckets, ahead-of-time compilation and a compute thread.

`warm_up()` compiles one executable per (batch bucket, seq bucket). `infer()` only ever calls
those executables: a shape without one raises `ShapeNotCompiledError` after warm-up instead of
compiling at request time. Before warm-up, missing shapes are compiled on first use (and
logged), which keeps tests and one-off scripts cheap.
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

from models.bucketing import CALL_COST_ROWS, pad_chunk, plan_chunks
from models.errors import InvalidRunnerConfigError, RunnerClosedError, ShapeNotCompiledError
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

    On CPU throughput saturates near batch 16 for short texts, and batches above 4 get slower
    per sentence at 256 tokens, so bigger batch buckets only add latency there; 15 shapes
    compile in about 10 s. On a GPU use large batch buckets (e.g. 64..1024) and bfloat16.

    Attributes:
        batch_buckets: padded batch sizes; one executable each per seq bucket.
        seq_buckets: padded token lengths; texts longer than the largest are truncated to it
            (and it may not exceed the model's own limit).
        dtype: compute dtype, "float32" (CPU) or "bfloat16" (GPU); parameters stay float32.
        call_cost_rows: cost of one extra forward call, in padded rows, used to split a batch
            remainder across buckets (about 1 on CPU; use a large value on GPU, where calls
            cost more than rows, to pad up to the nearest bucket instead).
    """

    batch_buckets: tuple[int, ...] = (1, 4, 16)
    seq_buckets: tuple[int, ...] = (16, 32, 64, 128, 256)
    dtype: str = "float32"
    call_cost_rows: float = CALL_COST_ROWS

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

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Every (batch, seq) shape warm-up compiles."""
        return tuple((b, s) for s in self.seq_buckets for b in self.batch_buckets)


@dataclass(frozen=True)
class BatchTiming:
    """How one `infer` call spent its time; streams reports it in the response."""

    tokenize_ms: float
    compute_ms: float
    padded_shapes: tuple[tuple[int, int], ...]


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
        self._jitted = jax.jit(servable.apply)
        self._compiled: dict[tuple[int, int], Any] = {}
        self._compile_lock = threading.Lock()
        self._warm = False
        self._closed = False
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{servable.name}-compute"
        )

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
        """The model behind this runner (tokenizer and forward function)."""
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
        self, input_ids: np.ndarray | jax.Array, attention_mask: np.ndarray | jax.Array
    ) -> jax.Array:
        """Run an already padded int32 (batch, seq) batch; returns the device array (async).

        Raises:
            ShapeNotCompiledError: after warm-up, for a shape that is not a compiled bucket.
        """
        self._check_open()
        batch, seq = input_ids.shape
        result: jax.Array = self._executable(batch, seq)(self._params, input_ids, attention_mask)
        return result

    def infer(self, texts: Sequence[str]) -> tuple[np.ndarray, BatchTiming]:
        """Embed `texts`; returns float32 (len(texts), output_dim), row i for texts[i]."""
        self._check_open()
        if isinstance(texts, str):
            raise TypeError("infer() takes a sequence of texts, not a single str")
        started = time.perf_counter()
        tokens = self._servable.tokenize(texts, self.config.seq_buckets[-1])
        tokenized = time.perf_counter()
        out = np.empty((len(texts), self.output_dim), dtype=np.float32)
        chunks = plan_chunks(
            tokens.lengths,
            self.config.batch_buckets,
            self.config.seq_buckets,
            self.config.call_cost_rows,
        )
        # Dispatch every chunk first: JAX runs them while the host pads the next one.
        pending = []
        for chunk in chunks:
            ids, mask = pad_chunk(
                [tokens.ids[i] for i in chunk.indices],
                chunk.batch,
                chunk.seq,
                self._servable.pad_id,
            )
            pending.append((chunk, self.forward(ids, mask)))
        for chunk, result in pending:
            rows = np.asarray(result)
            out[list(chunk.indices)] = rows[: len(chunk.indices)]
        finished = time.perf_counter()
        timing = BatchTiming(
            tokenize_ms=(tokenized - started) * 1e3,
            compute_ms=(finished - tokenized) * 1e3,
            padded_shapes=tuple((chunk.batch, chunk.seq) for chunk in chunks),
        )
        return out, timing

    async def infer_async(self, texts: Sequence[str]) -> tuple[np.ndarray, BatchTiming]:
        """`infer` on the runner's single compute thread, never on the event loop."""
        self._check_open()
        texts = list(texts)  # the caller may mutate its list while we wait
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.infer, texts)

    def close(self) -> None:
        """Stop the compute thread (after running calls finish) and drop executables."""
        if self._closed:
            return
        self._closed = True
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
            executable = self._jitted.lower(self._params, example, example).compile()
            self._compiled[(batch, seq)] = executable
            log.info(
                "%s compiled (batch=%d, seq=%d) in %.2f s",
                self.name,
                batch,
                seq,
                time.perf_counter() - started,
            )
            return executable
