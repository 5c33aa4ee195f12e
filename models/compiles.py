"""Count XLA compilations, and those that happen while serving (they should never happen).

Every executable kinfer serves is compiled while its model loads and warms up; afterwards a
compile means a shape, a dtype or a stray ``jnp`` call that warm-up did not cover, and a request
that waited seconds for it. `install()` registers a listener for JAX's backend-compile event,
which JAX fires on the thread that compiles. A compile counts as *expected* while that thread
is inside `expected()` (the worker wraps loading and warming a model in it: loading compiles
too, e.g. the eager ops that stage weights); any other compile is *unexpected*, and is logged
with the function's name.

This module keeps plain integers: the metrics (``streams/metrics.py``) read them; ``models/``
knows nothing of Prometheus or Kafka. JAX is imported only by `install()`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["BACKEND_COMPILE_EVENT", "CompileCounts", "counts", "expected", "install"]

log = logging.getLogger(__name__)

#: JAX's monitoring event for one XLA backend compile (jax._src.dispatch.BACKEND_COMPILE_EVENT).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@dataclass(frozen=True, slots=True)
class CompileCounts:
    """Compiles seen since `install()`: all of them, and those outside `expected()`."""

    total: int
    unexpected: int
    seconds: float


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.unexpected = 0
        self.seconds = 0.0
        self.scope = threading.local()
        self.installed = False

    def depth(self) -> int:
        return int(getattr(self.scope, "depth", 0))

    def on_event(self, event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event != BACKEND_COMPILE_EVENT:
            return
        unexpected = self.depth() == 0
        with self.lock:
            self.total += 1
            self.seconds += duration_secs
            if unexpected:
                self.unexpected += 1
        if unexpected:
            log.warning(
                "XLA compiled %s (%.2f s) outside loading and warm-up: a shape or call that "
                "warm-up did not cover",
                kwargs.get("fun_name", "a function"),
                duration_secs,
            )


_COUNTER = _Counter()


def install() -> None:
    """Start counting (idempotent: JAX keeps its listeners for the life of the process)."""
    with _COUNTER.lock:
        if _COUNTER.installed:
            return
        _COUNTER.installed = True
    from jax import monitoring

    monitoring.register_event_duration_secs_listener(_COUNTER.on_event)


@contextlib.contextmanager
def expected() -> Iterator[None]:
    """Compiles on this thread, inside the block, are expected (loading, warm-up)."""
    scope = _COUNTER.scope
    scope.depth = _COUNTER.depth() + 1
    try:
        yield
    finally:
        scope.depth -= 1


def counts() -> CompileCounts:
    """The counts so far (zeros before `install()`)."""
    with _COUNTER.lock:
        return CompileCounts(_COUNTER.total, _COUNTER.unexpected, _COUNTER.seconds)
