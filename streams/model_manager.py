"""Loading the repository's models into a worker, and swapping versions while it serves.

`ModelManager.reconcile()` brings the served versions in line with the repository
(``KINFER_MODEL_REPOSITORY``, narrowed by ``KINFER_MODELS``):

- A version folder that is not served yet is loaded and warmed up beside the running ones
  (states "loading", then "warming"), then routed to: when it becomes its model's default
  (aliased ``default``, else the newest), requests without a version go to it from then on.
- A served version whose folder is gone is retired: it leaves routing at once, finishes
  what it holds ("draining"), then is unloaded.
- A folder that fails (a bad manifest, a missing file, a sha256 mismatch, weights that do not
  fit, a warm-up error) is listed as "failed" with the reason, naming the file; what was
  serving keeps serving. It is tried again once its manifest changes.

Versions are immutable: a served folder whose files change is not reloaded (give the change
a new version). The worker reconciles at start-up, every ``KINFER_MODEL_WATCH_INTERVAL_S``, on
SIGHUP, and on ``POST /models/reload`` (``kinfer models reload``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.compiles import expected as expected_compiles
from streams.batching import MicroBatcher
from streams.contract import Limits
from streams.errors import KinferError
from streams.model_io import (
    ClassificationOutputs,
    EmbeddingOutputs,
    ImageInputs,
    TextInputs,
)
from streams.model_table import ModelTable, ServedVersion, State, VersionStatus
from streams.observe import BatchObserver
from streams.serving import ServedClassifier, ServedRunner, load_runner, runner_config
from streams.settings import Settings

if TYPE_CHECKING:
    from models.repository import ModelFolder

log = logging.getLogger(__name__)

__all__ = ["ModelManager", "NothingToServe", "ReloadReport", "request_limits"]


class NothingToServe(KinferError):
    """The worker has no model it can serve (every folder failed, or none was selected)."""


@dataclass
class ReloadReport:
    """What one reconcile changed."""

    loaded: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    serving: dict[str, list[str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON object."""
        return {
            "loaded": self.loaded,
            "retired": self.retired,
            "failed": self.failed,
            "serving": self.serving,
        }


def request_limits(settings: Settings) -> Limits:
    """The request size limits of ``settings``."""
    return Limits(
        max_message_bytes=settings.max_message_bytes,
        max_inputs=settings.max_inputs_per_request,
        max_input_chars=settings.max_input_chars,
    )


class ModelManager:
    """Loads, swaps and unloads the served versions of a worker's `ModelTable`."""

    def __init__(self, settings: Settings, table: ModelTable) -> None:
        self.settings = settings
        self.table = table
        self._lock = asyncio.Lock()
        #: (name, version) -> the manifest's mtime when it last failed (retried once it changes)
        self._failed: dict[tuple[str, str], float] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._background: asyncio.Task[None] | None = None
        #: (name, version) -> the observer of that version's batches (the metrics set it)
        self.batch_observer: Callable[[str, str], BatchObserver] | None = None

    @property
    def repository(self) -> Path:
        """The repository folder served."""
        from models.repository import SHIPPED_REPOSITORY

        return Path(self.settings.model_repository or SHIPPED_REPOSITORY)

    @property
    def uses_repository(self) -> bool:
        """False when the worker serves ``KINFER_MODEL_DIR`` or the bench double instead."""
        return self.settings.model_dir is None and self.settings.bench_zero_cost == "off"

    # --- start-up -------------------------------------------------------------------------
    async def load_initial(self) -> ReloadReport:
        """Load each selected model's default version before the worker joins its group.

        The other versions load in the background once this returns (listed as "loading"
        or "warming" until they are ready), so a worker serving many versions is ready as
        soon as every model can answer.

        Raises:
            NothingToServe: no version could be served (the reasons are in the message).
        """
        if not self.uses_repository:
            return self.serve_model(await asyncio.to_thread(load_runner, self.settings))
        report = await self.reconcile(defaults_only=True)
        if not len(self.table):
            report = await self.reconcile()  # every default failed: try the others now
        if not len(self.table):
            reasons = "; ".join(f"{key}: {why}" for key, why in report.failed.items())
            raise NothingToServe(
                f"no model of {self.repository} can be served"
                + (
                    f" (KINFER_MODELS={','.join(self.settings.models)})"
                    if self.settings.models
                    else ""
                )
                + (f": {reasons}" if reasons else ": the repository has no model folder")
            )
        self._background = asyncio.create_task(self._load_the_rest(), name="kinfer-models-rest")
        return report

    async def _load_the_rest(self) -> None:
        try:
            await self.reconcile()
        except Exception:
            log.exception("loading the remaining model versions failed")

    def serve_model(self, model: Any) -> ReloadReport:
        """Serve a warm text model outside the repository (``KINFER_MODEL_DIR``, tests).

        ``model`` is a `BatchModel` with ``name`` and ``version`` (and ``close()``).
        """
        self._route(self._wrap_runner(model, None))
        return ReloadReport(loaded=[f"{model.name} {model.version}"])

    # --- reconcile ------------------------------------------------------------------------
    async def reconcile(self, *, defaults_only: bool = False) -> ReloadReport:
        """Load new folders, retire removed ones (see the module docstring).

        ``defaults_only`` loads only each model's default version (start-up) and retires
        nothing.
        """
        from models.repository import scan

        report = ReloadReport()
        if not self.uses_repository:
            report.serving = self.table.served_versions()
            return report
        async with self._lock:
            folders, problems = await asyncio.to_thread(scan, self.repository, verify=False)
            wanted = {folder.key: folder for folder in folders if self._selected(*folder.key)}
            to_load = wanted
            if defaults_only:
                to_load = {key: wanted[key] for key in _default_keys(list(wanted.values()))}
            else:
                for key, folder in wanted.items():  # listed as waiting their turn
                    if key not in self.table and self._failed.get(key) != _mtime(folder):
                        self.table.set_status(_status_of(folder, "loading"))
            for problem in problems:
                key = (problem.folder.parent.name, problem.folder.name)
                if self._selected(*key) and key not in self.table:
                    reason = problem.error.reason + f" ({problem.error.path})"
                    report.failed[f"{key[0]} {key[1]}"] = reason
                    self.table.set_status(VersionStatus(*key, state="failed", reason=reason))
            for key, folder in to_load.items():
                if key in self.table or self._failed.get(key) == _mtime(folder):
                    continue
                error = await self._load(folder)
                if error is None:
                    report.loaded.append(f"{key[0]} {key[1]}")
                else:
                    report.failed[f"{key[0]} {key[1]}"] = error
            failed_dirs = {(p.folder.parent.name, p.folder.name) for p in problems}
            for served in [] if defaults_only else list(self.table):
                if served.folder is not None and served.key not in wanted:
                    self._retire(served.key)
                    report.retired.append(f"{served.name} {served.version}")
            for status in self.table.describe():
                key = (status.name, status.version)
                if status.state == "failed" and key not in wanted and key not in failed_dirs:
                    self.table.forget(key)  # a failed folder that was removed
                    self._failed.pop(key, None)
        report.serving = self.table.served_versions()
        if report.loaded or report.retired or report.failed:
            log.info(
                "models: loaded %s, retired %s, failed %s; serving %s",
                report.loaded or "none",
                report.retired or "none",
                report.failed or "none",
                ModelTable.served_summary(report.serving),
            )
        return report

    async def watch(self, interval_s: float) -> None:
        """Reconcile every ``interval_s`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reconcile()
            except Exception:  # the next round tries again
                log.exception("reconciling the model repository failed")

    def _selected(self, name: str, version: str) -> bool:
        wanted = self.settings.models
        if not wanted:
            return True
        return name in wanted or f"{name}:{version}" in wanted

    async def _load(self, folder: ModelFolder) -> str | None:
        """Load, warm and route ``folder``; the reason it failed, or None."""
        key = folder.key
        status = _status_of(folder, "loading")
        self.table.set_status(status)
        started = time.perf_counter()
        try:
            served = await asyncio.to_thread(self._build, folder, status)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.error("model %s %s failed to load: %s", *key, reason)
            status.state, status.reason = "failed", reason
            self._failed[key] = _mtime(folder)
            return reason
        self._failed.pop(key, None)
        self._route(served)
        log.info(
            "model %s %s ready in %.1fs on %s (%s; shapes %s)",
            *key,
            time.perf_counter() - started,
            status.device,
            status.dtype,
            ", ".join(status.shapes),
        )
        return None

    @expected_compiles()  # loading and warm-up compile; nothing else may (models/compiles.py)
    def _build(self, folder: ModelFolder, status: VersionStatus) -> ServedVersion:
        """Build and warm ``folder``'s model (blocking, off the loop)."""
        from models import deployment
        from models.runner import ModelRunner

        explicit = self.settings.model_fields_set & {"batch_buckets", "seq_buckets"}
        model = deployment.build(
            folder,
            runner_config(self.settings),  # type: ignore[arg-type]
            explicit=explicit,
        )
        status.state = "warming"
        status.device = deployment.device_name()
        try:
            model.warm_up()
        except BaseException:
            if isinstance(model, ModelRunner):
                model.close()
            raise
        if isinstance(model, ModelRunner):
            status.dtype = model.config.dtype
            return self._wrap_runner(ServedRunner(model), folder, status)
        status.shapes = tuple(str(bucket) for bucket in sorted(model.compiled_buckets))
        classifier = ServedClassifier(model)
        classes = folder.manifest.outputs.classes or model.num_classes
        return ServedVersion(
            name=folder.manifest.name,
            version=folder.manifest.version,
            inputs=ImageInputs(),
            outputs=ClassificationOutputs(classes),
            batcher=self._batcher(classifier),
            status=status,
            close_model=classifier.close,
            folder=folder,
        )

    def _wrap_runner(
        self, runner: Any, folder: ModelFolder | None, status: VersionStatus | None = None
    ) -> ServedVersion:
        """A served text model around ``runner`` (a `ServedRunner`, or any text BatchModel)."""
        if status is None:
            from models import deployment

            status = VersionStatus(
                runner.name,
                runner.version,
                state="ready",
                kind="bert-encoder",
                task="sentence-embedding",
                dtype=self.settings.dtype,
                device=deployment.device_name(),
            )
        shapes = getattr(runner, "compiled_shapes", None)
        status.shapes = shapes() if shapes is not None else ()
        seq_buckets = getattr(runner, "seq_buckets", self.settings.seq_buckets)
        return ServedVersion(
            name=runner.name,
            version=runner.version,
            inputs=TextInputs(max(seq_buckets)),
            outputs=EmbeddingOutputs(),
            batcher=self._batcher(runner),
            status=status,
            close_model=getattr(runner, "close", lambda: None),
            folder=folder,
        )

    def _batcher(self, model: Any) -> MicroBatcher:
        settings = self.settings
        return MicroBatcher(
            model,
            max_batch=settings.max_batch,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000.0,
        )

    def _route(self, served: ServedVersion) -> None:
        """Start the version's batcher (on the loop) and route requests to it."""
        if self.batch_observer is not None:
            served.batcher.observer = self.batch_observer(served.name, served.version)
        served.batcher.start()
        self.table.add(served)

    # --- unloading ------------------------------------------------------------------------
    def _retire(self, key: tuple[str, str]) -> None:
        served = self.table.retire(key)
        if served is None:
            return
        log.info("model %s %s retired: it drains, then unloads", *key)
        task = asyncio.create_task(self._unload_when_drained(served), name=f"drain-{key}")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _unload_when_drained(self, served: ServedVersion) -> None:
        await served.drained()
        await served.close()
        self.table.forget(served.key)
        log.info("model %s %s unloaded", served.name, served.version)

    async def close(self) -> None:
        """Stop loading and draining tasks, close every served version (a stopping worker)."""
        for task in [self._background, *self._draining]:
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.table.close()


def _default_keys(folders: list[ModelFolder]) -> set[tuple[str, str]]:
    """(name, version) of each model's default version among ``folders``."""
    from models.repository import default_version

    keys = set()
    for name in {folder.manifest.name for folder in folders}:
        chosen = default_version(folders, name)
        if chosen is not None:
            keys.add(chosen.key)
    return keys


def _status_of(folder: ModelFolder, state: State) -> VersionStatus:
    manifest = folder.manifest
    return VersionStatus(
        manifest.name,
        manifest.version,
        state=state,
        kind=manifest.kind,
        task=manifest.task,
        dtype=manifest.dtype,
        quantization=manifest.quantization,
        aliases=tuple(manifest.aliases),
    )


def _mtime(folder: ModelFolder) -> float:
    try:
        return folder.manifest_path.stat().st_mtime
    except OSError:
        return 0.0
