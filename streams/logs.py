"""Logging for kinfer's processes: text or JSON lines, request ids, quiet frameworks, a banner.

``KINFER_LOG_FORMAT=text`` (the default) writes
``[time] [component pid] [LEVEL] message`` lines; ``json`` writes one JSON object per line with
``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``component``, ``pid``, the
``request_id`` of the request the line is about, ``exception`` (its traceback) and any fields a
line adds (``extra={"fields": {...}}``). Every line logged while the pipeline handles a request
carries its id: `REQUEST_ID` is set for the handling task (``extra={"request_id": ...}``
overrides it).

Below ``-l debug``, the frameworks' own start-up and rebalance chatter stays out: INFO lines of
Faust, mode and aiokafka (their service tree's ``[^Worker]: Starting...``, subscription tables,
group joins) and JAX's ``Unable to initialize backend 'tpu'``. Their warnings and errors
always pass. kinfer says what matters itself: the start-up `banner`, the partitions it was
assigned, a graceful stop.
"""

from __future__ import annotations

import contextvars
import datetime
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from streams.model_table import VersionStatus
    from streams.settings import Settings

__all__ = [
    "REQUEST_ID",
    "FrameworkChatter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "banner",
    "device_kind",
    "setup_logging",
]

LogFormat = Literal["text", "json"]

#: the id of the request the current task handles (None: no request, or one without an id)
REQUEST_ID: contextvars.ContextVar[Any] = contextvars.ContextVar("kinfer_request_id", default=None)

#: loggers whose INFO lines are start-up and rebalance chatter
FRAMEWORK_LOGGERS = ("faust", "mode", "aiokafka")
#: mode's service tree prefixes its lines so (``[^Worker]``, ``[^--Producer]``), in any logger
SERVICE_TREE_PREFIX = "[^"
#: JAX's INFO line for each backend it probes and does not find
JAX_BACKEND_LOGGER = "jax._src.xla_bridge"
JAX_BACKEND_PROBE = "Unable to initialize backend"


def _request_id(record: logging.LogRecord) -> Any:
    explicit = getattr(record, "request_id", None)
    return explicit if explicit is not None else REQUEST_ID.get()


class FrameworkChatter(logging.Filter):
    """Drops the frameworks' INFO chatter (see the module docstring); keeps their warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        name = record.name
        if name.split(".", 1)[0] in FRAMEWORK_LOGGERS:
            return False
        if name == JAX_BACKEND_LOGGER and str(record.msg).startswith(JAX_BACKEND_PROBE):
            return False
        return not str(record.msg).startswith(SERVICE_TREE_PREFIX)


class TextFormatter(logging.Formatter):
    """``[time] [component pid] [LEVEL] message [request_id=...]``."""

    def __init__(self, component: str) -> None:
        super().__init__(f"[%(asctime)s] [{component} %(process)d] [%(levelname)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = _request_id(record)
        if request_id is None:
            return line
        head, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{head} [request_id={request_id!r}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        doc: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "component": self.component,
            "pid": record.process,
        }
        request_id = _request_id(record)
        if request_id is not None:
            doc["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return orjson.dumps(doc, default=repr).decode()


def setup_logging(
    log_format: LogFormat,
    loglevel: str = "info",
    *,
    component: str = "kinfer",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log line to ``stream`` (stdout) in ``log_format``; returns the handler.

    Replaces the root logger's handlers. Below DEBUG the frameworks' chatter is filtered out.
    """
    level = logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {loglevel!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(
        JsonFormatter(component) if log_format == "json" else TextFormatter(component)
    )
    if level > logging.DEBUG:
        handler.addFilter(FrameworkChatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def device_kind(device: str) -> str:
    """``CPU``, ``GPU`` or ``TPU`` for a JAX device name (``cpu``, ``cuda:0``, ``tpu:0``)."""
    platform = device.split(":", 1)[0].lower()
    if platform in {"cuda", "rocm", "gpu"}:
        return "GPU"
    if platform == "tpu":
        return "TPU"
    return platform.upper() or "unknown"


def banner(settings: Settings, versions: Sequence[VersionStatus]) -> tuple[str, dict[str, Any]]:
    """The start-up banner: its text and the same as fields (for JSON lines)."""
    devices = sorted({f"{device_kind(v.device)} ({v.device})" for v in versions if v.device})
    dtypes = sorted({v.dtype for v in versions if v.dtype})
    buckets = (
        f"batch {_ints(settings.batch_buckets)} x seq {_ints(settings.seq_buckets)}; "
        f"batches of at most {settings.max_batch} inputs or {settings.max_batch_tokens} "
        f"tokens, {settings.max_wait_ms:g} ms wait"
    )
    models = [_describe(v) for v in versions]
    lines = [
        f"kinfer worker (pid {os.getpid()}), group {settings.app_id!r}",
        f"  broker   {settings.bootstrap_servers} ({settings.security_protocol})",
        f"  topics   requests {settings.request_topic!r} ({settings.partitions} partitions "
        f"when created), answers {settings.response_topic!r}, dead letters "
        f"{settings.dead_letter_topic!r}",
        *(f"  {'models' if i == 0 else '':8} {line}" for i, line in enumerate(models or ["none"])),
        f"  buckets  {buckets} (a manifest's own buckets win for its version)",
        f"  device   {', '.join(devices) or 'unknown'}; dtype {', '.join(dtypes) or 'unknown'}",
        f"  web      http://{settings.web_host}:{settings.web_port} "
        "(/live /ready /metrics /models)",
    ]
    fields = {
        "broker": settings.bootstrap_servers,
        "topics": {
            "requests": settings.request_topic,
            "answers": settings.response_topic,
            "dead_letters": settings.dead_letter_topic,
        },
        "models": [v.as_json() for v in versions],
        "buckets": {"batch": list(settings.batch_buckets), "seq": list(settings.seq_buckets)},
        "devices": devices,
        "dtypes": dtypes,
    }
    return "\n".join(lines), fields


def _ints(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in values)


def _describe(status: VersionStatus) -> str:
    default = " (default)" if status.default else ""
    where = f" on {device_kind(status.device)}" if status.device else ""
    dtype = f", {status.dtype}" if status.dtype else ""
    shapes = f", shapes {' '.join(status.shapes)}" if status.shapes else ""
    return f"{status.name} {status.version}{default}: {status.state}{where}{dtype}{shapes}"
