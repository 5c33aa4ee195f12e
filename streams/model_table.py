"""The models a worker serves: one `ServedVersion` per model and version, and routing.

Every served version has a batcher of its own (its own prepare, pack and compute stages, and
its own model threads), so a slow or failing model never holds another model's batches.
`ModelTable.resolve` routes a request: ``version`` pins one, otherwise the model's default
answers (the version aliased ``default`` in its manifest, else the newest; see
`models.repository.default_version`). Versions that are loading, warming or failed are listed
(`describe`) but never routed to.

Retiring a version (its folder removed, or a newer one replacing it) takes it out of routing
at once; it finishes what it was given (`ServedVersion.drained`) and is then closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streams.batch_jobs import BatchResult
from streams.batching import MicroBatcher
from streams.errors import UnknownModel
from streams.model_io import InputKind, OutputKind

if TYPE_CHECKING:
    from models.repository import ModelFolder

log = logging.getLogger(__name__)

__all__ = ["ModelTable", "ServedVersion", "State", "VersionStatus"]

State = Literal["loading", "warming", "ready", "draining", "failed"]


@dataclass
class VersionStatus:
    """What `kinfer models` shows of one model version."""

    name: str
    version: str
    state: State
    kind: str = ""
    task: str = ""
    dtype: str = ""
    #: "none" or "int8-weight-only"
    quantization: str = "none"
    device: str = ""
    #: compiled shapes, e.g. "16x128" (rows x tokens) or "64" (rows)
    shapes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    #: why it failed (state "failed")
    reason: str | None = None
    default: bool = False

    def as_json(self) -> dict[str, Any]:
        """The status as a JSON object."""
        doc: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "default": self.default,
            "kind": self.kind,
            "task": self.task,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "device": self.device,
            "shapes": list(self.shapes),
            "aliases": list(self.aliases),
        }
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc


@dataclass(eq=False)
class ServedVersion:
    """One model version being served: its batcher, what it takes and what it answers."""

    name: str
    version: str
    inputs: InputKind
    outputs: OutputKind
    batcher: MicroBatcher
    status: VersionStatus
    #: stops the model's threads (blocking: call off the event loop)
    close_model: Callable[[], None] = lambda: None
    folder: ModelFolder | None = None
    #: requests routed here and not yet finished (`hold` / `release`)
    active: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def key(self) -> tuple[str, str]:
        """(name, version)."""
        return (self.name, self.version)

    def hold(self) -> None:
        """A request was routed here: the version drains only once it is released."""
        self.active += 1
        self._idle.clear()

    def release(self) -> None:
        """A routed request is finished (answered, or given up)."""
        self.active -= 1
        if self.active <= 0:
            self.active = 0
            self._idle.set()

    async def submit(self, payload: Sequence[Any], deadline: float | None) -> BatchResult:
        """Run validated inputs in this version's batches (hold it first)."""
        return await self.batcher.submit(payload, deadline)

    async def drained(self) -> None:
        """Return once nothing submitted to this version is still running."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop the batcher, then the model's threads (off the loop)."""
        await self.batcher.stop()
        await asyncio.to_thread(self.close_model)


class ModelTable:
    """Served versions by model, with each model's default, and the status of the others."""

    def __init__(self) -> None:
        self._serving: dict[tuple[str, str], ServedVersion] = {}
        self._defaults: dict[str, str] = {}
        #: versions not (or no longer) routed to: loading, warming, failed, draining
        self._others: dict[tuple[str, str], VersionStatus] = {}

    # --- routing --------------------------------------------------------------------------
    def resolve(self, name: str, version: str | None) -> ServedVersion:
        """The served version a request for ``name`` (and ``version``) goes to.

        Raises:
            UnknownModel: nothing serves it (the message lists what is served).
        """
        if version is None:
            version = self._defaults.get(name)
        served = self._serving.get((name, version)) if version is not None else None
        if served is None:
            other = self._others.get((name, version)) if version is not None else None
            state = other.state if other is not None and other.state != "draining" else None
            raise UnknownModel(name, version, self.served_versions(), state)
        return served

    def served_versions(self) -> dict[str, list[str]]:
        """Model name -> the versions routed to."""
        out: dict[str, list[str]] = {}
        for name, version in sorted(self._serving):
            out.setdefault(name, []).append(version)
        return out

    def __iter__(self) -> Iterator[ServedVersion]:
        return iter(list(self._serving.values()))

    def __len__(self) -> int:
        return len(self._serving)

    def __contains__(self, key: object) -> bool:
        return key in self._serving

    def default_of(self, name: str) -> str | None:
        """The version a request for ``name`` without a version gets."""
        return self._defaults.get(name)

    # --- changes --------------------------------------------------------------------------
    def add(self, served: ServedVersion) -> None:
        """Route to ``served`` from now on (it is warm); it may become its model's default."""
        self._others.pop(served.key, None)
        served.status.state = "ready"
        self._serving[served.key] = served
        self._elect_defaults()

    def retire(self, key: tuple[str, str]) -> ServedVersion | None:
        """Stop routing to ``key``: it drains what it holds (state "draining")."""
        served = self._serving.pop(key, None)
        if served is not None:
            served.status.state = "draining"
            served.status.default = False
            self._others[key] = served.status
            self._elect_defaults()
        return served

    def set_status(self, status: VersionStatus) -> None:
        """Record a version that is not routed to (loading, warming, failed)."""
        if (status.name, status.version) not in self._serving:
            self._others[(status.name, status.version)] = status

    def forget(self, key: tuple[str, str]) -> None:
        """Drop a version that is gone (unloaded, or a failed folder removed)."""
        self._others.pop(key, None)

    def status_of(self, key: tuple[str, str]) -> VersionStatus | None:
        """The status of a version, served or not."""
        served = self._serving.get(key)
        return served.status if served is not None else self._others.get(key)

    def describe(self) -> list[VersionStatus]:
        """Every version known, served or not, by name and version."""
        statuses = {key: served.status for key, served in self._serving.items()}
        for key, status in self._others.items():
            statuses.setdefault(key, status)
        return [statuses[key] for key in sorted(statuses)]

    def _elect_defaults(self) -> None:
        from models.repository import version_order

        by_name: dict[str, list[ServedVersion]] = {}
        for served in self._serving.values():
            by_name.setdefault(served.name, []).append(served)
        defaults: dict[str, str] = {}
        for name, versions in by_name.items():
            aliased = [v for v in versions if "default" in v.status.aliases]
            pick = max(aliased or versions, key=lambda v: version_order(v.version))
            defaults[name] = pick.version
            for served in versions:
                served.status.default = served is pick
        changed = {n: v for n, v in defaults.items() if self._defaults.get(n) != v}
        self._defaults = defaults
        for name, version in changed.items():
            log.info("requests for %s without a version now go to version %s", name, version)

    # --- health ---------------------------------------------------------------------------
    def failure(self) -> str | None:
        """Why a served version cannot serve any more (a systemic model failure), or None."""
        for served in self._serving.values():
            if served.batcher.failure is not None:
                return f"{served.name} {served.version}: {served.batcher.failure}"
        return None

    def stalled_s(self) -> float:
        """How long the oldest model call now running, in any version, has run."""
        return max((served.batcher.stalled_s() for served in self._serving.values()), default=0.0)

    async def close(self) -> None:
        """Close every served version (a stopping worker)."""
        for key in list(self._serving):
            served = self._serving.pop(key)
            with contextlib.suppress(Exception):
                await served.close()

    @staticmethod
    def served_summary(table: Mapping[str, Sequence[str]]) -> str:
        """``minilm 0.1.0, 0.1.0-bf16; digits 1``: for log lines."""
        return "; ".join(f"{name} {', '.join(versions)}" for name, versions in table.items())
