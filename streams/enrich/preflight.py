"""Whether the worker will serve each route's model, read from the model repository's manifests
before anything is loaded (so a typo fails in a second, not after the warm-up)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streams.enrich.route import EnrichRoute, RouteError

if TYPE_CHECKING:
    from streams.settings import Settings

__all__ = ["check_models"]

#: What each manifest task answers (`streams.model_io` output kinds).
_OUTPUT_KINDS = {"sentence-embedding": "embedding", "image-classification": "classification"}


def check_models(settings: Settings, routes: Sequence[EnrichRoute]) -> None:
    """Raise RouteError for a route whose model or pinned version this worker will not serve,
    or whose options that model cannot honour (``encoding`` base64 for a classifier)."""
    if not routes:
        return
    if settings.model_dir is not None or settings.bench_zero_cost != "off":
        for route in routes:  # one text model, under KINFER_MODEL
            if route.model != settings.model:
                raise RouteError(
                    f"route {route.name}: the model {route.model!r} is not served here; this "
                    f"worker serves only {settings.model!r} (KINFER_MODEL_DIR)"
                )
        return
    from models.repository import SHIPPED_REPOSITORY, scan

    repository = Path(settings.model_repository or SHIPPED_REPOSITORY)
    folders, _ = scan(repository, verify=False)
    wanted = settings.models
    tasks = {
        folder.key: folder.manifest.task
        for folder in folders
        if not wanted or folder.key[0] in wanted or ":".join(folder.key) in wanted
    }
    for route in routes:
        versions = sorted(version for name, version in tasks if name == route.model)
        if not versions:
            served = ", ".join(sorted({name for name, _ in tasks})) or "nothing"
            narrowed = f" (KINFER_MODELS={','.join(wanted)})" if wanted else ""
            raise RouteError(
                f"route {route.name}: the model {route.model!r} is not served by this worker"
                f"{narrowed}; it serves {served} from {repository}"
            )
        if route.version is not None and route.version not in versions:
            raise RouteError(
                f"route {route.name}: {route.model!r} has no version {route.version!r} here; "
                f"its versions: {', '.join(versions)}"
            )
        pinned = versions if route.version is None else [route.version]
        kinds = {_OUTPUT_KINDS.get(tasks[(route.model, v)], "") for v in pinned}
        if route.encoding != "float" and kinds != {"embedding"}:
            raise RouteError(
                f"route {route.name}: encoding {route.encoding!r} applies to embeddings; "
                f"{route.model!r} answers {', '.join(sorted(kinds))}"
            )
