"""The Open Inference Protocol over HTTP (aiohttp): health, metadata, infer.

| method and path | answer |
|---|---|
| ``GET /v2/health/live`` | 200 while the process runs |
| ``GET /v2/health/ready`` | 200 once Kafka's producer and reply reader are started, else 503 |
| ``GET /v2`` | server metadata: name, version, extensions |
| ``GET /v2/models/{name}[/versions/{version}]`` | model metadata: versions, platform, tensors |
| ``GET /v2/models/{name}[/versions/{version}]/ready`` | 200 ready, 503 not ready, 404 unknown |
| ``POST /v2/models/{name}[/versions/{version}]/infer`` | infer (`streams.gateway.rest_codec`) |

Every error is ``{"error": "<message>"}`` with the status of `streams.gateway.errors`. The two
health endpoints need no token (they are the orchestrator's probes); with a token file
(`streams.gateway.auth`) every other endpoint needs ``Authorization: Bearer <token>``, and a
model's endpoints a token allowed to use that model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from streams.gateway.auth import Access
from streams.gateway.errors import BodyTooLarge, GatewayError, NotReady, Unauthenticated
from streams.gateway.observe import NO_OBSERVER, Endpoint, RequestObserver
from streams.gateway.rest_codec import HEADER_LENGTH, decode_infer, encode_infer
from streams.gateway.service import InferenceGateway

__all__ = ["create_app"]

log = logging.getLogger(__name__)

GATEWAY: web.AppKey[InferenceGateway] = web.AppKey("gateway", InferenceGateway)
ACCESS: web.AppKey[Access] = web.AppKey("access", Access)
OBSERVER: web.AppKey[RequestObserver] = web.AppKey("observer", RequestObserver)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body_bytes", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def _error(exc: GatewayError) -> web.Response:
    response = _json(exc.body(), exc.http_status)
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="kinfer"'
    return response


def _version(request: web.Request) -> str | None:
    return request.match_info.get("version")


def _authorise(request: web.Request, model: str | None) -> None:
    request.app[ACCESS].check(request.headers.get("Authorization"), model)


async def live(request: web.Request) -> web.Response:
    return _json({"live": request.app[GATEWAY].live})


async def ready(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    if not gateway.ready:
        reason = "stopping" if gateway.stopping else "not connected to Kafka (yet)"
        return _json({"ready": False, "error": f"not ready: {reason}"}, 503)
    return _json({"ready": True})


async def server_metadata(request: web.Request) -> web.Response:
    _authorise(request, None)
    return _json(request.app[GATEWAY].server_metadata())


async def model_metadata(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    _authorise(request, name)
    return _json(request.app[GATEWAY].model_metadata(name, _version(request)))


async def model_ready(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    _authorise(request, name)
    if not request.app[GATEWAY].model_ready(name, _version(request)):
        raise NotReady(f"model {name!r} is not ready: the gateway is not connected to Kafka")
    return _json({"name": name, "ready": True})


async def infer(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    _authorise(request, name)  # before reading a body nobody may send
    request.app[GATEWAY].resolve(name, _version(request))  # 404 before a body is judged
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(request.app[MAX_BODY]) from None
    parsed, binary_default = decode_infer(
        body, request.headers.get(HEADER_LENGTH), name, _version(request)
    )
    answer = await request.app[GATEWAY].infer(parsed)
    payload, header_length = encode_infer(answer, parsed.outputs, binary_default)
    if header_length is None:
        return web.Response(body=payload, content_type="application/json")
    response = web.Response(body=payload, content_type="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(header_length)
    return response


_ENDPOINTS: dict[Handler, Endpoint] = {
    live: "health_live",
    ready: "health_ready",
    server_metadata: "server_metadata",
    model_metadata: "model_metadata",
    model_ready: "model_ready",
    infer: "infer",
}


@web.middleware
async def _answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as ``{"error": ...}`` with its status; every request told to the observer."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except GatewayError as exc:
        response = _error(exc)
    except web.HTTPRequestEntityTooLarge:
        response = _error(BodyTooLarge(request.app[MAX_BODY]))
    except web.HTTPException as exc:  # no such route, method not allowed
        message = f"{exc.reason}: {request.method} {request.path}"
        response = _json({"error": message[:300]}, exc.status)
    except Exception:
        log.exception("gateway request %s %s failed", request.method, request.path)
        response = _json({"error": "internal error of the gateway (its log has the details)"}, 500)
    route_handler = request.match_info.handler
    request.app[OBSERVER].request_done(
        protocol="http",
        endpoint=_ENDPOINTS.get(route_handler, "other"),
        model=request.match_info.get("name"),
        status=str(response.status),
        seconds=time.perf_counter() - started,
    )
    return response


def create_app(
    gateway: InferenceGateway,
    access: Access,
    *,
    max_body_bytes: int,
    observer: RequestObserver = NO_OBSERVER,
) -> web.Application:
    """The aiohttp application serving ``gateway``."""
    app = web.Application(middlewares=[_answer_errors], client_max_size=max_body_bytes)
    app[GATEWAY] = gateway
    app[ACCESS] = access
    app[OBSERVER] = observer
    app[MAX_BODY] = max_body_bytes
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2", server_metadata)
    for base in (model, versioned):
        app.router.add_get(base, model_metadata)
        app.router.add_get(f"{base}/ready", model_ready)
        app.router.add_post(f"{base}/infer", infer)
    return app
