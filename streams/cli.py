"""The ``kinfer`` command: run the whole thing, or its pieces (broker, worker, infer, kcat).

Every option falls back on a ``KINFER_*`` setting (see ``kinfer settings``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import click
import orjson
from pydantic import ValidationError

from streams.backfill.command import backfill
from streams.enrich.command import enrich
from streams.settings import Settings

DEFAULT_PORT = 9092
#: `kinfer infer --encoding` choices: streams.wire_encoding.ENCODINGS, here without importing numpy.
INFER_ENCODINGS = ("float", "base64")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"KINFER_{'_'.join(map(str, e['loc'])).upper() or 'SETTINGS'}: {e['msg']}"
            for e in exc.errors()
        )
        raise click.ClickException(f"invalid settings: {problems}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """kinfer: Kafka-native inference with micro-batched, jitted JAX/Flax models.

    \b
    Quick start (embedded broker + worker serving all-MiniLM-L6-v2):
      kinfer run
    then, in another terminal:
      kinfer infer "a sentence to embed"

    Settings come from KINFER_* environment variables; `kinfer settings` lists them.
    """


@main.command()
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Broker port.")
@click.option("-l", "--loglevel", default="info", show_default=True, help="Worker log level.")
@click.option(
    "--gateway/--no-gateway",
    default=True,
    show_default=True,
    help="Also run `kinfer gateway` (HTTP and gRPC, KINFER_GATEWAY_HTTP_PORT/GRPC_PORT).",
)
def run(port: int, loglevel: str, gateway: bool) -> None:
    """Start the embedded Tansu broker on 127.0.0.1, a worker serving the model and the gateway.

    Creates the topics, warms the model up, then prints how to send a request with kcat,
    `kinfer infer` or curl (the Open Inference Protocol gateway, `kinfer gateway`, on
    127.0.0.1:8000 and :8001). Ctrl-C stops the gateway, the worker (after answering what it
    started) and the broker.
    """
    from streams.broker import BrokerError, EmbeddedBroker
    from streams.gateway.process import GatewayProcess, gateway_example

    _settings()  # refuse bad settings before starting anything
    broker = EmbeddedBroker(port, silent=True)
    try:
        broker.start()
    except BrokerError as exc:
        raise click.ClickException(f"{exc} (choose another with --port)") from exc
    os.environ["KINFER_BROKER_URL"] = broker.url
    settings = _settings(broker_url=broker.url)
    click.echo(f"embedded Tansu broker on {broker.bootstrap} (pid {broker.pid}); memory storage")
    http_port, grpc_port = settings.gateway_http_port, settings.gateway_grpc_port
    child = GatewayProcess(http_port, grpc_port) if gateway else None
    example = _example(settings)
    if child is not None:
        child.start()
        example += gateway_example(settings.gateway_host, http_port, grpc_port)
    try:
        _run_worker(settings, loglevel, on_ready=lambda: click.echo(example))
    finally:
        if child is not None:
            child.stop()
        broker.stop()
        click.echo("broker stopped")


@main.command()
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Broker port.")
def broker(port: int) -> None:
    """Run the embedded Tansu broker (memory storage) on 127.0.0.1 until Ctrl-C."""
    import signal
    import threading

    from streams.broker import EmbeddedBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port) as embedded:
        click.echo(f"Tansu broker ready on {embedded.bootstrap} (pid {embedded.pid}); Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


@main.command()
@click.option("--broker", "broker_url", help="Broker URL, e.g. kafka://127.0.0.1:9092.")
@click.option("--web-port", type=int, help="Port of /live and /ready (KINFER_WEB_PORT).")
@click.option("-l", "--loglevel", default="info", show_default=True, help="Log level.")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    help="Worker processes to start on this host (KINFER_PROCESSES, default 1).",
)
def worker(
    broker_url: str | None, web_port: int | None, loglevel: str, processes: int | None
) -> None:
    """Run a worker: consume requests, batch them through the model, publish answers.

    Equivalent to `faust -A streams.app worker`. Start several for more partitions' worth of
    throughput: they share the work as one consumer group (give each its own --web-port).

    --processes N (N > 1) starts N worker processes in one consumer group on this host, the
    i-th serving /live, /ready and /metrics on web port + i, and supervises them: SIGTERM or
    Ctrl-C stops them all gracefully (each answers and commits what it started; killed past
    KINFER_SHUTDOWN_TIMEOUT_S + 15 s, exit 70); if one dies, the others are stopped and the
    command exits non-zero (nothing is restarted: leave that to systemd or Kubernetes). Give the
    request topic at least N partitions. N = 1 runs the worker in this process.

    On a GPU: one process moves a few thousand messages/s (JSON, tokenising and Kafka I/O are
    Python work), while the GPU embeds hundreds of thousands of sentences/s, so several
    processes feed one GPU. Every worker process sets XLA_PYTHON_CLIENT_PREALLOCATE=false
    unless it is set (JAX would take 75% of the GPU's memory in each process);
    KINFER_GPU_MEMORY_FRACTION caps each process's share (XLA_CLIENT_MEM_FRACTION). E.g.:

    \b
      KINFER_DTYPE=bfloat16 KINFER_BATCH_BUCKETS=64,256,1024 KINFER_MAX_BATCH=1024 \\
      KINFER_CALL_COST_ROWS=256 KINFER_MAX_IN_FLIGHT=8192 KINFER_GPU_MEMORY_FRACTION=0.2 \\
      kinfer worker --processes 4
    """
    settings = _settings(broker_url=broker_url, web_port=web_port, processes=processes)
    if settings.processes == 1:
        _run_worker(settings, loglevel)
        return
    sys.exit(_supervise_workers(settings, loglevel))


@main.command()
@click.option("--broker", "broker_url", help="Broker URL, e.g. kafka://127.0.0.1:9092.")
@click.option("--host", help="Address to listen on (KINFER_GATEWAY_HOST, default 127.0.0.1).")
@click.option(
    "--http-port", type=click.IntRange(1, 65535), help="HTTP port (KINFER_GATEWAY_HTTP_PORT, 8000)."
)
@click.option(
    "--grpc-port", type=click.IntRange(1, 65535), help="gRPC port (KINFER_GATEWAY_GRPC_PORT, 8001)."
)
@click.option("-l", "--loglevel", default="info", show_default=True, help="Log level.")
def gateway(
    broker_url: str | None,
    host: str | None,
    http_port: int | None,
    grpc_port: int | None,
    loglevel: str,
) -> None:
    """Serve the Open Inference Protocol v2 (KServe v2, as Triton speaks it) on HTTP and gRPC.

    Each infer call becomes one request on the request topic, answered by the workers on
    KINFER_GATEWAY_REPLY_TOPIC: the same contract and workers as every Kafka client. Bound to
    127.0.0.1 unless told otherwise; any other address needs bearer tokens
    (KINFER_GATEWAY_TOKENS_FILE) or KINFER_GATEWAY_ALLOW_UNAUTHENTICATED=true. SIGTERM or
    Ctrl-C answers the calls in flight (up to 5 s) and stops. See README, "HTTP and gRPC".
    """
    from streams.gateway.auth import TokenFileError
    from streams.gateway.server import GatewayConfigError, run_gateway
    from streams.security import SecurityError

    settings = _settings(
        broker_url=broker_url,
        gateway_host=host,
        gateway_http_port=http_port,
        gateway_grpc_port=grpc_port,
    )
    if not logging.getLogger().handlers:
        from streams.logs import setup_logging

        setup_logging(settings.log_format, loglevel, component="kinfer gateway")
    try:
        run_gateway(
            settings,
            host=settings.gateway_host,
            http_port=settings.gateway_http_port,
            grpc_port=settings.gateway_grpc_port,
        )
    except (GatewayConfigError, TokenFileError, SecurityError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--broker", "broker_url", help="Broker URL, e.g. kafka://127.0.0.1:9092.")
@click.option("--model", default="minilm", show_default=True, help="Model name.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--encoding",
    type=click.Choice(INFER_ENCODINGS),
    default=INFER_ENCODINGS[0],
    show_default=True,
    help="How the answer's rows are written: JSON numbers, or base64 of little-endian float32.",
)
def infer(
    texts: tuple[str, ...], broker_url: str | None, model: str, timeout_s: float, encoding: str
) -> None:
    """Send TEXTS as one request and print the answer as JSON (exit 1 for an error answer)."""
    from aiokafka.errors import KafkaError

    from streams.errors import KinferError
    from streams.sdk import infer_sync
    from streams.wire_encoding import Encoding

    settings = _settings(broker_url=broker_url)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the error below says it once
    try:
        answer = infer_sync(
            settings.bootstrap_servers,
            settings.request_topic,
            settings.response_topic,
            list(texts),
            model=model,
            timeout_s=timeout_s,
            encoding=cast(Encoding, encoding),
            security=_security(settings),
        )
    except KinferError as exc:  # security, a missing topic, no answer in time
        raise click.ClickException(str(exc)) from None
    except KafkaError as exc:  # the broker cannot be reached
        raise click.ClickException(f"Kafka at {settings.bootstrap_servers}: {exc}") from None
    click.echo(orjson.dumps(answer).decode())
    if "error" in answer:
        sys.exit(1)


main.add_command(backfill)
main.add_command(enrich)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--broker", "broker_url", help="Broker URL, e.g. kafka://127.0.0.1:9092.")
def kcat(args: tuple[str, ...], broker_url: str | None) -> None:
    """Run Debian's kcat against the broker with the librdkafka 2.16 that Tansu needs.

    Arguments after `--` go to kcat; `-b` is added from the settings, and so are TLS and SASL
    (KINFER_SECURITY_PROTOCOL...), as a `-F` configuration read from a pipe: no secret on
    kcat's command line.
    """
    from streams.kcat import kcat_env, require_kcat, security_args

    settings = _settings(broker_url=broker_url)
    env = kcat_env(Path(tempfile.gettempdir()) / "kinfer-kcat")
    binary = str(require_kcat())
    extra, fd = security_args(_security(settings))
    if fd is not None:
        os.set_inheritable(fd, True)  # kcat reads it as /dev/fd/N after the exec
    os.execve(binary, [binary, *extra, "-b", settings.bootstrap_servers, *args], env)


@main.command(name="settings")
def show_settings() -> None:
    """List every KINFER_* setting, its current value and what it does."""
    from pydantic import SecretStr

    current = Settings()
    for name, field in Settings.model_fields.items():
        value = getattr(current, name)
        if isinstance(value, SecretStr):  # a secret is never printed: only whether it is set
            value = "*** (set)" if value.get_secret_value() else None
        click.echo(f"KINFER_{name.upper()}={value if value is not None else ''}")
        click.echo(f"    {field.description}")


def _security(settings: Settings) -> Any:
    """``streams.security.kafka_security(settings)``; a click error for a file it cannot read."""
    from streams.security import SecurityError, kafka_security

    try:
        return kafka_security(settings)
    except SecurityError as exc:
        raise click.ClickException(str(exc)) from None


def _run_worker(settings: Settings, loglevel: str, on_ready: Any = None) -> None:
    from streams.processes import apply_accelerator_env

    apply_accelerator_env(settings)  # before anything imports JAX
    import faust

    from streams.app import create_app

    class Worker(faust.Worker):
        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            if on_ready is not None:
                on_ready()

    from streams.logs import setup_logging

    _security(settings)  # a missing TLS file or password file: a clear error, no traceback
    if settings.enrich_routes:  # a missing source or model: a clear error, before any warm-up
        from streams.enrich.command import check_routes_first

        check_routes_first(settings)
    # our handler, format and filters (KINFER_LOG_FORMAT), before JAX or Faust log anything
    setup_logging(settings.log_format, loglevel, component="kinfer worker")
    app = create_app(settings)
    logging.getLogger("faust").setLevel(loglevel.upper())
    worker = Worker(app, loglevel=loglevel, redirect_stdouts=False, override_logging=False)
    worker.spinner = None  # it would print " OK ^" on start-up
    worker.execute_from_commandline()


def _supervise_workers(settings: Settings, loglevel: str) -> int:
    """``settings.processes`` child workers under a Supervisor; its exit code."""
    from streams.app import SHUTDOWN_GRACE_S
    from streams.processes import Supervisor, child_envs, worker_command

    if not logging.getLogger().handlers:
        from streams.logs import setup_logging

        setup_logging(settings.log_format, loglevel, component="kinfer supervisor")
    try:
        envs = child_envs(settings, settings.processes)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    supervisor = Supervisor(
        [worker_command(loglevel)] * settings.processes,
        envs,
        # a child's own stop is bounded by shutdown_timeout_s + SHUTDOWN_GRACE_S (then exit 70)
        stop_timeout_s=settings.shutdown_timeout_s + SHUTDOWN_GRACE_S + 5.0,
    )
    return supervisor.run()


def _example(settings: Settings) -> str:
    from streams.kcat import kcat_env

    workdir = Path(tempfile.gettempdir()) / "kinfer-kcat"
    try:
        lib = kcat_env(workdir)["LD_LIBRARY_PATH"].split(os.pathsep)[0]
    except FileNotFoundError:  # no bundled librdkafka: plain kcat works against Apache Kafka
        lib = str(workdir / "lib")
    request = orjson.dumps({"id": "hello-1", "model": "minilm", "inputs": ["Kafka meets JAX"]})
    return f"""
kinfer is ready: requests on '{settings.request_topic}', answers on '{settings.response_topic}'.

Send a request and read its answer with kcat (librdkafka 2.16 from the confluent-kafka wheel):
  kinfer kcat -- -P -t {settings.request_topic} -k user-1 -H x-request-id=hello-1 \\
      <<< {shlex.quote(request.decode())}
  kinfer kcat -- -C -t {settings.response_topic} -o -1 -e -f '%k %h %s\\n'
or with plain kcat: LD_LIBRARY_PATH={lib} kcat -b {settings.bootstrap_servers} ...
or in one step:
  kinfer infer "Kafka meets JAX"
Every model and version of the repository is served (`kinfer models` lists them):
  kinfer eval digits        # the digit classifier's test split through Kafka
Ctrl-C stops the worker and the broker.
"""


def _register_model_commands() -> None:
    from streams.cli_models import evaluate, models

    main.add_command(models)
    main.add_command(evaluate)


_register_model_commands()

if __name__ == "__main__":
    main()
