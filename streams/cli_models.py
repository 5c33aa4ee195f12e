"""``kinfer models`` (list, reload) and ``kinfer eval``: the model platform's commands."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from streams.settings import Settings

__all__ = ["evaluate", "models"]

_WORKER_HELP = (
    "The worker's web address (default: http://KINFER_WEB_HOST:KINFER_WEB_PORT, "
    "i.e. http://127.0.0.1:6066)."
)


def _worker_url(settings: Settings, worker: str | None) -> str:
    return (worker or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")


def _call_worker(url: str, *, post: bool = False, timeout_s: float = 3.0) -> Any:
    request = urllib.request.Request(
        url, method="POST" if post else "GET", data=b"" if post else None
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


@click.group(name="models", invoke_without_command=True)
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model repository folder (KINFER_MODEL_REPOSITORY; default: the shipped models).",
)
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of every file.")
@click.option("--worker", help=_WORKER_HELP)
@click.pass_context
def models(
    context: click.Context, repository: Path | None, no_verify: bool, worker: str | None
) -> None:
    """List every model and version, with its state on the running worker.

    With a worker running (its web port answers), each version it knows is listed with its
    state (loading, warming, ready, draining, or failed and why), device, dtype and compiled
    shapes, the default version of each model marked. Otherwise the repository is read
    offline: each folder <name>/<version>/manifest.toml is checked (its files' sha256 too),
    and a bad folder is listed as failed, naming the file, never hiding the others. Exits 1
    when a version failed.
    """
    if context.invoked_subcommand is not None:
        return
    settings = Settings()
    url = _worker_url(settings, worker)
    if repository is None:
        try:
            live = _call_worker(f"{url}/models")
        except (urllib.error.URLError, OSError, ValueError):
            click.echo(f"no worker answers at {url}: reading the repository instead")
        else:
            sys.exit(_print_live(url, live["models"]))
    sys.exit(_print_repository(settings, repository, no_verify))


def _print_live(url: str, statuses: list[dict[str, Any]]) -> int:
    click.echo(f"worker {url}")
    failed = 0
    for status in statuses:
        default = " (default)" if status.get("default") else ""
        quantized = status.get("quantization", "none")
        dtype = status["dtype"] + ("" if quantized == "none" else f" {quantized}")
        line = f"  {status['name']} {status['version']}{default}: {status['state']}"
        if status["state"] == "failed":
            failed += 1
            line += f": {status.get('reason', '?')}"
        else:
            shapes = ", ".join(status.get("shapes", [])) or "none yet"
            line += f", {status['kind']}, {status.get('device') or '?'}, {dtype}, shapes {shapes}"
        click.echo(line)
    return 1 if failed else 0


def _print_repository(settings: Settings, repository: Path | None, no_verify: bool) -> int:
    from models.repository import SHIPPED_REPOSITORY, default_version, scan

    root = repository or Path(settings.model_repository or SHIPPED_REPOSITORY)
    found, problems = scan(root, verify=not no_verify)
    click.echo(f"repository {root}")
    defaults = {
        folder.key
        for name in {f.manifest.name for f in found}
        if (folder := default_version(found, name)) is not None
    }
    for folder in found:
        manifest = folder.manifest
        others = [alias for alias in manifest.aliases if alias != "default"]
        aliases = f" (alias {', '.join(others)})" if others else ""
        default = " (default)" if folder.key in defaults else ""
        buckets = manifest.buckets
        shapes = f"batch {list(buckets.batch or settings.batch_buckets)}"
        if manifest.inputs.type == "text":
            shapes += f" x seq {list(buckets.seq or settings.seq_buckets)}"
        quantized = "" if manifest.quantization == "none" else f" {manifest.quantization}"
        click.echo(
            f"  {manifest.name} {manifest.version}{aliases}{default}: {manifest.kind}, "
            f"{manifest.task}, {manifest.dtype}{quantized}, {shapes}: valid"
        )
    for problem in problems:
        click.echo(f"  {problem.folder}: failed: {problem.error.reason} ({problem.error.path})")
    return 1 if problems else 0


@models.command(name="reload")
@click.option("--worker", help=_WORKER_HELP)
def reload(worker: str | None) -> None:
    """Make the running worker reconcile its repository now (hot swap).

    New version folders are loaded and warmed beside the running ones, then take their
    model's traffic; removed ones drain, then unload. Prints what changed; exits 1 when a
    version failed to load (the old one keeps serving).
    """
    url = _worker_url(Settings(), worker)
    try:
        report = _call_worker(f"{url}/models/reload", post=True, timeout_s=600.0)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"no worker answers at {url}: {exc}") from None
    for what in ("loaded", "retired"):
        click.echo(f"{what}: {', '.join(report[what]) or 'nothing'}")
    for version, reason in report["failed"].items():
        click.echo(f"failed: {version}: {reason}")
    serving = "; ".join(f"{n} {', '.join(v)}" for n, v in report["serving"].items())
    click.echo(f"serving: {serving}")
    if report["failed"]:
        sys.exit(1)


@models.command(name="add")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--name", required=True, help="Model name requests will use, e.g. my-encoder.")
@click.option("--version", "version", required=True, help="Version, e.g. 1 (never reused).")
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    help="Repository to add it to (default: KINFER_MODEL_REPOSITORY).",
)
@click.option("--alias", "aliases", multiple=True, help="Alias, e.g. --alias default.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Compute dtype of this version.",
)
def add(
    folder: Path,
    name: str,
    version: str,
    repository: Path | None,
    aliases: tuple[str, ...],
    dtype: str,
) -> None:
    """Add the BERT-family encoder in FOLDER (Hugging Face layout) as a repository version.

    Reads the folder as a worker will (shape, pooling, normalisation, input length; a refusal
    names the file) and writes <repository>/<name>/<version>/manifest.toml, pointing at
    FOLDER (nothing is copied) with the sha256 of every file it reads. A running worker on
    that repository loads it within KINFER_MODEL_WATCH_INTERVAL_S (or at once with `kinfer
    models reload`).
    """
    from models.errors import ModelError
    from models.manifest_writer import add_encoder

    settings = Settings()
    root = repository or (Path(settings.model_repository) if settings.model_repository else None)
    if root is None:
        raise click.ClickException(
            "give --repository or set KINFER_MODEL_REPOSITORY (your own folder; the shipped "
            "catalog is kinfer's)"
        )
    try:
        path = add_encoder(folder, root, name=name, version=version, aliases=aliases, dtype=dtype)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path}")


@click.command(name="eval")
@click.argument("model")
@click.option("--version", help="The version to evaluate (default: the model's default).")
@click.option("--broker", "broker_url", help="Broker URL, e.g. kafka://127.0.0.1:9092.")
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    help="Repository holding the served version, for the offline check (classifiers).",
)
@click.option(
    "--fixture",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Encoders: the parity fixture (default: tests/fixtures/<model>_parity.json).",
)
@click.option(
    "--min-cosine",
    default=0.99,
    show_default=True,
    help="Encoders: fail when a served embedding's cosine to the fixture is lower.",
)
@click.option("--timeout", "timeout_s", default=120.0, show_default=True, help="Seconds to wait.")
def evaluate(
    model: str,
    version: str | None,
    broker_url: str | None,
    repository: Path | None,
    fixture: Path | None,
    min_cosine: float,
    timeout_s: float,
) -> None:
    """Evaluate a served MODEL through Kafka, against the running workers.

    A classifier (digits): its held-out test split is sent through the request topic; prints
    accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix, then runs the
    same version here and exits 1 if any prediction differs. A sentence encoder: its parity
    fixture's texts are sent; prints the cosine of the served embeddings to the fixture's (min,
    mean) and exits 1 under --min-cosine.
    """
    from streams.client import InferenceClient
    from streams.evaluate import EvalError, evaluate_classifier, evaluate_encoder
    from streams.security import SecurityError, kafka_security

    settings = Settings(broker_url=broker_url) if broker_url else Settings()
    reply_topic = settings.response_topic

    async def run() -> tuple[str, bool]:
        async with InferenceClient(
            settings.bootstrap_servers,
            settings.request_topic,
            reply_topic,
            security=kafka_security(settings),
        ) as client:
            if model == "digits":
                report = await evaluate_classifier(
                    client,
                    model,
                    version=version,
                    repository=repository or _repository(settings),
                    timeout_s=timeout_s,
                )
                return report.render(), not report.mismatches
            encoder = await evaluate_encoder(
                client,
                model,
                version=version,
                fixture=fixture,
                min_cosine=min_cosine,
                timeout_s=timeout_s,
            )
            return encoder.render(), encoder.passed

    try:
        text, passed = asyncio.run(run())
    except (EvalError, SecurityError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text)
    if not passed:
        sys.exit(1)


def _repository(settings: Settings) -> Path | None:
    return Path(settings.model_repository) if settings.model_repository else None
